"""Honest final scores: the standalone scorer reproduces a run's baseline, the final protocol falls down its
max_tokens ladder when an attempt fails and averages seeds, and the identity check tells a fine-tuned copy of the
base from a different model of the same shape. Real inspect evaluations on tiny models."""

from __future__ import annotations

import json
from argparse import Namespace

import pytest

from core.errors import GuardViolation


def evaluate(**args):
    from graph.evaluate import evaluate as run
    from graph.evaluate import parse_args

    defaults = vars(parse_args(["--model", "x"]))
    return run(Namespace(**{**defaults, **args}), say=lambda _: None)


@pytest.fixture
def toy(monkeypatch):
    from tasks import TASKS

    monkeypatch.setitem(TASKS, "toy", "unit.toy:Toy")  # a benchmark added by one module and one registry line
    from unit.toy import Toy

    return Toy


@pytest.fixture
def short_context_model(tiny_model_dir, tmp_path, toy):
    """The tiny model with a context window that fits the toy's prompts plus 32 new tokens, not 64."""
    import shutil

    from transformers import AutoTokenizer

    out = tmp_path / "short-context"
    shutil.copytree(tiny_model_dir, out)
    tok = AutoTokenizer.from_pretrained(out)
    task = toy(None)
    longest = max(len(tok(tok.apply_chat_template(task.prompt_messages(r["q"]), tokenize=False,
                                                  add_generation_prompt=True), add_special_tokens=False)["input_ids"])
                  for r in task.load_test())
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "max_position_embeddings": longest + 48}))
    return out


def test_the_scorer_reproduces_a_runs_baseline(make_context, small_data_dir, tmp_path):
    from langgraph.checkpoint.memory import InMemorySaver

    from graph.build import builder

    ctx = make_context(data_dir=small_data_dir)
    graph = builder().compile(checkpointer=InMemorySaver(), interrupt_after=["baseline_evaluation"])
    graph.invoke({"stage": 0}, {"configurable": {"thread_id": "t"}}, context=ctx)
    base = graph.get_state({"configurable": {"thread_id": "t"}}).values["baseline"]
    again = evaluate(task="gsm8k", model=ctx.base_model, data_dir=small_data_dir, limit=32, device="cpu",
                     out=tmp_path / "again")
    assert (again.accuracy, again.n, again.max_tokens) == (base.accuracy, base.n, base.max_tokens)
    assert again.samples == base.samples  # sample for sample


def test_the_cascade_moves_to_the_next_max_tokens_after_a_failed_attempt(short_context_model, tmp_path, toy):
    report = evaluate(task="toy", model=str(short_context_model), final=True, profile="canonical", seeds=2,
                      device="cpu", out=tmp_path / "final")
    protocol = json.loads((tmp_path / "final" / "protocol.json").read_text())
    first, second = protocol["attempts"]
    assert (first["max_tokens"], first["status"]) == (64, "failed") and "context window" in first["error"]
    assert (second["max_tokens"], second["status"]) == (32, "counted") and protocol["counted"] == 2
    assert protocol["seeds"] == [72332, 87681] and len(second["per_seed"]) == 2  # one score per seed, and the mean
    assert report.accuracy == pytest.approx(sum(second["per_seed"]) / 2) and report.max_tokens == 32
    assert report.canonical


def test_every_failed_attempt_is_recorded_and_raised(short_context_model, tmp_path, toy, monkeypatch):
    from core.errors import EvalFailed
    from tasks.base import MaxTokens

    monkeypatch.setattr(toy, "max_tokens", MaxTokens(canonical=200, cascade=(100,), cpu=16))
    with pytest.raises(EvalFailed, match="every attempt of the final evaluation failed"):
        evaluate(task="toy", model=str(short_context_model), final=True, profile="canonical", device="cpu",
                 out=tmp_path / "final")
    attempts = json.loads((tmp_path / "final" / "protocol.json").read_text())["attempts"]
    assert [a["status"] for a in attempts] == ["failed", "failed"]


def test_identity_accepts_a_fine_tuned_copy_and_refuses_another_model(tiny_model_dir, tmp_path):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from tools.identity import check_derives

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    torch.manual_seed(1)
    for _ in range(10):  # a short fine-tuning run on random tokens
        ids = torch.randint(0, 1000, (2, 32))
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(tmp_path / "tuned")
    identity = check_derives(tmp_path / "tuned", tiny_model_dir)
    assert 0 < identity.max_change < 0.5
    torch.manual_seed(123)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(tiny_model_dir)).save_pretrained(tmp_path / "other")
    with pytest.raises(GuardViolation, match="does not derive from the base model"):
        check_derives(tmp_path / "other", tiny_model_dir)


def test_a_new_benchmark_runs_task_definition_and_a_baseline(make_context, toy):
    """One module (tests/unit/toy.py) and one registry line are all a benchmark needs."""
    from langgraph.checkpoint.memory import InMemorySaver

    from graph.build import builder

    ctx = make_context(task="toy", data_dir=None)
    graph = builder().compile(checkpointer=InMemorySaver(), interrupt_after=["baseline_evaluation"])
    graph.invoke({"stage": 0}, {"configurable": {"thread_id": "t"}}, context=ctx)
    values = graph.get_state({"configurable": {"thread_id": "t"}}).values
    assert values["baseline"].n == 32 and ctx.ws.task_definition.is_file()
    assert "Benchmark: toy" in ctx.ws.task_definition.read_text()
