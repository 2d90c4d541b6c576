"""The aime2025 task is inspect-evals' own (prompt, scorer), read offline; its default training rows (GSM8K's,
in AIME's answer format) go through the real graph from task definition to an approved dataset."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from core.handoffs import DataKnobs, Stage
from graph.build import builder
from tasks import get_task
from tasks.base import MaxTokens

FAST_CPU = 16
"""New tokens per sample in the graph tests: the tiny random model only has to produce something to score."""


def mock_model(outputs):
    """mockllm with outputs that carry usage numbers (otherwise it counts tokens with tiktoken, a download)."""
    from inspect_ai.model import ModelOutput, ModelUsage, get_model

    def output(text: str) -> ModelOutput:
        out = ModelOutput.from_content("mockllm/model", text)
        out.usage = ModelUsage(input_tokens=1, output_tokens=1, total_tokens=2)
        return out

    if callable(outputs):
        return get_model("mockllm/model", custom_outputs=lambda *args: _with_usage(outputs(*args)))
    return get_model("mockllm/model", custom_outputs=[output(t) for t in outputs])


def _with_usage(out):
    from inspect_ai.model import ModelOutput, ModelUsage

    if isinstance(out, str):
        out = ModelOutput.from_content("mockllm/model", out)
    out.usage = ModelUsage(input_tokens=1, output_tokens=1, total_tokens=2)
    return out


def through_first_validation(ctx, fast_cpu: int = FAST_CPU):
    """Run the compiled graph from the start (task definition, baseline with the real prefixcache/ provider,
    playbook plan, data selection, construction) and stop after the first validation."""
    m = ctx.task.max_tokens
    ctx.task.max_tokens = MaxTokens(m.canonical, m.cascade, cpu=fast_cpu)  # the task's own cap takes minutes
    graph = builder().compile(checkpointer=InMemorySaver(), interrupt_after=["data_validation"])
    config = {"configurable": {"thread_id": "t"}}
    graph.invoke({"stage": Stage.TASK_DEFINITION}, config, context=ctx)
    snap = graph.get_state(config)
    return snap.values, snap.next


def assert_package_checksummed(ctx, modules: tuple[str, ...]) -> None:
    from tools.guards import module_files

    sums = json.loads(ctx.ws.eval_checksums.read_text())
    for module in modules:
        files = module_files(module)
        assert files and all(str(f) in sums for f in files), module


def _upstream_offline(monkeypatch, data_dir: Path):
    """inspect-evals' aime2025 task itself, its hub read pointed at the local file (independently of tasks/)."""
    from inspect_ai.dataset import hf_dataset

    upstream = importlib.import_module("inspect_evals.aime2025.aime2025")

    def local(path, split, **kw):
        assert path == "math-ai/aime25" and split == "test"
        kw = {k: v for k, v in kw.items() if k != "revision"}
        return hf_dataset("json", data_files=str(data_dir / "aime2025" / "test.jsonl"), split="train", **kw)

    monkeypatch.setattr(upstream, "hf_dataset", local)
    return upstream.aime2025()


def test_prompt_is_inspect_evals_own(monkeypatch, data_dir, tmp_path, tiny_model_dir):
    import inspect_ai
    from transformers import AutoTokenizer

    ours = get_task("aime2025", data_dir)
    ours.inspect_task()  # built before the monkeypatch, through our own adapter
    log = inspect_ai.eval(_upstream_offline(monkeypatch, data_dir), model=mock_model(["ANSWER: 1"] * 3), limit=3,
                          log_dir=str(tmp_path), display="none")[0]
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert [s.id for s in log.samples] == ["0", "1", "2"] and log.samples[0].target == "70"
    assert ours.eval_inputs(3) == [str(s.input) for s in log.samples]
    for sample in log.samples:
        theirs = [{"role": m.role, "content": m.text} for m in sample.messages if m.role in ("system", "user")]
        mine = ours.prompt_messages(str(sample.input))
        assert mine == theirs
        assert (tok.apply_chat_template(mine, tokenize=False, add_generation_prompt=True)
                == tok.apply_chat_template(theirs, tokenize=False, add_generation_prompt=True))


