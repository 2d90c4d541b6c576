"""HumanEval as PostTrainBench scores it: inspect-evals' `humaneval` task (its dataset, prompt and `generate()`),
sandboxed, with a scorer whose pass an `exit(0)` in the completion cannot fake. It trains on MBPP rows rendered as
HumanEval prompts (signature and docstring), answered with the reference function in a ```python block."""

from __future__ import annotations

import ast
import contextlib
import copy
import importlib
import os
import textwrap
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.base import BenchmarkTask, InputError, MaxTokens, TrainingExample, hub_from_files, read_jsonl
from tasks.sandbox import HIDE_ENV, humaneval_verify, sandbox_spec  # importing registers `posttrain_local`

if TYPE_CHECKING:
    from core.handoffs import DataKnobs

HUB_DATASET = "openai/openai_humaneval"
HUB_REVISION = "7dce6050a7d6d172f3cc5c32aa97f52fa1a2e544"  # inspect_evals' HUMANEVAL_DATASET_REVISION
MBPP_DATASET = "google-research-datasets/mbpp"
MBPP_REVISION = "4bb6404fdc6cacfda99d4ac4205087b89d32030c"  # inspect_evals' MBPP_DATASET_REVISION
MBPP_SPLITS = ("train", "validation")  # MBPP's test and prompt splits stay out: MBPP's own evaluation reads them
TEST_FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")
MBPP_FIELDS = ("task_id", "text", "code", "test_list")
MAX_EXAMPLE_CHARS = 160  # longer `>>>` examples (big literals) would dwarf the task text


