"""HealthBench as PostTrainBench scores it: inspect-evals' `healthbench` task (its conversations, its rubric grader
prompt), one judge call per rubric item, no judge system message, and the score clipped to [0, 1].

PostTrainBench grades its own 245-row "Easy" subset with gpt-5-mini; the data here is the full set from the same
source (or any file in its schema given with --data-dir). HealthBench has no training split.
"""

from __future__ import annotations

import importlib
import json
import math
import random
from typing import TYPE_CHECKING, Any

from core.errors import InputError
from tasks.base import SAMPLE_PLACEHOLDER, BenchmarkTask, MaxTokens, TrainingExample, mean_and_stderr, read_jsonl
from tasks.judge import judge_model

if TYPE_CHECKING:
    from core.handoffs import DataKnobs

LOCAL_FILE = "healthbench.jsonl"
BOOTSTRAP = 1000


class HealthBench(BenchmarkTask):
    name = "healthbench"
    description = ("Health conversations graded against physician-written rubrics; the score is the share of rubric "
                   "points earned (clipped to [0, 1]).")
    answer_line_hint = "a helpful, safe reply to the last turn of the conversation"
    metric = "rubric score"
    eval_modules = ("inspect_evals.healthbench",)
    max_tokens = MaxTokens(canonical=16384, cascade=(12288, 8192), cpu=256)
    ptb_weight = 0.199  # PostTrainBench v1.2's weight in its average
    train_cutoff = 1024
    train_source = "none of its own (HealthBench has no training split): give --train-file in its schema"
    needs_judge = True

    def load_test(self) -> list[dict[str, Any]]:
        if self.data_dir is None:
            raise InputError("HealthBench's data comes from --data-dir <dir>/healthbench/healthbench.jsonl here "
                             "(the hub has no copy; the source file is OpenAI's simple-evals healthbench JSONL)")
        return read_jsonl(self.data_dir / self.name / LOCAL_FILE, required=("prompt", "prompt_id", "rubrics"))

    def load_train(self) -> list[dict[str, Any]]:
        raise InputError("healthbench has no training split of its own: give --train-file FILE, a JSONL in "
                         "HealthBench's schema (prompt, prompt_id, rubrics, ideal_completions_data) with rows that "
                         "are not in the test set")

    def test_row_problem(self, row: dict[str, Any]) -> str | None:
        if not isinstance(row.get("prompt"), list) or not row["prompt"]:
            return "prompt must be a non-empty list of chat turns"
        if not isinstance(row.get("rubrics"), list) or not row["rubrics"]:
            return "rubrics must be a non-empty list"
        return None

    def row_ok(self, row: dict[str, Any]) -> bool:
        return bool(row.get("prompt")) and bool(_ideal(row))

    def dedup_text(self, row: dict[str, Any]) -> str:
        return _conversation(row.get("prompt") or [])

    def training_example(self, row: dict[str, Any], knobs: DataKnobs) -> TrainingExample:
        # A sample's input is its whole conversation, which the evaluation sends as it is (no instruction).
        text = json.dumps([{"role": t["role"], "content": t["content"]} for t in row["prompt"]], ensure_ascii=False)
        return TrainingExample(self.prompt_messages(text), _ideal(row), str(row.get("prompt_id")), text)

    def eval_inputs(self, n: int) -> list[str]:
        return [json.dumps([{"role": t["role"], "content": t["content"]} for t in r["prompt"]], ensure_ascii=False)
                for r in self.load_test()[:n]]

    def prompt_messages(self, input_text: str) -> list[dict[str, str]]:
        return [{"role": t["role"], "content": t["content"]} for t in json.loads(input_text)]

    def prompt_skeleton(self, rendered: str, input_text: str) -> str:
        """The chat template around the conversation: everything from the first turn's text to the last's is
        the sample's own (conversations differ in their number of turns)."""
        turns = json.loads(input_text)
        start, end = rendered.find(turns[0]["content"]), rendered.rfind(turns[-1]["content"])
        if start < 0 or end < 0:
            return rendered
        return rendered[:start] + SAMPLE_PLACEHOLDER + rendered[end + len(turns[-1]["content"]):]

    def test_texts(self) -> dict[str, str]:
        return {str(r["prompt_id"]): _conversation(r["prompt"]) for r in self.load_test()}

    def inspect_task(self):
        if getattr(self, "_task", None) is None:
            upstream = importlib.import_module("inspect_evals.healthbench.healthbench")
            path = self.data_dir / self.name / LOCAL_FILE if self.data_dir else None
            # PostTrainBench's grader call has no system message; inspect-evals' default adds one.
            self._task = upstream.healthbench(local_path=str(path) if path else None,
                                              judge_model=judge_model(self.judge), judge_system_message="")
        return self._task

    def answer_ok(self, response: str) -> bool:
        return bool(response.strip())

    def sample_value(self, score: Any) -> float:
        value = score.value
        return float(value["healthbench_score"]) if isinstance(value, dict) else float(value)

    def score_samples(self, scores: list[Any]) -> tuple[float, float]:
        """PostTrainBench's: the mean per-conversation score clipped to [0, 1]; its error is the spread of 1000
        bootstrap means, each clipped too."""
        values = [self.sample_value(s) for s in scores]
        mean, _ = mean_and_stderr(values)
        rng = random.Random(42)
        boots = [_clip(sum(rng.choices(values, k=len(values))) / len(values)) for _ in range(BOOTSTRAP)]
        centre = sum(boots) / len(boots)
        return _clip(mean), math.sqrt(sum((b - centre) ** 2 for b in boots) / (len(boots) - 1))


def _clip(x: float) -> float:
    return min(1.0, max(0.0, x))


def _conversation(turns: list[dict[str, Any]]) -> str:
    return "\n\n".join(f"{t.get('role')}: {t.get('content')}" for t in turns)


def _ideal(row: dict[str, Any]) -> str:
    """A training row's reference reply: the physician-written ideal completion, when the row has one."""
    data = row.get("ideal_completions_data") or {}
    text = data.get("ideal_completion") if isinstance(data, dict) else None
    return text.strip() if isinstance(text, str) else ""

