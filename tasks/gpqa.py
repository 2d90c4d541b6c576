"""GPQA Diamond: inspect-evals' `gpqa_diamond` task (multiple choice with chain of thought, `choice()` scorer).

PostTrainBench scores GPQA *main* with a local copy of the same task (1 epoch, unseeded choice shuffles); the
issue asks for Diamond, so this is inspect-evals' Diamond task, read from a local copy of simple-evals' CSV
(`<data_dir>/gpqa_diamond/gpqa_diamond.csv`; GPQA's authors ask that its rows not be republished, so none ship).
GPQA has no training split: training data comes from --train-file (or a `local:` source) in GPQA's columns.

The evaluation prompt holds the question and its lettered choices, so a sample's "input" here (what alignment
masks and decontamination reads) is the question followed by the choices block, exactly as the prompt shows them.
"""

from __future__ import annotations

import contextlib
import csv
import importlib
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.base import BenchmarkTask, InputError, MaxTokens, TrainingExample

if TYPE_CHECKING:
    from core.handoffs import DataKnobs

LOCAL_FILE = "gpqa_diamond.csv"
ANSWERS = ("Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")
TEST_COLUMNS = ("Question", *ANSWERS, "Record ID", "High-level domain", "Subdomain")
TRAIN_COLUMNS = ("Question", *ANSWERS)
ANSWER_LINE = re.compile(r"(?:^|\n)ANSWER: *[A-Z]\s*$")
# inspect's answer_options: "A) first\nB) second\n..."; the block follows the question after a blank line.
CHOICES_START = "\n\nA) "


