"""GSM8K as PostTrainBench scores it: inspect-evals' `gsm8k` task, with an exact, signed, last-number scorer."""

from __future__ import annotations

import contextlib
import importlib
import re
from pathlib import Path
from typing import Any, Iterator

from tasks.base import BenchmarkTask, GenerationSettings, InputError, TrainingExample, read_jsonl
from tasks.scoring import exact_last_number

HUB_DATASET = "openai/gsm8k"
HUB_REVISION = "cc7b047b6e5bb11b4f1af84efc572db110a51b3c"
CANONICAL_MAX_TOKENS = 4000  # PostTrainBench's final evaluation
CPU_MAX_TOKENS = 256  # embedded CPU profile: a 135M model on 2 cores cannot afford 4000; scores are then not canonical
ANSWER_LINE = re.compile(r"(?:^|\n)ANSWER: *(-?[\d,]*\.?\d+)\s*$")
CALCULATOR_NOTE = re.compile(r"<<[^<>]*>>")


class GSM8K(BenchmarkTask):
    name = "gsm8k"
    description = "Grade-school math word problems; the score is exact match of the final number."
    answer_line_hint = 'the reasoning, then a last line of the form "ANSWER: <number>"'

    def load_rows(self, split: str) -> list[dict[str, Any]]:
        if self.data_dir is not None:
            return _read_local(self.data_dir, split)
        from datasets import load_dataset  # heavy; only on the hub path

        return list(load_dataset(HUB_DATASET, "main", split=split, revision=HUB_REVISION))

    def inspect_task(self):
        if getattr(self, "_task", None) is None:
            self._task = self._build_inspect_task()
        return self._task

    def _build_inspect_task(self):
        from inspect_ai import task_with
        upstream = importlib.import_module("inspect_evals.gsm8k.gsm8k")

        with _local_datasets(upstream, self.data_dir):
            task = upstream.gsm8k()
        return task_with(task, scorer=exact_last_number())

    def generation(self, on_gpu: bool) -> GenerationSettings:
        if on_gpu:
            return GenerationSettings(max_tokens=CANONICAL_MAX_TOKENS)
        return GenerationSettings(max_tokens=CPU_MAX_TOKENS, greedy=True, canonical=False)

    def training_example(self, row: dict[str, Any], *, with_system: bool, strip_annotations: bool,
                         rewrite: bool = True) -> TrainingExample:
        from inspect_evals.gsm8k.gsm8k import record_to_sample

        sample = record_to_sample(row)
        messages = self.eval_messages(sample.input)
        if not with_system:
            messages = [m for m in messages if m["role"] != "system"]
        reasoning = sample.metadata["reasoning"]
        if strip_annotations:
            reasoning = CALCULATOR_NOTE.sub("", reasoning)
        # The same shape as the task's own few-shot answers: reasoning, blank line, answer line.
        response = f"{reasoning}\n\nANSWER: {sample.target}" if rewrite else row["answer"]
        return TrainingExample(messages, response, str(sample.id), str(sample.input))

    def answer_ok(self, response: str) -> bool:
        return bool(ANSWER_LINE.search(response))

    def test_texts(self) -> dict[str, str]:
        from inspect_evals.gsm8k.gsm8k import record_to_sample

        out = {}
        for row in self.load_rows("test"):
            s = record_to_sample(row)
            out[str(s.id)] = f"{s.input}\n{row['answer']}"
        return out


def _read_local(data_dir: Path, split: str) -> list[dict[str, Any]]:
    return read_jsonl(data_dir / "gsm8k" / f"{split}.jsonl", required=("question", "answer"))


@contextlib.contextmanager
def _local_datasets(upstream: Any, data_dir: Path | None) -> Iterator[None]:
    """Let inspect-evals' own task code read the local JSONL files instead of the hub.

    It goes through inspect-ai's `hf_dataset` with the same shuffle, seed and limit, so the few-shot
    examples are the ones the hub path picks (HF `Dataset.shuffle`, not Python's `random`).
    """
    if data_dir is None:
        yield
        return
    from inspect_ai.dataset import hf_dataset

    def local_hf_dataset(path: str, split: str, **kwargs: Any):
        if path != HUB_DATASET:
            raise InputError(f"gsm8k task asked for unexpected dataset {path!r}")
        for key in ("data_dir", "revision", "name"):
            kwargs.pop(key, None)
        file = data_dir / "gsm8k" / f"{split}.jsonl"
        _read_local(data_dir, split)  # strict check first: a clear error beats a datasets traceback
        return hf_dataset("json", data_files=str(file), split="train", **kwargs)

    original = upstream.hf_dataset
    upstream.hf_dataset = local_hf_dataset
    try:
        yield
    finally:
        upstream.hf_dataset = original
