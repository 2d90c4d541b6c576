"""The interface every benchmark implements. The graph and the roles only ever talk to a `BenchmarkTask`."""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import inspect_ai


class InputError(ValueError):
    """Bad user input (unknown task, missing path, malformed data): reported in one line, exit code 2."""


class GenerationSettings(BaseModel):
    """Generation settings belong to the task, never to an agent: no role can change them (hard rule)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_tokens: int
    greedy: bool = False
    """Greedy decoding (the CPU profile, for comparable scores between iterations); otherwise the provider's
    defaults, as PostTrainBench runs them."""
    canonical: bool = True
    """False when a CPU profile caps max_tokens below the benchmark's own; such scores are not canonical."""


@dataclass(frozen=True)
class TrainingExample:
    """One supervised example, as the model will see it at evaluation time."""

    messages: list[dict[str, str]]
    """Chat messages up to and including the user turn (system few-shot included when asked for)."""
    response: str
    source_id: str
    input_text: str
    """The sample's own input (e.g. the question), as the canonical dataset holds it."""


def sample_floor(benchmark_size: int) -> int:
    """The fewest samples any comparison may use: max(32, ceil(5% of the benchmark)), capped at its size."""
    return min(benchmark_size, max(32, math.ceil(0.05 * benchmark_size)))


def read_jsonl(path: Path, required: tuple[str, ...]) -> list[dict[str, Any]]:
    """Read a JSONL file strictly; a malformed line is an `InputError` naming the file and line."""
    if not path.is_file():
        raise InputError(f"data file not found: {path}")
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"malformed JSON in {path}:{lineno}: {e.msg}") from None
            missing = [k for k in required if not isinstance(row, dict) or k not in row]
            if missing:
                raise InputError(f"{path}:{lineno}: missing field(s) {', '.join(missing)}")
            rows.append(row)
    if not rows:
        raise InputError(f"no rows in {path}")
    return rows


def _user(text: str):
    from inspect_ai.model import ChatMessageUser

    return ChatMessageUser(content=text)


class BenchmarkTask(ABC):
    """A benchmark: its data, its canonical inspect-ai task, its answer format and its generation settings."""

    name: str
    description: str
    answer_line_hint: str
    """How the final answer must appear, in words, for prompts and validation reports."""

    def __init__(self, data_dir: Path | None):
        self.data_dir = data_dir

    @abstractmethod
    def load_rows(self, split: str) -> list[dict[str, Any]]:
        """Raw rows of a split (`train` or `test`), from `data_dir` when given, else from the hub."""

    @abstractmethod
    def inspect_task(self) -> inspect_ai.Task:
        """The benchmark's canonical inspect-ai task (its solver unchanged) with the task's final scorer."""

    @abstractmethod
    def generation(self, on_gpu: bool) -> GenerationSettings:
        """Generation settings for the evaluation; the CPU profile may cap max_tokens (then not canonical)."""

    @abstractmethod
    def training_example(self, row: dict[str, Any], *, with_system: bool, strip_annotations: bool,
                         rewrite: bool = True) -> TrainingExample:
        """A train-split row rendered in the evaluation's own prompt and (when `rewrite`) answer format."""

    @abstractmethod
    def answer_ok(self, response: str) -> bool:
        """Whether a response ends with the answer line the scorer reads."""

    @abstractmethod
    def test_texts(self) -> dict[str, str]:
        """Test-split text per sample id (question and reference answer), for decontamination."""

    def eval_messages(self, input_text: str) -> list[dict[str, str]]:
        """The chat messages the canonical solver sends for one sample input, rendered by that solver itself."""
        import asyncio

        from inspect_ai.model import ModelName
        from inspect_ai.solver import TaskState

        state = TaskState(ModelName("none/none"), "render", 0, input_text, [_user(input_text)])

        async def run() -> TaskState:
            s = state
            for solver in self._prompt_solvers():
                s = await solver(s, None)  # prompt solvers never call generate
            return s

        return [{"role": m.role, "content": m.text} for m in asyncio.run(run()).messages]

    def eval_inputs(self, n: int) -> list[str]:
        """The first `n` test inputs, as the canonical task's dataset holds them."""
        return [str(s.input) for s in self.inspect_task().dataset[:n]]

    def _prompt_solvers(self) -> list[Any]:
        """The canonical task's solvers before generation: they shape the model-facing prompt."""
        if not hasattr(self, "_solvers"):
            steps = list(self.inspect_task().solver)  # a Chain of solvers
            cut = next(i for i, s in enumerate(steps) if "generate" in getattr(s, "__qualname__", ""))
            self._solvers = steps[:cut]
        return self._solvers

    def benchmark_size(self) -> int:
        return len(self.load_rows("test"))

    def sample_floor(self) -> int:
        return sample_floor(self.benchmark_size())