class GPQADiamond(BenchmarkTask):
    name = "gpqa_diamond"
    description = ("GPQA Diamond: 198 graduate-level multiple-choice questions in biology, chemistry and physics; "
                   "the score is the share answered with the right letter.")
    answer_line_hint = "step-by-step reasoning, then a last line \"ANSWER: <letter>\" naming one of the choices"
    eval_modules = ("inspect_evals.gpqa",)
    # PostTrainBench: 16000, then 12000 and 8000 on failure; the CPU profile's 512 leaves room for a short chain
    # of thought before the letter (scores are then not canonical).
    max_tokens = MaxTokens(canonical=16000, cascade=(12000, 8000), cpu=512)
    ptb_weight = 0.243  # PostTrainBench v1.2's weight in its average
    seeds_always = True  # PostTrainBench: the seed also shuffles the choices, so GPQA always takes 5
    train_cutoff = 768
    train_source = ("none of its own (GPQA has no training split): give --train-file or a local:<file.jsonl> source "
                    "whose rows have GPQA's columns (Question, Correct Answer, Incorrect Answer 1-3, optional "
                    "Explanation and Record ID)")

    # -- data ----------------------------------------------------------------------------------------------

    def load_test(self) -> list[dict[str, Any]]:
        return _read_csv(self._csv_path(), TEST_COLUMNS)

    def load_train(self) -> list[dict[str, Any]]:
        raise InputError("gpqa_diamond has no training split of its own: give --train-file FILE (or a "
                         "local:<file.jsonl> source), a JSONL whose rows have GPQA's columns: Question, Correct "
                         "Answer, Incorrect Answer 1, Incorrect Answer 2, Incorrect Answer 3, and optionally "
                         "Explanation (the worked reasoning) and Record ID; none of them may be test questions")

    def test_row_problem(self, row: dict[str, Any]) -> str | None:
        return _row_problem(row, TEST_COLUMNS)

    def row_ok(self, row: dict[str, Any]) -> bool:
        return _row_problem(row, TRAIN_COLUMNS) is None

    def dedup_text(self, row: dict[str, Any]) -> str:
        return _text(row.get("Question"))

    def training_example(self, row: dict[str, Any], knobs: DataKnobs) -> TrainingExample:
        question, source_id, choices, letter = _shuffled(row, knobs)
        explanation = _text(row.get("Explanation"))
        if knobs.rewrite_answers:
            response = f"{explanation}\n\nANSWER: {letter}" if explanation else f"ANSWER: {letter}"
        else:  # the source's own form: the reasoning and the answer's text, no letter
            right = choices[ord(letter) - ord("A")]
            response = f"{explanation}\n\n{right}" if explanation else right
        messages = self._render(question, choices)
        text = _join(question, choices)
        return TrainingExample(messages, response, source_id, text)

    def test_texts(self) -> dict[str, str]:
        return {str(r["Record ID"]): f"{r['Question']}\n{r['Correct Answer']}" for r in self.load_test()}

    def graded_sample(self, row: dict[str, Any], knobs: DataKnobs):
        """The choices in `training_example`'s order, the right one's letter as target (inspect's choice())."""
        _, _, choices, letter = _shuffled(row, knobs)
        return self._graded(row, knobs, letter, choices=choices)

    def graded_solver(self):
        """generate(), then what multiple_choice() does after generating: mark the choice the answer names."""
        from inspect_ai.solver import chain, generate, solver
        from inspect_ai.solver._multiple_choice import parse_answers, set_choices_based_on_generated_response

        @solver
        def mark_choices():
            async def solve(state, generate):
                answers = parse_answers(state, multiple_correct=False)
                if answers:
                    set_choices_based_on_generated_response(state=state, answers=answers)
                return state

            return solve

        return chain(generate(), mark_choices())

    # -- evaluation ----------------------------------------------------------------------------------------

    def inspect_task(self):
        if getattr(self, "_task", None) is None:
            from inspect_ai import task_with

            upstream = importlib.import_module("inspect_evals.gpqa.gpqa")
            with _local_csv(upstream, self._csv_path() if self.data_dir is not None else None):
                task = upstream.gpqa_diamond()  # cot=True, choices shuffled with seed 42, scorer choice()
            # One epoch, as PostTrainBench scores GPQA: inspect-evals' default of 4 would repeat every sample, which
            # under the CPU profile's greedy decoding gives 4 identical answers for 4 times the time, and would
            # give each sample id 4 scores where the run's paired comparisons expect one.
            self._task = task_with(task, epochs=1)
        return self._task

    def prompt_messages(self, input_text: str) -> list[dict[str, str]]:
        """The evaluation's messages for a question followed by its choices block (see `eval_inputs`)."""
        question, choices = _split(input_text)
        return self._render(question, choices)

    def eval_inputs(self, n: int) -> list[str]:
        """The first `n` test inputs as the prompt shows them: the question, then its choices (in the canonical
        task's seeded order), which is what differs from one prompt to the next."""
        return [_join(str(s.input), [str(c) for c in (s.choices or [])]) for s in self.inspect_task().dataset[:n]]

    def answer_ok(self, response: str) -> bool:
        return bool(ANSWER_LINE.search(response.rstrip()))

    def _render(self, question: str, choices: list[str]) -> list[dict[str, str]]:
        """The prompt the canonical solver builds, by the solver itself (stopped before the model is called)."""
        import asyncio

        from inspect_ai.model import ChatMessageUser, ModelName
        from inspect_ai.solver import TaskState

        state = TaskState(ModelName("none/none"), "render", 0, question, [ChatMessageUser(content=question)],
                          choices=choices)

        async def no_generate(s: TaskState, **_: Any) -> TaskState:
            return s

        async def run() -> TaskState:
            solver = self.inspect_task().solver
            steps = list(solver) if hasattr(solver, "__iter__") else [solver]
            s = state
            for step in steps:
                s = await step(s, no_generate)
            return s

        return [{"role": m.role, "content": m.text} for m in asyncio.run(run()).messages]

    def _csv_path(self) -> Path:
        if self.data_dir is not None:
            return self.data_dir / self.name / LOCAL_FILE
        upstream = importlib.import_module("inspect_evals.gpqa.gpqa")
        # No local copy: inspect-evals' own download (URL and sha256 pinned there) into its cache.
        from inspect_ai.util import download

        download(upstream.GPQA_DIAMOND_DATASET_URL, upstream.GPQA_DIAMOND_DATASET_SHA256,
                 upstream.GPQA_DIAMOND_CACHE_PATH)
        return Path(upstream.GPQA_DIAMOND_CACHE_PATH)


