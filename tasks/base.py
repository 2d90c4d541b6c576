"""The interface every benchmark implements. Nothing outside `tasks/` knows which benchmark it is working on: the
roles and tools ask the task for its data, its prompts, its answer format, its evaluation and its wording.
"""

from __future__ import annotations

import contextlib
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from core.errors import InputError

if TYPE_CHECKING:
    import inspect_ai
    from inspect_ai.dataset import Sample
    from inspect_ai.solver import Solver

    from core.handoffs import DataKnobs

__all__ = ["BenchmarkTask", "GenerationSettings", "InputError", "MaxTokens", "TrainingExample", "graded_from",
           "read_jsonl", "sample_floor"]


@dataclass(frozen=True)
class MaxTokens:
    """A benchmark's generation budget as PostTrainBench runs it: the default, then lower ones the final evaluation
    retries with when an attempt fails; and the cap of the CPU profile (scores under it are not canonical)."""

    canonical: int
    cascade: tuple[int, ...]
    cpu: int


class GenerationSettings(BaseModel):
    """Generation settings belong to the task, never to an agent: no role can change them (hard rule)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_tokens: int
    greedy: bool = False
    """Greedy decoding (the CPU profile, for comparable scores between iterations); otherwise the provider's
    defaults, as PostTrainBench runs them."""
    canonical: bool = True
    """False when a CPU profile caps max_tokens below the benchmark's own; such scores are not canonical."""
    cascade: tuple[int, ...] = ()
    """Lower max_tokens the final evaluation falls back to, in order, when an attempt fails."""


@dataclass(frozen=True)
class TrainingExample:
    """One supervised example, as the model will see it at evaluation time."""

    messages: list[dict[str, str]]
    """Chat messages up to and including the user turn (the evaluation's system message when asked for)."""
    response: str
    source_id: str
    input_text: str
    """The row's own input (e.g. the question), as the source holds it: with `response`, what decontamination
    reads (never our rendering, whose fixed instruction text every row shares)."""
    tools: list[dict[str, Any]] | None = None
    """Tool definitions the evaluation renders into this prompt (function-calling benchmarks), as JSON schemas."""

    @property
    def decontam_text(self) -> str:
        return f"{self.input_text}\n{self.response}"


SAMPLE_PLACEHOLDER = "<<SAMPLE INPUT>>"


def sample_floor(benchmark_size: int, full_size: int | None = None) -> int:
    """The fewest samples any comparison may use: max(32, ceil(5% of the benchmark)); for a benchmark whose whole
    published test set is smaller than that (AIME 2025 has 30 problems), all of it."""
    floor = max(32, math.ceil(0.05 * benchmark_size))
    return min(floor, full_size) if full_size is not None else floor


def mean_and_stderr(values: list[float]) -> tuple[float, float]:
    """The mean of per-sample scores and its standard error (sample standard deviation over sqrt(n)), as inspect's
    accuracy() and stderr() compute them."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, (var / n) ** 0.5


def read_jsonl(path: Path, required: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Read a JSONL file strictly; a malformed line is an `InputError` naming the file and line."""
    if not path.is_file():
        raise InputError(f"data file not found: {path}")
    rows = []
    try:
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
    except UnicodeDecodeError as e:
        raise InputError(f"{path} is not UTF-8 text (byte {e.start}: {e.reason})") from None
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}") from None
    if not rows:
        raise InputError(f"no rows in {path}")
    return rows


@contextlib.contextmanager
def hub_from_files(module: Any, dataset: str, file_for: Callable[[str], Path],
                   required: tuple[str, ...] = ()) -> Iterator[None]:
    """While open, inspect-evals' own task code in `module` reads `file_for(split)`, a JSONL in the hub's schema
    (checked strictly first: a clear error beats a datasets traceback), instead of `dataset` on the hub. It goes
    through inspect-ai's own `hf_dataset` with the task's shuffle, seed and limit, so the samples, their order and
    any few-shot examples are the ones the hub path gives."""
    from inspect_ai.dataset import hf_dataset

    def local(path: str, split: str, **kwargs: Any):
        if path != dataset:
            raise InputError(f"the task asked for an unexpected dataset {path!r} (expected {dataset!r})")
        for key in ("data_dir", "revision", "name"):
            kwargs.pop(key, None)
        file = file_for(split)
        read_jsonl(file, required=required)
        # cached=False: inspect's cache key holds the file's path, not its content.
        return hf_dataset("json", data_files=str(file), split="train", cached=False, **kwargs)

    original = module.hf_dataset
    module.hf_dataset = local
    try:
        yield
    finally:
        module.hf_dataset = original


def _user(text: str):
    from inspect_ai.model import ChatMessageUser

    return ChatMessageUser(content=text)


def chat_messages(messages: list[dict[str, str]]) -> list[Any]:
    """Chat messages as dicts (role, content), as inspect `ChatMessage`s."""
    from inspect_ai.model import ChatMessageAssistant, ChatMessageSystem, ChatMessageUser

    kinds = {"system": ChatMessageSystem, "user": ChatMessageUser, "assistant": ChatMessageAssistant}
    out = []
    for m in messages:
        if m["role"] not in kinds:
            raise ValueError(f"unexpected chat role {m['role']!r}")
        out.append(kinds[m["role"]](content=m["content"]))
    return out


