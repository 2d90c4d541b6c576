"""The humaneval task is PostTrainBench's: inspect-evals' own dataset, prompt and solver, run in the sandbox with a
scorer an `exit(0)` cannot fool; it trains on MBPP rows written exactly as that scorer reads them. Real data comes
from ../shared/data; the model is the tiny random-init one."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import pytest

from core.handoffs import DataKnobs
from tasks import get_task
from tasks.humaneval import HumanEval, fenced
from tasks.sandbox import HIDE_ENV, sandbox_spec

PLACEHOLDER = "<<SAMPLE INPUT>>"


@pytest.fixture(scope="module")
def task(data_dir: Path) -> HumanEval:
    task = get_task("humaneval", data_dir)
    assert isinstance(task, HumanEval)
    return task


@pytest.fixture(autouse=True)
def _restore_hide_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building the task lists the data folder in POSTTRAIN_SANDBOX_HIDE; keep that out of other tests."""
    monkeypatch.delenv(HIDE_ENV, raising=False)


def _mock_model(completions: list[str]):
    """mockllm with preset usage (it would otherwise count tokens with tiktoken, which downloads)."""
    from inspect_ai.model import ModelOutput, ModelUsage, get_model

    outputs = [ModelOutput.from_content("mockllm/model", c) for c in completions]
    for output in outputs:
        output.usage = ModelUsage(input_tokens=1, output_tokens=1, total_tokens=2)
    return get_model("mockllm/model", custom_outputs=outputs)


def _as_training_response(row: dict[str, str]) -> str:
    """A HumanEval reference solution in the training rows' shape: the whole entry function, fenced."""
    start = row["prompt"].index(f"def {row['entry_point']}(")
    return fenced(row["prompt"][start:] + row["canonical_solution"])


def test_rendering_matches_inspect_evals_byte_for_byte(monkeypatch, data_dir, tmp_path, tiny_model_dir, task):
    import inspect_ai
    from inspect_ai.dataset import hf_dataset
    from transformers import AutoTokenizer

    task.inspect_task()  # ours first, through our own adapter
    upstream = importlib.import_module("inspect_evals.humaneval.humaneval")

    def local(path, split, **kw):  # inspect-evals' task itself, its hub read pointed at the local file
        assert path == "openai/openai_humaneval"
        kw = {k: v for k, v in kw.items() if k != "revision"}
        return hf_dataset("json", data_files=str(data_dir / "humaneval" / f"{split}.jsonl"), split="train", **kw)

    monkeypatch.setattr(upstream, "hf_dataset", local)
    theirs_task = upstream.humaneval(sandbox="posttrain_local")
    log = inspect_ai.eval(theirs_task, model=_mock_model(["x"] * 3), limit=3, log_dir=str(tmp_path),
                          display="none", score=False)[0]
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert [s.id for s in log.samples] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    assert [str(s.input) for s in log.samples] == task.eval_inputs(3)
    for sample in log.samples:
        theirs = [{"role": m.role, "content": m.text} for m in sample.messages if m.role in ("system", "user")]
        mine = task.prompt_messages(str(sample.input))
        assert mine == theirs
        assert (tok.apply_chat_template(mine, tokenize=False, add_generation_prompt=True)
                == tok.apply_chat_template(theirs, tokenize=False, add_generation_prompt=True))
    mine = task.inspect_task()
    assert mine.sandbox.type == sandbox_spec() and "humaneval_verify" in repr(mine.scorer)


def test_mbpp_rows_become_training_rows_in_the_evaluation_template(task, tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = task.load_train()
    assert len(rows) == 464 and all(task.row_ok(r) for r in rows)  # MBPP train + validation, every row usable
    assert not task.row_ok({"task_id": 1, "text": "t", "code": "def f(:\n  pass", "test_list": ["assert f() == 1"]})
    assert not task.row_ok({"task_id": 2, "text": "t", "code": "def g():\n  return 1", "test_list": ["assert f()"]})

    def skeleton(messages, text):
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True).replace(text, PLACEHOLDER)

    [evaluation] = {skeleton(task.prompt_messages(t), t) for t in task.eval_inputs(3)}
    for knobs in (DataKnobs(), DataKnobs(options={"doc_examples": False})):
        examples = [task.training_example(r, knobs) for r in rows]
        assert all(skeleton(e.messages, e.input_text) == evaluation for e in examples)
        assert all(task.answer_ok(e.response) for e in examples)
    first = task.training_example(rows[1], DataKnobs())  # MBPP 602, indented with two spaces and CRLF in the source
    assert first.input_text.endswith(
        'def first_repeated_char(str1):\n    """ Write a python function to find the first repeated character in a '
        "given string.\n    >>> first_repeated_char('abcabc')\n    'a'\n    >>> first_repeated_char('abc')\n"
        "    'None'\n    \"\"\"\n")
    assert first.response.startswith("```python\ndef first_repeated_char(str1):\n    for index, c in enumerate(str1):")
    assert first.source_id == "mbpp_602" and "\r" not in first.response + first.input_text
    raw = task.training_example(rows[1], DataKnobs(rewrite_answers=False))
    assert not task.answer_ok(raw.response)  # the source's bare code is not the fenced function the scorer reads
    assert not task.answer_ok("    return x\n") and not task.answer_ok("```python\nx = 1\n```")