def _shuffled(row: dict[str, Any], knobs: DataKnobs) -> tuple[str, str, list[str], str]:
    """(question, source id, choices in their shown order, the right choice's letter) of a training row."""
    problem = _row_problem(row, TRAIN_COLUMNS)
    if problem:
        raise InputError(f"training row {row.get('Record ID', '?')}: {problem}")
    question = _text(row["Question"])
    source_id = _text(row.get("Record ID")) or _stable_id(question)
    # The raw rows list the correct answer first; shuffle per row (seeded, order-independent), as the
    # evaluation shuffles its own choices, so the right letter is not always A.
    order = list(range(len(ANSWERS)))
    random.Random(f"{knobs.seed}:{source_id}").shuffle(order)
    choices = [_text(row[ANSWERS[i]]) for i in order]
    return question, source_id, choices, chr(ord("A") + order.index(0))


def _row_problem(row: dict[str, Any], columns: tuple[str, ...]) -> str | None:
    missing = [c for c in columns if not _text(row.get(c))]
    if missing:
        return f"missing or empty column(s): {', '.join(missing)}"
    # Only a training row is refused for repeated answers (its right letter would be ambiguous); the test set is
    # the benchmark's, evaluated as it is.
    if columns == TRAIN_COLUMNS and len({_text(row[c]) for c in ANSWERS}) < len(ANSWERS):
        return "the four answers are not all different"
    return None


def _text(value: Any) -> str:
    """A field as text (a JSONL row may hold a number where the CSV holds its digits); empty when absent."""
    return str(value).strip() if isinstance(value, (str, int, float)) and not isinstance(value, bool) else ""


def _read_csv(path: Path, columns: tuple[str, ...]) -> list[dict[str, Any]]:
    """The CSV's rows, strictly: a missing column or an empty required field is an `InputError` naming the file
    and the row (the line where that record ends: fields may span lines)."""
    if not path.is_file():
        raise InputError(f"data file not found: {path} (GPQA Diamond is simple-evals' gpqa_diamond.csv)")
    rows = []
    try:
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            absent = [c for c in columns if c not in (reader.fieldnames or [])]
            if absent:
                raise InputError(f"{path}: missing column(s) {', '.join(absent)}")
            for i, row in enumerate(reader, 1):
                problem = _row_problem(row, columns)
                if problem:
                    raise InputError(f"{path} row {i} (line {reader.line_num}): {problem}")
                rows.append(row)
    except UnicodeDecodeError as e:
        raise InputError(f"{path} is not UTF-8 text (byte {e.start}: {e.reason})") from None
    except csv.Error as e:
        raise InputError(f"{path} is not a readable CSV: {e}") from None
    if not rows:
        raise InputError(f"no rows in {path}")
    return rows


def _join(question: str, choices: list[str]) -> str:
    from inspect_ai.solver._multiple_choice import answer_options  # the solver's own formatting
    from inspect_ai.solver._task_state import Choices

    return f"{question}\n\n{answer_options(Choices(choices))}"


def _split(text: str) -> tuple[str, list[str]]:
    """Inverse of `_join`: the question and the choices, read from the last choices block."""
    start = text.rfind(CHOICES_START)
    if start < 0:
        raise InputError(f"not a question with lettered choices: {text[:80]!r}")
    question, rest = text[:start], text[start + len(CHOICES_START):]
    choices = []
    for i in range(1, 26):
        marker = f"\n{chr(ord('A') + i)}) "
        cut = rest.find(marker)
        if cut < 0:
            break
        choices.append(rest[:cut])
        rest = rest[cut + len(marker):]
    return question, [*choices, rest]


def _stable_id(text: str) -> str:
    from inspect_evals.utils import create_stable_id

    return create_stable_id(text, prefix="train")


@contextlib.contextmanager
def _local_csv(upstream: Any, path: Path | None) -> Iterator[None]:
    """Point inspect-evals' loader at a local CSV: its `download` (URL fetch and sha256 check) is skipped and its
    cache path replaced, so its own `load_csv_dataset` and seeded choice shuffle read the local rows."""
    if path is None:
        yield
        return
    _read_csv(path, TEST_COLUMNS)  # strict check first: a clear error beats a csv traceback
    saved = upstream.download, upstream.GPQA_DIAMOND_CACHE_PATH
    upstream.download = lambda url, sha256, dest, *args, **kwargs: dest
    upstream.GPQA_DIAMOND_CACHE_PATH = path
    try:
        yield
    finally:
        upstream.download, upstream.GPQA_DIAMOND_CACHE_PATH = saved
