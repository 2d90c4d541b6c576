"""GSM8K as PostTrainBench scores it: inspect-evals' `gsm8k` task, with an exact, signed, last-number scorer."""

from __future__ import annotations

import contextlib
import importlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.base import BenchmarkTask, MaxTokens, TrainingExample, hub_from_files, read_jsonl
from tasks.scoring import exact_last_number

if TYPE_CHECKING:
    from core.handoffs import DataKnobs

HUB_DATASET = "openai/gsm8k"
HUB_REVISION = "cc7b047b6e5bb11b4f1af84efc572db110a51b3c"
ANSWER_LINE = re.compile(r"(?:^|\n)ANSWER: *(-?[\d,]*\.?\d+)\s*$")
CALCULATOR_NOTE = re.compile(r"<<[^<>]*>>")
NUMBER = re.compile(r"-?[\d,]*\.?\d+")


class GSM8K(BenchmarkTask):
    name = "gsm8k"
    description = "Grade-school math word problems; the score is exact match of the final number."
    answer_line_hint = 'the reasoning, then a last line of the form "ANSWER: <number>"'
    free_text_prompts = True
    eval_modules = ("inspect_evals.gsm8k",)
    # PostTrainBench: 4000, then 3000 and 2000 on failure. The CPU profile's 256 fits a 135M model on 2 cores
    # (scores are then not canonical).
    max_tokens = MaxTokens(canonical=4000, cascade=(3000, 2000), cpu=256)
    ptb_weight = 0.101  # PostTrainBench v1.2's weight in its average
    train_cutoff = 384
    construction_options = {
        "strip_annotations": (True, "Drop the calculator notes (<<48/2=24>>) of the reference solutions: the "
                                    "evaluation's own worked examples never show them."),
    }

    def load_test(self) -> list[dict[str, Any]]:
        return self._rows("test")

    def load_train(self) -> list[dict[str, Any]]:
        return self._rows("train")

    def _rows(self, split: str) -> list[dict[str, Any]]:
        if self.data_dir is not None:
            return _read_local(self.data_dir, split)
        from datasets import load_dataset  # heavy; only on the hub path

        return list(load_dataset(HUB_DATASET, "main", split=split, revision=HUB_REVISION))

    def test_row_problem(self, row: dict[str, Any]) -> str | None:
        answer = row.get("answer")
        if not isinstance(row.get("question"), str) or not isinstance(answer, str):
            return "question and answer must be strings"
        if "####" not in answer or not NUMBER.fullmatch(answer.split("####")[-1].strip()):
            return "the answer does not end with '#### <number>'"
        return None

    def row_ok(self, row: dict[str, Any]) -> bool:
        q, a = row.get("question"), row.get("answer")
        return (isinstance(q, str) and isinstance(a, str) and bool(q.strip()) and "####" in a
                and bool(a.split("####")[-1].strip()))

    def dedup_text(self, row: dict[str, Any]) -> str:
        return str(row.get("question", ""))

    def inspect_task(self):
        if getattr(self, "_task", None) is None:
            self._task = self._build_inspect_task()
        return self._task

    def _build_inspect_task(self):
        from inspect_ai import task_with
        upstream = importlib.import_module("inspect_evals.gsm8k.gsm8k")

        with hub_from_files(upstream, HUB_DATASET, lambda split: self.data_dir / self.name / f"{split}.jsonl",
                            ("question", "answer")) if self.data_dir else contextlib.nullcontext():
            task = upstream.gsm8k()
        return task_with(task, scorer=exact_last_number())

    def training_example(self, row: dict[str, Any], knobs: DataKnobs) -> TrainingExample:
        from inspect_evals.gsm8k.gsm8k import record_to_sample

        sample = record_to_sample(row)
        messages = self.prompt_messages(sample.input)
        if not knobs.with_system:
            messages = [m for m in messages if m["role"] != "system"]
        reasoning = sample.metadata["reasoning"]
        if self.option(knobs, "strip_annotations"):
            reasoning = CALCULATOR_NOTE.sub("", reasoning)
        # The same shape as the task's own few-shot answers: reasoning, blank line, answer line.
        response = f"{reasoning}\n\nANSWER: {sample.target}" if knobs.rewrite_answers else row["answer"]
        return TrainingExample(messages, response, str(sample.id), str(sample.input))

    def graded_sample(self, row: dict[str, Any], knobs: DataKnobs):
        from inspect_evals.gsm8k.gsm8k import record_to_sample

        return self._graded(row, knobs, record_to_sample(row).target)

    def answer_ok(self, response: str) -> bool:
        return bool(ANSWER_LINE.search(response))

    def test_texts(self) -> dict[str, str]:
        from inspect_evals.gsm8k.gsm8k import record_to_sample

        out = {}
        for row in self.load_test():
            s = record_to_sample(row)
            out[str(s.id)] = f"{s.input}\n{row['answer']}"
        return out


def _read_local(data_dir: Path, split: str) -> list[dict[str, Any]]:
    return read_jsonl(data_dir / "gsm8k" / f"{split}.jsonl", required=("question", "answer"))