@pytest.mark.parametrize("completion,target,correct", [
    ("Reasoning...\nANSWER: 711", "11", False),  # the old endswith comparison passed this
    ("ANSWER: 149", "49", False),
    ("ANSWER: -3", "3", False),
    ("ANSWER: 3", "-3", False),
    ("Reasoning...\nANSWER: 70", "70", True),
    ("ANSWER: \\boxed{70}", "70", True),
    ("ANSWER: 70\n$$", "70", True),  # a trailing delimiter-only line is skipped
    ("", "70", False),
])
def test_scorer_is_exact_and_signed(completion, target, correct):
    """The installed inspect-evals scorer, unwrapped: exact numeric equality with the sign kept."""
    import asyncio

    from inspect_ai.model import ModelName, ModelOutput
    from inspect_ai.scorer import Target
    from inspect_ai.solver import TaskState
    from inspect_evals.utils.aime_common import aime_scorer

    state = TaskState(ModelName("mockllm/model"), "s", 0, "q", [], output=ModelOutput.from_content("m", completion))
    score = asyncio.run(aime_scorer()(state, Target(target)))
    assert (score.value == "C") is correct


def test_the_task_scores_with_the_canonical_scorer(data_dir, tmp_path):
    """Through inspect itself: the task's scorer is inspect-evals' aime_scorer, 711 does not pass for 11."""
    import inspect_ai

    task = get_task("aime2025", data_dir)
    assert "aime_scorer" in repr(task.inspect_task().scorer)
    log = inspect_ai.eval(task.inspect_task(), model=mock_model(lambda messages, *_: "ANSWER: 7" + (
        "0" if "integer bases" in messages[-1].text else "11")), limit=2, log_dir=str(tmp_path), display="none")[0]
    values = {s.id: next(iter(s.scores.values())).value for s in log.samples}
    assert values == {"0": "C", "1": "I"}  # sample 0: 70 is right; sample 1's answer is 588, not 711


def test_training_rows_take_the_evaluation_prompt_and_answer_line(data_dir):
    task = get_task("aime2025", data_dir)
    rows = task.load_train()
    assert rows[0]["question"].startswith("Natalia sold clips")  # GSM8K's train split, never AIME's test set
    ex = task.training_example(rows[0], DataKnobs())
    assert ex.messages == task.prompt_messages(ex.input_text)
    assert ex.response.endswith("\n\nANSWER: 72") and "<<" not in ex.response and task.answer_ok(ex.response)
    raw = task.training_example(rows[0], DataKnobs(rewrite_answers=False))
    assert raw.response.endswith("#### 72") and not task.answer_ok(raw.response)
    # A local file of other competition problems in AIME's own schema.
    other = task.training_example({"id": "x1", "problem": "Find 2+2.", "answer": 4, "solution": "2+2=4."}, DataKnobs())
    assert other.response == "2+2=4.\n\nANSWER: 4" and other.source_id == "x1"
    texts = task.test_texts()
    assert len(texts) == 30 and texts["0"].endswith("\n70")
    assert task.sample_floor() == 30 and task.full_size == 30


def test_bad_test_file_names_file_and_line(tmp_path):
    (tmp_path / "aime2025").mkdir()
    (tmp_path / "aime2025" / "test.jsonl").write_text('{"id": "0", "problem": "p", "answer": 1}\n{"id": "1"}\n')
    from tasks.base import InputError

    with pytest.raises(InputError, match=r"test.jsonl:2: missing field\(s\) problem, answer"):
        get_task("aime2025", tmp_path).load_test()


def test_graph_baseline_then_data_reaches_approve(make_context):
    ctx = make_context(task="aime2025")
    values, nxt = through_first_validation(ctx)
    assert_package_checksummed(ctx, ("inspect_evals.aime2025", "inspect_evals.utils.aime_common"))
    base = values["baseline"]
    assert base.n == 30 and base.limit == 30 and not base.canonical and base.max_tokens == FAST_CPU
    verdict = values["verdict"]
    assert verdict.decision == "approve" and nxt == ("trainer",), verdict.reasons
    assert all(c.passed for c in verdict.checks), verdict.checks
    assert values["manifest"].rows > 0
