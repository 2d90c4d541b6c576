"""A tiny benchmark written in code: two-number additions, answered "ANSWER: <n>". It exercises the task interface
with no data folder, no hub and no model."""

from __future__ import annotations

import re
from typing import Any

from core.handoffs import DataKnobs
from tasks.base import BenchmarkTask, MaxTokens, TrainingExample

ANSWER = re.compile(r"ANSWER: *(-?\d+)\s*$")
TEST = [{"id": f"t{i}", "q": f"What is {i} plus {i + 7}?", "a": str(2 * i + 7)} for i in range(40)]
TRAIN = [{"id": f"r{i}", "q": f"What is {i} plus {i + 100}?", "a": str(2 * i + 100)} for i in range(60)]


class Toy(BenchmarkTask):
    name = "toy"
    description = "Additions of two numbers."
    answer_line_hint = 'a last line "ANSWER: <number>"'
    max_tokens = MaxTokens(canonical=64, cascade=(32,), cpu=16)
    construction_options = {"shout": (False, "Write the question in capitals.")}
    train_source = "the toy's own train rows"

    def __init__(self, data_dir=None, *, judge=None, train_file=None, train=None, test=None):
        super().__init__(data_dir, judge=judge, train_file=train_file)
        self.train, self.test = train if train is not None else TRAIN, test if test is not None else TEST

    def load_test(self) -> list[dict[str, Any]]:
        return self.test

    def load_train(self) -> list[dict[str, Any]]:
        return self.train

    def test_row_problem(self, row: dict[str, Any]) -> str | None:
        return None if isinstance(row.get("a"), str) else "the answer must be a string"

    def row_ok(self, row: dict[str, Any]) -> bool:
        return bool(row.get("q")) and bool(row.get("a"))

    def dedup_text(self, row: dict[str, Any]) -> str:
        return row.get("q", "")

    def training_example(self, row: dict[str, Any], knobs: DataKnobs) -> TrainingExample:
        question = row["q"].upper() if self.option(knobs, "shout") else row["q"]
        response = f"{row['a']}\n\nANSWER: {row['a']}" if knobs.rewrite_answers else row["a"]
        return TrainingExample(self.prompt_messages(question), response, row["id"], row["q"])

    def test_texts(self) -> dict[str, str]:
        return {r["id"]: f"{r['q']}\n{r['a']}" for r in self.test}

    def inspect_task(self):
        from inspect_ai import Task
        from inspect_ai.dataset import MemoryDataset, Sample
        from inspect_ai.scorer import match
        from inspect_ai.solver import generate, prompt_template, system_message

        if not hasattr(self, "_task"):
            self._task = Task(
                dataset=MemoryDataset([Sample(id=r["id"], input=r["q"], target=r["a"]) for r in self.test]),
                solver=[system_message("You add numbers."), prompt_template("Q: {prompt}\nA:"), generate()],
                scorer=match(numeric=True),
            )
        return self._task

    def answer_ok(self, response: str) -> bool:
        return bool(ANSWER.search(response))
