"""The rules every node applies, whatever decided: each is shown refusing a deliberately rule-breaking handoff."""

from __future__ import annotations

import pytest

from core.errors import GuardViolation
from core.handoffs import (
    Check,
    DataKnobs,
    DataSelection,
    IterationPlan,
    SourceChoice,
    Stage,
    TrainKnobs,
    ValidationFindings,
    ValidationVerdict,
)
from roles import rules


def plan(**data) -> IterationPlan:
    return IterationPlan(iteration=1, stage=Stage.LOCAL, problems=["p"], objective="o", changes=["c"],
                         change_kind="data", success_criterion="s", data=DataKnobs(**data),
                         train=TrainKnobs(cutoff_len=512))


def findings(*failed: str, usable: int = 10) -> ValidationFindings:
    names = ("structure", "alignment", "content", "decontamination")
    return ValidationFindings(checks=[Check(name=n, passed=n not in failed, detail="") for n in names],
                              usable_rows=usable, contaminated={"row-1": ["test-9"]} if "decontamination" in failed
                              else {})


@pytest.mark.parametrize("failed", ["structure", "alignment", "decontamination"])
def test_no_approval_of_data_that_failed_a_hard_check(failed):
    approve = ValidationVerdict(decision="approve", reasons=["looks fine"], checks=findings(failed).checks)
    problems = rules.verdict_problems(approve, findings(failed))
    assert problems and failed in problems[0]
    with pytest.raises(GuardViolation, match="breaks a rule.*approve is not allowed"):
        rules.enforce("data validation", problems)


def test_content_alone_may_be_approved_and_sending_back_is_always_allowed():
    approve = ValidationVerdict(decision="approve", reasons=["ok"], checks=findings("content").checks)
    assert rules.verdict_problems(approve, findings("content")) == []
    back = ValidationVerdict(decision="back_to_construction", reasons=["x"], checks=findings("decontamination").checks)
    assert rules.verdict_problems(back, findings("decontamination")) == []


def test_no_approval_without_a_usable_row():
    approve = ValidationVerdict(decision="approve", reasons=["ok"], checks=findings().checks)
    assert "usable rows (none)" in rules.verdict_problems(approve, findings(usable=0))[0]


def test_rows_within_the_budget():
    assert rules.plan_problems(plan(max_rows=100), affordable_rows=100) == []
    assert "above the 99 rows the budget affords" in rules.plan_problems(plan(max_rows=100), affordable_rows=99)[0]


def test_knobs_within_bounds_even_after_an_assignment():
    knobs = TrainKnobs()
    knobs.learning_rate = 5.0  # assignment skips pydantic's check: the rule catches it
    assert any("learning_rate" in p for p in rules.train_problems(knobs, plan()))
    assert "cutoff_len 256 is below" in rules.train_problems(TrainKnobs(cutoff_len=256), plan())[0]
    data = DataKnobs()
    data.max_rows = 0
    assert any("max_rows" in p for p in rules.construction_problems(data, plan()))


@pytest.mark.parametrize("source", ["openai:gpt-4o", "https://api.example.com/v1", "openai-compatible:http://x#m",
                                    "api:claude"])
def test_no_remote_model_api_as_a_source(source):
    problems = rules.plan_problems(plan(sources=[source]), affordable_rows=1000)
    assert problems and "remote model APIs" in problems[0]
    selection = DataSelection(target_behaviours=["t"], risks=["r"],
                              sources=[SourceChoice(name=source, reason="r", max_rows=8)])
    assert "remote model APIs" in rules.selection_problems(selection, plan())[0]


def test_sources_within_the_grammar(tmp_path):
    assert rules.source_problems(["benchmark_train", "hub:org/data"]) == []
    assert "use benchmark_train" in rules.source_problems(["local,"])[0]
    assert "no such file" in rules.source_problems([f"local:{tmp_path}/absent.jsonl"])[0]
    (tmp_path / "x.jsonl").write_text("{}\n")
    assert rules.source_problems([f"local:{tmp_path}/x.jsonl"]) == []


def test_selection_row_caps_stay_within_the_plan():
    selection = DataSelection(target_behaviours=["t"], risks=["r"],
                              sources=[SourceChoice(name="benchmark_train", reason="r", max_rows=500)])
    assert "row caps above the plan's 100 rows" in rules.selection_problems(selection, plan(max_rows=100))[0]