def test_training_format_is_what_the_real_scorer_reads(task, data_dir, tmp_path):
    """HumanEval's reference solutions and MBPP rows, both in the training rows' shape, pass the task's own sandboxed
    scorer; an exit(0) in the same shape does not."""
    import inspect_ai
    from inspect_ai import Task
    from inspect_ai.dataset import Sample
    from inspect_evals.humaneval.humaneval import INSTRUCTION

    canonical = task.inspect_task()
    rows = {r["task_id"]: r for r in task.load_test()}
    ids = ["HumanEval/0", "HumanEval/10", "HumanEval/32", "HumanEval/38"]  # 10, 32, 38: helpers above the entry
    samples = [s for s in canonical.dataset if s.id in ids]
    completions = [_as_training_response(rows[str(s.id)]) for s in samples]
    hack = Sample(id="hack", input=samples[0].input, metadata=samples[0].metadata)
    completions.append("```python\ndef has_close_elements(numbers, threshold):\n    exit(0)\n```")
    mbpp = {r["task_id"]: r for r in task.load_train()}
    for task_id in (602, 604, 606, 611):  # plain-data arguments: the judge's proxy passes literals only
        ex = task.training_example(mbpp[task_id], DataKnobs())
        entry = ex.response.split("def ", 1)[1].split("(", 1)[0]
        meta = {"prompt": ex.input_text.removeprefix(INSTRUCTION), "test": "\n".join(mbpp[task_id]["test_list"]),
                "entry_point": entry}
        samples.append(Sample(id=f"mbpp_{task_id}", input=ex.input_text, metadata=meta))
        completions.append(ex.response)
    probe = Task(dataset=[*samples[:4], hack, *samples[4:]], solver=canonical.solver, scorer=canonical.scorer,
                 sandbox="posttrain_local")
    [log] = inspect_ai.eval(probe, model=_mock_model(completions), log_dir=str(tmp_path), display="none",
                            max_samples=1)
    assert log.status == "success" and log.samples is not None
    verdicts = {str(s.id): s.scores["humaneval_verify"].value for s in log.samples if s.scores}
    assert verdicts == {**{i: "C" for i in ids}, "hack": "I", **{f"mbpp_{i}": "C" for i in (602, 604, 606, 611)}}


def test_failure_labels(task):
    prompt = task.load_test()[0]["prompt"]
    from inspect_evals.humaneval.humaneval import INSTRUCTION

    sample = {"input": INSTRUCTION + prompt, "answer": "    return False\n"}
    assert task.failure_label(sample) == ("code compiles but fails the tests", "data")
    assert task.failure_label({**sample, "answer": "  return (\n"})[1] == "inference_template"


def test_bad_data_names_file_and_row(tmp_path):
    (tmp_path / "humaneval").mkdir()
    (tmp_path / "mbpp").mkdir()
    (tmp_path / "humaneval" / "test.jsonl").write_text('{"task_id": "a", "prompt": "p"}\n')
    (tmp_path / "mbpp" / "train.jsonl").write_text('{"task_id": 1, "text": "t", "code": "c", "test_list": []}\n{"x"\n')
    task = get_task("humaneval", tmp_path)
    from tasks.base import InputError

    with pytest.raises(InputError, match=r"test.jsonl:1: missing field\(s\) canonical_solution"):
        task.load_test()
    with pytest.raises(InputError, match=r"train.jsonl:2"):
        task.load_train()
    problem = task.test_row_problem({"task_id": "a", "prompt": "p", "canonical_solution": "", "test": "t",
                                     "entry_point": 3})
    assert problem == "field(s) canonical_solution, entry_point must be non-empty strings"


def test_graph_defines_the_task_evaluates_the_floor_and_approves_mbpp_data(make_context, data_dir):
    """Task definition, a floor-sized baseline (the tiny model, prefixcache/, the sandbox), then the playbook's first
    iteration of data selection, construction and validation, through the compiled graph."""
    from langgraph.checkpoint.memory import InMemorySaver

    from core.handoffs import Stage
    from graph.build import builder
    from tools.guards import module_files

    ctx = make_context(task="humaneval", max_iterations=1)
    graph = builder().compile(checkpointer=InMemorySaver(), interrupt_after=["data_validation"])
    config = {"configurable": {"thread_id": "t"}}
    graph.invoke({"stage": Stage.TASK_DEFINITION}, config, context=ctx)

    sums = json.loads(ctx.ws.eval_checksums.read_text())
    watched = [*module_files("inspect_evals.humaneval"), *module_files("inspect_evals.utils.code"),
               *module_files("tasks.sandbox"), *module_files("tasks.humaneval")]
    assert {str(p) for p in watched} <= set(sums)

    snap = graph.get_state(config)
    base = snap.values["baseline"]
    assert base.n == 32 and base.max_tokens == 384 and not base.canonical and 0.0 <= base.accuracy <= 1.0
    inspect_log = json.loads(Path(base.log_path).read_text())
    assert inspect_log["eval"]["sandbox"]["type"] == "posttrain_local"
    assert str(data_dir.resolve()) in os.environ[HIDE_ENV].split(os.pathsep)  # the solutions are hidden
    for _ in range(3):  # decontamination may send it back once; the playbook then drops the named rows
        if snap.values["verdict"].decision != "back_to_construction":
            break
        graph.invoke(None, config, context=ctx)
        snap = graph.get_state(config)
    verdict = snap.values["verdict"]
    assert verdict.decision == "approve" and snap.next == ("trainer",), verdict.reasons
    assert snap.values["manifest"].rows == 160 and all(c.passed for c in verdict.checks)
