"""AIME 2025 as PostTrainBench scores it: inspect-evals' `aime2025` task (its prompt, its scorer) unchanged.

The scorer reads the last substantive line with inspect's `match_str(numeric=True)`, which in the installed
inspect-ai compares numbers exactly, sign included (the old `endswith` comparison that let 711 pass for 11 is gone;
tests/test_task_aime2025.py pins that). AIME has no training split: the default training source is GSM8K's train
split rewritten into AIME's answer format, which teaches the format (reasoning, then "ANSWER: <n>"), not AIME.
"""

from __future__ import annotations

import contextlib
import importlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.base import BenchmarkTask, InputError, MaxTokens, TrainingExample, hub_from_files, read_jsonl

if TYPE_CHECKING:
    from core.handoffs import DataKnobs

HUB_DATASET = "math-ai/aime25"
HUB_REVISION = "563bb8404243c5f09de6ec262f2db674fe5bce9b"
TRAIN_DATASET = "openai/gsm8k"
TRAIN_REVISION = "cc7b047b6e5bb11b4f1af84efc572db110a51b3c"
# The scorer reads the last substantive line; a training response must end with this one.
ANSWER_LINE = re.compile(r"(?:^|\n)ANSWER: *-?[\d,]*\.?\d+\s*$")
CALCULATOR_NOTE = re.compile(r"<<[^<>]*>>")
NUMBER = re.compile(r"-?[\d,]*\.?\d+")


class AIME2025(BenchmarkTask):
    name = "aime2025"
    description = ("AIME 2025 I and II: 30 competition problems with integer answers from 0 to 999; the score is "
                   "exact match of the final answer.")
    answer_line_hint = 'step-by-step reasoning, then a last line "ANSWER: <integer>" (no \\boxed)'
    free_text_prompts = True
    eval_modules = ("inspect_evals.aime2025", "inspect_evals.utils.aime_common")
    # PostTrainBench: 16000, then 12000 and 8000 on failure. On CPU, 512 new tokens for 30 problems keeps a
    # baseline of the 135M student within minutes on 2 cores (scores are then not canonical).
    max_tokens = MaxTokens(canonical=16000, cascade=(12000, 8000), cpu=512)
    ptb_weight = 0.245  # PostTrainBench v1.2's weight in its average
    train_cutoff = 512
    full_size = 30  # the whole published set is below the floor of 32: comparisons use all of it
    construction_options = {
        "strip_annotations": (True, "Drop the calculator notes (<<48/2=24>>) of GSM8K-style reference solutions."),
    }
    train_source = ("GSM8K's train split (there is no AIME train split), rewritten into AIME's answer format: it "
                    "teaches the format, reasoning then a last line \"ANSWER: <n>\", not competition math")

    # -- data ----------------------------------------------------------------------------------------------

    def load_test(self) -> list[dict[str, Any]]:
        if self.data_dir is not None:
            return _read_test(self.data_dir)
        from datasets import load_dataset  # heavy; only on the hub path

        return list(load_dataset(HUB_DATASET, split="test", revision=HUB_REVISION))

    def load_train(self) -> list[dict[str, Any]]:
        if self.data_dir is not None:
            return read_jsonl(self.data_dir / "gsm8k" / "train.jsonl", required=("question", "answer"))
        from datasets import load_dataset

        return list(load_dataset(TRAIN_DATASET, "main", split="train", revision=TRAIN_REVISION))

    def test_row_problem(self, row: dict[str, Any]) -> str | None:
        if not isinstance(row.get("problem"), str) or not row["problem"].strip():
            return "problem must be a non-empty string"
        if not NUMBER.fullmatch(str(row.get("answer", "")).strip()):
            return f"answer {row.get('answer')!r} is not a number"
        if row.get("id") in (None, ""):
            return "id is missing"
        return None

    def row_ok(self, row: dict[str, Any]) -> bool:
        return _parts(row) is not None

    def dedup_text(self, row: dict[str, Any]) -> str:
        return str(row.get("question") or row.get("problem") or "")

    def training_example(self, row: dict[str, Any], knobs: DataKnobs) -> TrainingExample:
        """Two row schemas: GSM8K's (question, answer ending "#### n"), the default source; and AIME's own
        (problem, answer, optional solution), for a local file of other competition problems."""
        parts = _parts(row)
        if parts is None:
            raise InputError(f"training row {row.get('id', '?')} has neither GSM8K's nor AIME's fields")
        question, reasoning, target, raw = parts
        if self.option(knobs, "strip_annotations"):
            reasoning = CALCULATOR_NOTE.sub("", reasoning)
        if knobs.rewrite_answers:
            response = f"{reasoning}\n\nANSWER: {target}" if reasoning else f"ANSWER: {target}"
        else:
            response = raw
        messages = self.prompt_messages(question)
        if not knobs.with_system:
            messages = [m for m in messages if m["role"] != "system"]
        source_id = str(row.get("id") or _stable_id(question))
        return TrainingExample(messages, response, source_id, question)

    def test_texts(self) -> dict[str, str]:
        return {str(r["id"]): f"{r['problem']}\n{r['answer']}" for r in self.load_test()}

    def graded_sample(self, row: dict[str, Any], knobs: DataKnobs):
        parts = _parts(row)
        if parts is None:
            raise InputError(f"training row {row.get('id', '?')} has neither GSM8K's nor AIME's fields")
        return self._graded(row, knobs, parts[2])

    # -- evaluation ----------------------------------------------------------------------------------------

    def inspect_task(self):
        if getattr(self, "_task", None) is None:
            upstream = importlib.import_module("inspect_evals.aime2025.aime2025")
            with hub_from_files(upstream, HUB_DATASET, lambda split: self.data_dir / self.name / f"{split}.jsonl",
                                ("id", "problem", "answer")) if self.data_dir else contextlib.nullcontext():
                self._task = upstream.aime2025()  # its own solver and scorer, unchanged
        return self._task

    def answer_ok(self, response: str) -> bool:
        return bool(ANSWER_LINE.search(response.rstrip()))


def _parts(row: dict[str, Any]) -> tuple[str, str, str, str] | None:
    """(question, reasoning, target, raw answer text) of a training row in either schema, or None."""
    if isinstance(row.get("question"), str) and isinstance(row.get("answer"), str) and "####" in row["answer"]:
        reasoning, _, target = row["answer"].rpartition("####")
        target = target.strip().replace(",", "")
        if not row["question"].strip() or not NUMBER.fullmatch(target):
            return None
        return row["question"], reasoning.strip(), target, row["answer"]
    if isinstance(row.get("problem"), str) and row["problem"].strip():
        target = str(row.get("answer", "")).strip()
        if not NUMBER.fullmatch(target):
            return None
        solution = row.get("solution")
        reasoning = solution.strip() if isinstance(solution, str) else ""
        raw = f"{reasoning}\n\n{target}" if reasoning else target
        return row["problem"], reasoning, target, raw
    return None


def _stable_id(text: str) -> str:
    from inspect_evals.utils import create_stable_id

    return create_stable_id(text, prefix="train")


def _read_test(data_dir: Path) -> list[dict[str, Any]]:
    return read_jsonl(data_dir / "aime2025" / "test.jsonl", required=("id", "problem", "answer"))
