"""Every router and stop reason of the graph, and the stage change, on plain states (no data, no model)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from core.handoffs import Best, Check, IterationRecord, Stage, ValidationVerdict
from core.settings import RunSettings
from graph.build import route_continue, route_trained, route_verdict, stop_reason
from roles.logger import _best_before, next_stage


def ctx(**settings):
    s = RunSettings(task="gsm8k", workspace=Path("/tmp/unused-ws"), **settings)
    return SimpleNamespace(settings=s, budget_s=s.hours * 3600)


def runtime(**settings):
    return SimpleNamespace(context=ctx(**settings))


def verdict(decision: str) -> ValidationVerdict:
    return ValidationVerdict(decision=decision, reasons=["r"], checks=[Check(name="structure", passed=True, detail="")])


@pytest.mark.parametrize("decision,rounds,expected", [
    ("approve", 1, "trainer"),
    ("back_to_construction", 1, "data_construction"),
    ("back_to_selection", 1, "data_selection"),
    ("back_to_construction", 4, "logger"),  # max_data_rounds reached: logged as failed, not looped forever
    ("back_to_selection", 4, "logger"),
    ("approve", 4, "trainer"),  # an approval on the last round still trains
])
def test_route_verdict(decision, rounds, expected):
    state = {"verdict": verdict(decision), "data_rounds": rounds}
    assert route_verdict(state, runtime(max_data_rounds=4)) == expected


def test_route_trained():
    assert route_trained({"failure": None}) == "evaluator"
    assert route_trained({"failure": "training failed"}) == "logger"


def test_stop_reasons():
    best = Best(model_dir="m", score=0.5, iteration=1)
    assert stop_reason({"best": best, "iteration": 1}, ctx(target=0.5)).startswith("target 0.5 reached")
    assert stop_reason({"best": best, "iteration": 1, "spent_s": 3600.0}, ctx(hours=1)) == "time budget of 1 h spent"
    assert stop_reason({"best": best, "iteration": 2}, ctx(max_iterations=2)) == "iteration cap 2 reached"
    assert stop_reason({"best": best, "iteration": 1, "spent_s": 10.0}, ctx(target=0.9, max_iterations=3)) is None


def test_route_continue():
    best = Best(model_dir="m", score=0.1, iteration=0)
    assert route_continue({"best": best, "iteration": 0}, runtime(max_iterations=1)) == "planner"
    assert route_continue({"best": best, "iteration": 1}, runtime(max_iterations=1)) == "final_evaluation"


def record(i: int, score: float | None, kept: bool = False) -> IterationRecord:
    return IterationRecord(iteration=i, stage=Stage.LOCAL, objective="o", rows=8, method="m", score=score,
                           delta_vs_base=None, kept=kept, status="completed" if score is not None else "failed")


def test_stage_2_turns_into_stage_3_after_the_stall_window():
    c = ctx(stall_window=2, min_gain=0.01)
    assert next_stage(Stage.LOCAL, [record(1, 0.10)], 0.10, c) == Stage.LOCAL  # fewer than the window
    assert next_stage(Stage.LOCAL, [record(1, 0.105), record(2, 0.10)], 0.10, c) == Stage.EXPLORATION
    assert next_stage(Stage.LOCAL, [record(1, 0.10), record(2, 0.13)], 0.10, c) == Stage.LOCAL  # a real gain
    assert next_stage(Stage.LOCAL, [record(1, None), record(2, None)], 0.10, c) == Stage.EXPLORATION  # failures
    assert next_stage(Stage.EXPLORATION, [record(1, 0.5)], 0.1, c) == Stage.EXPLORATION  # never back


def test_best_before_an_iteration():
    base = SimpleNamespace(accuracy=0.1)
    best = Best(model_dir="m", score=0.3, iteration=2)
    assert _best_before({"best": best, "baseline": base}, kept=False) == best
    kept_earlier = [record(1, 0.2, kept=True), record(2, 0.15)]
    assert _best_before({"best": best, "baseline": base, "history": kept_earlier}, kept=True).score == 0.2
    assert _best_before({"best": best, "baseline": base, "history": []}, kept=True).score == 0.1
