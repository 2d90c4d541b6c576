"""The planner searches the shared memory, cites what it used, and a new run reads an older run's memory."""

from __future__ import annotations

from conftest import eval_report_stub

from core.handoffs import Best, FailureMode, Stage
from roles import planner


def _state(ctx):
    base = eval_report_stub().model_copy(update={"failure_modes": [FailureMode(
        label="no answer line in the expected format", category="inference_template", count=60,
        examples=["gsm8k_1: target 3, got None"])]})
    return {"stage": Stage.LOCAL, "iteration": 0, "baseline": base, "spent_s": 0.0,
            "best": Best(model_dir=ctx.base_model, score=0.0, iteration=0)}


def test_plan_cites_the_entry_it_retrieved(make_context):
    ctx = make_context()
    ctx.memory.add("log_entry", "older/log/3", "iteration 3: answers lacked the ANSWER line (format problem); "
                   "SFT on 400 rewritten rows fixed it, +0.12", {"task": "gsm8k", "iteration": 3, "score": 0.12})
    ctx.memory.add("log_entry", "older/log/4", "iteration 4: learning rate 1e-3 diverged, loss nan",
                   {"task": "gsm8k", "iteration": 4})
    update = planner.node(_state(ctx), ctx)
    plan = update["plan"]
    assert plan.references and plan.references[0].startswith("older/log/3")
    text = (ctx.ws.iteration_dir(1) / "iteration_plan.md").read_text()
    assert "older/log/3" in text and ctx.memory.count("plan") == 1


def test_a_new_run_with_memory_dir_retrieves_an_older_runs_entries(make_context, tmp_path):
    shared = tmp_path / "shared-memory"
    first = make_context(workspace=tmp_path / "run1", memory_dir=shared)
    first.memory.add("failure_mode", "run1/failure/001/no answer line", "no answer line in the expected format "
                     "(inference_template), 60 of 66", {"task": "gsm8k", "category": "inference_template"})
    del first
    from chromadb.api.shared_system_client import SharedSystemClient

    SharedSystemClient.clear_system_cache()  # the second run must read the store from disk
    second = make_context(workspace=tmp_path / "run2", memory_dir=shared)
    plan = planner.node(_state(second), second)["plan"]
    assert any(r.startswith("run1/failure/001") for r in plan.references)
