"""Hard rules hold in code: evaluation checksums, lineage, data provenance, GPU visibility."""

from __future__ import annotations

import json
import sys

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from core.errors import GuardViolation
from core.handoffs import Best, Stage
from graph.build import builder
from tools import guards


def test_tampering_mid_run_stops_the_run_and_leaves_it_resumable(make_context, tmp_path, monkeypatch):
    """The guard checksums whole packages: editing any file of one, however deep, is caught."""
    package = tmp_path / "evalcode" / "scorer_under_watch"
    (package / "helpers").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    module = package / "helpers" / "threshold.py"
    module.write_text("THRESHOLD = 1\n")
    monkeypatch.syspath_prepend(str(package.parent))
    monkeypatch.setattr(guards, "COMMON_EVAL_MODULES", (*guards.COMMON_EVAL_MODULES, "scorer_under_watch"))
    ctx = make_context()
    graph = builder().compile(checkpointer=InMemorySaver(), interrupt_after=["task_definition"])
    config = {"configurable": {"thread_id": "t"}}
    graph.invoke({"stage": Stage.TASK_DEFINITION}, config, context=ctx)
    assert str(module) in json.loads(ctx.ws.eval_checksums.read_text())

    module.write_text("THRESHOLD = 0  # an agent 'fixing' the scorer\n")
    with pytest.raises(
        GuardViolation, match=r"modified since the run started: .*scorer_under_watch/helpers/threshold.py"
    ):
        graph.invoke(None, config, context=ctx)
    snap = graph.get_state(config)
    assert snap.next == ("baseline_evaluation",)  # nothing was lost: --resume starts here again
    assert snap.values["stage"] == Stage.BASELINE


def test_trainer_refuses_a_start_point_this_run_never_produced(make_context, tmp_path, tiny_model_dir):
    from conftest import eval_report_stub
    from conftest import plan_of as _plan

    from roles import trainer

    ctx = make_context()
    foreign = tmp_path / "some-instruct-model"
    foreign.mkdir()
    (foreign / "config.json").write_text("{}")
    plan = _plan().model_copy(update={"train": _plan().train.model_copy(update={"start_from": "best"})})
    state = {
        "stage": Stage.LOCAL,
        "iteration": 2,
        "plan": plan,
        "baseline": eval_report_stub(),
        "manifest": None,
        "best": Best(model_dir=str(foreign), score=0.5, iteration=1),
    }
    with pytest.raises(GuardViolation, match="only the base model"):
        trainer.node(state, ctx)


def test_lineage_rules(tmp_path):
    from core.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    own = ws.iteration_dir(1) / "train" / "model"
    own.mkdir(parents=True)
    assert guards.check_start_checkpoint("base", "base", ws) == ["base"]
    with pytest.raises(GuardViolation, match="no lineage.json"):
        guards.check_start_checkpoint(str(own), "base", ws)
    guards.write_lineage(own, ["other-base"])
    with pytest.raises(GuardViolation, match="lineage starts at"):
        guards.check_start_checkpoint(str(own), "base", ws)
    guards.write_lineage(own, ["base"])
    assert guards.check_start_checkpoint(str(own), "base", ws) == ["base", str(own)]
    with pytest.raises(GuardViolation):
        guards.check_start_checkpoint(str(tmp_path), "base", ws)


@pytest.mark.parametrize("source", ["https://api.example.com/v1#gpt", "openai:gpt-4o", "openai-compatible:http://x#m"])
def test_remote_model_apis_are_refused_as_data_sources(source, data_dir):
    from core.errors import SourceError
    from tasks import get_task
    from tools.data import load_source

    with pytest.raises(SourceError, match="never to build training data"):
        load_source(get_task("gsm8k", data_dir), source)


def test_cuda_visible_devices_reaches_children_untouched(monkeypatch):
    import subprocess

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    out = subprocess.run(
        [sys.executable, "-c", "import os; print(os.environ['CUDA_VISIBLE_DEVICES'])"],
        env=guards.child_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "3"


def test_generation_settings_cannot_be_set_by_a_role():
    from core.handoffs import TrainKnobs
    from tasks.base import GenerationSettings

    with pytest.raises(ValueError):
        TrainKnobs(max_tokens=10)  # knobs forbid unknown fields: no generation setting rides along
    gen = GenerationSettings(max_tokens=256)
    with pytest.raises(ValueError):
        gen.max_tokens = 4000  # frozen


def test_comparisons_below_the_floor_are_refused():
    from core.errors import EvalRefused
    from tools.evaluate import check_limit

    with pytest.raises(EvalRefused, match="floor is 66"):
        check_limit(50, 1319)
    check_limit(66, 1319)


def test_editing_a_file_of_the_running_benchmarks_own_evaluation_stops_the_run(make_context):
    """A humaneval run checksums inspect-evals' humaneval package; editing one of its files mid-run stops the run
    at the next evaluation (the file is restored afterwards)."""
    import importlib.util
    from pathlib import Path

    ctx = make_context(task="humaneval")
    graph = builder().compile(checkpointer=InMemorySaver(), interrupt_after=["task_definition"])
    config = {"configurable": {"thread_id": "t"}}
    graph.invoke({"stage": Stage.TASK_DEFINITION}, config, context=ctx)
    target = Path(importlib.util.find_spec("inspect_evals.humaneval.humaneval").origin).resolve()
    assert str(target) in json.loads(ctx.ws.eval_checksums.read_text())
    original = target.read_bytes()
    try:
        target.write_bytes(original + b"\n# VERIFY_TIMEOUT = 1  (an agent 'tuning' the check)\n")
        with pytest.raises(GuardViolation, match=rf"modified since the run started: {target}"):
            graph.invoke(None, config, context=ctx)
    finally:
        target.write_bytes(original)
    assert graph.get_state(config).next == ("baseline_evaluation",)