class HumanEval(BenchmarkTask):
    name = "humaneval"
    description = "Write a Python function from its signature and docstring; scored by running hidden unit tests."
    answer_line_hint = "the complete function (its def line and body) in one ```python fenced code block"
    metric = "accuracy (pass@1: share of problems whose function passes all its tests)"
    # find_code's extract_code_block lives outside the humaneval package.
    eval_modules = ("inspect_evals.humaneval", "inspect_evals.utils.code")
    # PostTrainBench: 4000, then 3000 and 2000. CPU: 384 fits the embedded student (32 samples in 268 s, 0.094).
    max_tokens = MaxTokens(canonical=4000, cascade=(3000, 2000), cpu=384)
    ptb_weight = 0.115  # PostTrainBench v1.2's weight in its average
    train_cutoff = 352  # 96% of the 464 MBPP rows rendered with SmolLM2's template fit (median 210, max 465)
    construction_options = {
        "doc_examples": (True, "Show up to two of the MBPP row's test asserts as `>>>` examples in the docstring, "
                               "as most HumanEval prompts do."),
    }
    train_source = ("MBPP (google-research-datasets/mbpp, config full) train and validation splits, 464 Python "
                    "problems with reference solutions, rendered as HumanEval prompts; never HumanEval itself")

    def load_test(self) -> list[dict[str, Any]]:
        if self.data_dir is not None:
            return read_jsonl(self.data_dir / "humaneval" / "test.jsonl", required=TEST_FIELDS)
        from datasets import load_dataset  # heavy; only on the hub path

        return list(load_dataset(HUB_DATASET, split="test", revision=HUB_REVISION))

    def load_train(self) -> list[dict[str, Any]]:
        if self.data_dir is not None:
            return [r for s in MBPP_SPLITS for r in read_jsonl(self.data_dir / "mbpp" / f"{s}.jsonl", MBPP_FIELDS)]
        from datasets import load_dataset

        return [r for s in MBPP_SPLITS for r in load_dataset(MBPP_DATASET, "full", split=s, revision=MBPP_REVISION)]

    def test_row_problem(self, row: dict[str, Any]) -> str | None:
        bad = [k for k in TEST_FIELDS if not isinstance(row.get(k), str) or not row[k].strip()]
        return f"field(s) {', '.join(bad)} must be non-empty strings" if bad else None

    def row_ok(self, row: dict[str, Any]) -> bool:
        return _mbpp_problem(row, examples=0) is not None

    def dedup_text(self, row: dict[str, Any]) -> str:
        # MBPP's task text; a HumanEval-schema row (a test row, or a training file copied from one) is its prompt
        return " ".join(str(row.get("text") or row.get("prompt") or "").split())

    def inspect_task(self):
        if getattr(self, "_task", None) is None:
            upstream = importlib.import_module("inspect_evals.humaneval.humaneval")
            with hub_from_files(upstream, HUB_DATASET, lambda split: self.data_dir / self.name / f"{split}.jsonl",
                                TEST_FIELDS) if self.data_dir else contextlib.nullcontext():
                self._task = upstream.humaneval(sandbox=sandbox_spec(), scorer=humaneval_verify())
        _hide_from_sandbox(self.data_dir)  # at every call: whoever evaluates has the data hidden
        return self._task

    def training_example(self, row: dict[str, Any], knobs: DataKnobs) -> TrainingExample:
        examples = 2 if self.option(knobs, "doc_examples") else 0
        problem = _mbpp_problem(row, examples)
        if problem is None:
            raise InputError(f"MBPP row {row.get('task_id')!r}: its code has no parseable function its tests call")
        prompt, function = problem
        from inspect_evals.humaneval.humaneval import INSTRUCTION

        # The sample input exactly as record_to_sample builds it: validation masks it out of both renderings.
        sample_input = INSTRUCTION + prompt
        messages = self.prompt_messages(sample_input)
        if not knobs.with_system:
            messages = [m for m in messages if m["role"] != "system"]
        response = fenced(function) if knobs.rewrite_answers else _normalise(str(row["code"]))
        return TrainingExample(messages, response, f"mbpp_{row['task_id']}", sample_input)

    def graded_sample(self, row: dict[str, Any], knobs: DataKnobs):
        """An MBPP row as a HumanEval sample: the metadata the sandboxed scorer reads (prompt, test, entry point),
        its test the row's own asserts, which the judge runs with the function's name bound to the solution. The
        judge passes arguments to the solution as plain data, so a row whose tests call the function with anything
        else (objects of a class its code defines) cannot be graded: an `InputError`."""
        problem = _mbpp_problem(row, 2 if self.option(knobs, "doc_examples") else 0)
        if problem is None:
            raise InputError(f"MBPP row {row.get('task_id')!r}: its code has no parseable function its tests call")
        prompt, function = problem
        entry = _parse(function).body[0].name
        tests = [t for t in row["test_list"] if isinstance(t, str)]
        if not tests or not all(_plain_calls(t, entry) for t in tests):
            raise InputError(f"MBPP row {row.get('task_id')!r}: its tests call {entry} with arguments other than "
                             "plain literals, which the sandboxed judge cannot pass to the solution")
        setup = row.get("test_setup_code")
        test = "\n".join([setup, *tests] if isinstance(setup, str) and setup.strip() else tests)
        return self._graded(row, knobs, function, metadata={"prompt": prompt, "test": test, "entry_point": entry})

    def answer_ok(self, response: str) -> bool:
        from inspect_evals.humaneval.humaneval import extract_function_body
        from inspect_evals.utils.code import extract_code_block

        block = extract_code_block(response, "python")  # what find_code reads; without a fence it takes raw text
        if block is None:
            return False
        block = block.replace("\r\n", "\n")
        return ":\n    " in block and bool(extract_function_body(block).strip())

    def failure_label(self, sample: dict[str, Any]) -> tuple[str, str] | None:
        from inspect_evals.humaneval.humaneval import INSTRUCTION

        prompt = str(sample.get("input", "")).removeprefix(INSTRUCTION)
        try:
            compile(prompt + str(sample.get("answer") or "") + "\n", "<completion>", "exec")
        except Exception:  # noqa: BLE001  SyntaxError, or a pathological nesting depth: either way it cannot run
            return "extracted code does not compile after the prompt (indentation or syntax)", "inference_template"
        return "code compiles but fails the tests", "data"

    def test_texts(self) -> dict[str, str]:
        return {r["task_id"]: f"{r['prompt']}\n{r['canonical_solution']}" for r in self.load_test()}


def fenced(function: str) -> str:
    """The response the scorer reads: one ```python block holding the whole function (find_code keeps its body)."""
    return f"```python\n{function.rstrip()}\n```"