def graded_from(example: TrainingExample, target: str | list[str], **fields: Any) -> Sample:
    """A sample the canonical scorer grades, from a training example rendered with the evaluation's system message:
    its messages as input, its source id as id, `target` and the scorer's other `fields` (choices, metadata)."""
    from inspect_ai.dataset import Sample

    return Sample(input=chat_messages(example.messages), target=target, id=example.source_id, **fields)


class BenchmarkTask(ABC):
    """A benchmark: its data, its canonical inspect-ai task, its answer format and its generation settings."""

    name: ClassVar[str]
    description: ClassVar[str]
    answer_line_hint: ClassVar[str]
    """How the final answer must appear, in words, for prompts, plans and validation reports."""
    metric: ClassVar[str] = "accuracy"
    """What the score is, in the benchmark's own words (always in [0, 1], higher is better)."""
    eval_modules: ClassVar[tuple[str, ...]] = ()
    """The modules or packages, outside `tasks/`, that this benchmark's evaluation goes through (inspect-evals'
    task package): checksummed at the start of a run with the rest of the evaluation code."""
    max_tokens: ClassVar[MaxTokens]
    train_cutoff: ClassVar[int] = 384
    """Tokens a training row of this benchmark needs (prompt and response): the first plan's cutoff on CPU."""
    construction_options: ClassVar[Mapping[str, tuple[bool, str]]] = {}
    """The benchmark's own construction switches: name → (default, what it does)."""
    train_source: ClassVar[str] = "the benchmark's train split"
    """What `benchmark_train` means for this benchmark, in words."""
    ptb_weight: ClassVar[float | None] = None
    """The benchmark's weight in PostTrainBench's weighted average (v1.2); None: reported apart."""
    free_text_prompts: ClassVar[bool] = False
    """The evaluation's prompt is built from one free-text input (a question), so a generator can write new ones
    (augmentation, synthesis); not for prompts with choices, tools or code stubs."""
    needs_judge: ClassVar[bool] = False
    """Scored by a judge model: a run needs --judge."""
    seeds_always: ClassVar[bool] = False
    """The final evaluation's seed also changes the inputs (a multiple-choice benchmark that shuffles its choices):
    it always takes every seed, greedy decoding or not."""
    full_size: ClassVar[int | None] = None
    """The published test set's size, for a benchmark smaller than the sample floor of 32: comparisons then use
    all of it. A test file smaller than the floor is refused either way."""

    def __init__(self, data_dir: Path | None, *, judge: str | None = None, train_file: Path | None = None):
        self.data_dir = data_dir
        self.judge = judge
        """Backbone spec of the judge model (judged benchmarks)."""
        self.train_file = train_file
        """A local JSONL in the benchmark's raw schema that replaces its default training source."""

    # -- data ----------------------------------------------------------------------------------------------

    @abstractmethod
    def load_test(self) -> list[dict[str, Any]]:
        """The raw test rows, from `data_dir` when given, else from the hub (pinned revision)."""

    @abstractmethod
    def load_train(self) -> list[dict[str, Any]]:
        """The raw rows of the benchmark's own default training source, never the test set. A benchmark that has
        none raises `InputError` saying so (the user then gives --train-file)."""

    def training_rows(self) -> list[dict[str, Any]]:
        """What `benchmark_train` reads: the --train-file when one is given, else the benchmark's own source."""
        return read_jsonl(self.train_file) if self.train_file is not None else self.load_train()

    def test_row_problem(self, row: dict[str, Any]) -> str | None:
        """Why a test row cannot be evaluated (checked for every row at start, so a bad file fails at once)."""
        return None

    def row_ok(self, row: dict[str, Any]) -> bool:
        """Whether a training-source row can become a training example (non-empty input and reference)."""
        return True

    def dedup_text(self, row: dict[str, Any]) -> str:
        """The text two rows must not share to count as different (the row's input)."""
        return json.dumps(row, sort_keys=True)

    @abstractmethod
    def training_example(self, row: dict[str, Any], knobs: DataKnobs) -> TrainingExample:
        """A training-source row rendered in the evaluation's own prompt and (with `knobs.rewrite_answers`) its
        answer format."""

    def example_from_text(self, question: str, response: str, source_id: str, knobs: DataKnobs) -> TrainingExample:
        """A training example from a question and a response written as text (a generator's rows), in the
        evaluation's own prompt. Only for a benchmark whose prompt is built from one free-text input
        (`free_text_prompts`)."""
        if not self.free_text_prompts:
            raise InputError(f"{self.name}'s prompts are not built from free text: no generated rows for it")
        messages = self.prompt_messages(question)
        if not knobs.with_system:
            messages = [m for m in messages if m["role"] != "system"]
        return TrainingExample(messages, response, source_id, question)

    @abstractmethod
    def test_texts(self) -> dict[str, str]:
        """Test text per sample id (the input and the reference answer), for decontamination."""

    def option(self, knobs: DataKnobs, name: str) -> bool:
        return knobs.options.get(name, self.construction_options[name][0])

    # -- evaluation ----------------------------------------------------------------------------------------

    @abstractmethod
    def inspect_task(self) -> inspect_ai.Task:
        """The benchmark's canonical inspect-ai task (its solver unchanged) with the task's final scorer."""

    def graded_sample(self, row: dict[str, Any], knobs: DataKnobs) -> Sample:
        """A training-source row as a sample the canonical scorer grades (self-distillation, DPO): its input the
        evaluation's full chat messages for the row (system message included, as the evaluation shows it), its
        target the reference answer in the form the scorer reads, its id the training example's source id, plus
        whatever else the scorer reads (choices, metadata). A row that cannot be graded is an `InputError`.
        Benchmarks that cannot grade their training rows (judged ones) leave this unimplemented."""
        raise NotImplementedError(f"{self.name} cannot grade its training rows with its own scorer")

    @property
    def grades_training_rows(self) -> bool:
        """Whether `graded_sample` is implemented: self-distillation and DPO are possible."""
        return type(self).graded_sample is not BenchmarkTask.graded_sample

    def graded_solver(self) -> Solver:
        """The solver for a `graded_sample`, whose input is already the rendered prompt: it generates and leaves
        the state as the canonical solver would for the scorer (tools passed, choices marked). By default a bare
        `generate()`."""
        from inspect_ai.solver import generate

        return generate()

    def _graded(self, row: dict[str, Any], knobs: DataKnobs, target: str | list[str], **fields: Any) -> Sample:
        """The `graded_sample` of a row: `training_example`'s messages (with the system message, answers
        rewritten) as input, its source id as id, with `target` and the scorer's other `fields`."""
        example = self.training_example(row, knobs.model_copy(update={"with_system": True,
                                                                       "rewrite_answers": True}))
        return graded_from(example, target, **fields)

    def generation(self, on_gpu: bool) -> GenerationSettings:
        """Generation settings for the evaluation; the CPU profile caps max_tokens (then not canonical)."""
        m = self.max_tokens
        if on_gpu:
            return GenerationSettings(max_tokens=m.canonical, cascade=m.cascade)
        return GenerationSettings(max_tokens=m.cpu, greedy=True, canonical=False)

    @abstractmethod
    def answer_ok(self, response: str) -> bool:
        """Whether a response carries an answer in the form the scorer reads."""

    def failure_label(self, sample: dict[str, Any]) -> tuple[str, str] | None:
        """A benchmark's own label and category for a wrong sample whose output is present, ended normally and
        has an answer in the expected form (None: the generic "answer present but wrong")."""
        return None

    def score_samples(self, scores: list[Any]) -> tuple[float, float]:
        """The benchmark's score from its samples' inspect `Score`s, and its standard error: by default the mean of
        the sample values (samples a benchmark drops, valued NaN, are left out)."""
        values = [v for v in map(self.sample_value, scores) if not math.isnan(v)]
        return mean_and_stderr(values) if values else (0.0, 0.0)

    def sample_value(self, score: Any) -> float:
        """One sample's score as a number (inspect's "C"/"I" letters, or a numeric value); NaN for a sample the
        benchmark's protocol drops (a judge that gave no verdict)."""
        from inspect_ai.scorer import value_to_float

        return float(value_to_float()(score.value))

    def prompt_messages(self, input_text: str) -> list[dict[str, str]]:
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

    def eval_tools(self, n: int) -> list[list[dict[str, Any]] | None]:
        """The tool definitions the evaluation passes with each of its first `n` prompts (None: none)."""
        return [None] * n

    def chat_template(self, model_dir: str) -> str | None:
        """A chat template the benchmark's evaluation renders prompts with instead of the model's own (None: the
        model's). Training rows are rendered with the same one, so they look like what the evaluation shows."""
        return None

    def prompt_skeleton(self, rendered: str, input_text: str) -> str:
        """A rendered prompt with the sample's own input masked: what every prompt of the benchmark shares, so
        that a training prompt can be compared with the evaluation's."""
        return rendered.replace(input_text, SAMPLE_PLACEHOLDER)

    def _prompt_solvers(self) -> list[Any]:
        """The canonical task's solvers before generation: they shape the model-facing prompt. A task whose
        solver is a bare `generate()` has none."""
        if not hasattr(self, "_solvers"):
            solver = self.inspect_task().solver
            steps = list(solver) if hasattr(solver, "__iter__") else [solver]
            cut = next((i for i, s in enumerate(steps) if "generate" in getattr(s, "__qualname__", "")), len(steps))
            self._solvers = steps[:cut]
        return self._solvers

    def benchmark_size(self) -> int:
        return len(self.load_test())

    def sample_floor(self) -> int:
        return sample_floor(self.benchmark_size(), self.full_size)