def _normalise(code: str) -> str:
    """MBPP code uses CRLF, tabs and trailing blanks."""
    lines = code.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(ln[:len(ln) - len(ln.lstrip("\t"))].replace("\t", "    ") + ln.lstrip("\t").rstrip()
                     for ln in lines).strip("\n")


def _mbpp_problem(row: dict[str, Any], examples: int) -> tuple[str, str] | None:
    """(HumanEval-style prompt, reference function) for an MBPP row, or None when its code has no function its tests
    call. The prompt keeps the row's other code (imports, helpers) above the signature, as HumanEval prompts do."""
    text, code, tests = row.get("text"), row.get("code"), row.get("test_list")
    if not isinstance(text, str) or not text.strip() or not isinstance(code, str) or not isinstance(tests, list):
        return None
    try:
        module = _parse(_normalise(code))
        asserts = [_parse(t).body[0] for t in tests if isinstance(t, str)]
    except (SyntaxError, ValueError, IndexError):  # a bad file is this row's problem, not the run's
        return None
    defs = {n.name: n for n in module.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    called = [n.func.id for a in asserts for n in ast.walk(a)
              if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    entry = next((defs[name] for name in called if name in defs), None)
    if entry is None:
        return None
    function = ast.unparse(entry)  # 4-space indents and a one-line signature: the body starts at the first ":\n    "
    stub = copy.copy(entry)
    stub.body = [ast.Pass()]
    signature = ast.unparse(stub).rsplit("\n", 1)[0]
    rest = ast.unparse(ast.Module(body=[n for n in module.body if n is not entry], type_ignores=[]))
    head = f"{rest}\n\n\n" if rest else "\n\n"
    shown = [e for e in map(_example, asserts) if e and len(e) <= MAX_EXAMPLE_CHARS][:examples]
    for k in range(len(shown), -1, -1):  # an example whose quoting breaks the docstring is left out
        prompt = head + signature + "\n" + _docstring(" ".join(text.split()), shown[:k])
        with contextlib.suppress(SyntaxError, ValueError):
            _parse(prompt + "    pass\n")
            return prompt, function
    return None


def _parse(source: str) -> ast.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MBPP's regex strings ("\d") are invalid escapes, harmless here
        return ast.parse(source)


def _plain_calls(test: str, entry: str) -> bool:
    """Whether every call of `entry` in the test passes literals only (what the judge's proxy can carry)."""
    try:
        calls = [n for n in ast.walk(_parse(test)) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
                 and n.func.id == entry]
        for call in calls:
            for value in [*call.args, *(k.value for k in call.keywords)]:
                ast.literal_eval(value)
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
        return False
    return bool(calls) and all(k.arg is not None for c in calls for k in c.keywords)


def _example(node: ast.stmt) -> str | None:
    """`assert f(x) == y` as a doctest line pair; other assert shapes are not shown."""
    if isinstance(node, ast.Assert) and isinstance(t := node.test, ast.Compare) and len(t.ops) == 1 \
            and isinstance(t.ops[0], ast.Eq) and isinstance(t.left, ast.Call):
        return f">>> {ast.unparse(t.left)}\n{ast.unparse(t.comparators[0])}"
    return None


def _docstring(text: str, examples: list[str]) -> str:
    body = textwrap.wrap(text.replace('"""', "'''"), 100) + [ln for e in examples for ln in e.split("\n")]
    body[0] = f'""" {body[0]}'
    return textwrap.indent("\n".join([*body, '"""']), "    ") + "\n"


def _hide_from_sandbox(data_dir: Path | None) -> None:
    """Sandboxed code must not read the benchmark's reference solutions: list the data folder and the hub caches
    (which hold the hub's copy, or an arrow copy of the local file) for the sandbox to cover with an empty mount
    (tasks.sandbox reads the variable at every exec and skips folders that do not exist)."""
    from datasets.config import HF_DATASETS_CACHE
    from huggingface_hub.constants import HF_HUB_CACHE

    hidden = [p for p in os.environ.get(HIDE_ENV, "").split(os.pathsep) if p]
    for folder in [*([data_dir] if data_dir is not None else []), HF_DATASETS_CACHE, HF_HUB_CACHE]:
        path = os.path.realpath(folder)
        if path not in hidden:
            hidden.append(path)
    os.environ[HIDE_ENV] = os.pathsep.join(hidden)
