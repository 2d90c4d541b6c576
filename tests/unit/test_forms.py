"""The handoff forms an LLM fills: bounds, defaults, enums for weak models, the task's own options, and descriptions
taken from the handoffs' docstrings (one text per field)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core import sources
from core.handoffs import DataKnobs, IterationPlan, Stage, TrainKnobs
from roles.agent.briefs import describe_form
from roles.agent.forms import (
    TRAIN_GRID,
    AnalysisForm,
    VerdictForm,
    construction_form,
    data_knobs,
    plan_form,
    selection_form,
    train_form,
)

OPTIONS = {"shout": (False, "Write the question in capitals.")}


def last_plan() -> IterationPlan:
    return IterationPlan(iteration=1, stage=Stage.LOCAL, problems=["p"], objective="o", changes=["c"],
                         change_kind="data", success_criterion="s",
                         data=DataKnobs(max_rows=50, seed=3, options={"shout": True}), train=TrainKnobs(epochs=2.0))


def test_plan_form_caps_rows_keeps_current_values_and_documents_fields():
    form = plan_form(last_plan(), cap=40, options=OPTIONS)
    schema = form.model_json_schema()
    data = schema["$defs"]["PlanData"]["properties"]
    assert data["max_rows"]["maximum"] == 40 and data["max_rows"]["default"] == 40  # the old 50 is capped
    assert data["seed"]["default"] == 3
    assert data["with_system"]["description"] == DataKnobs.model_fields["with_system"].description
    assert schema["$defs"]["DataOptions"]["properties"]["shout"] == {
        "default": True, "description": "Write the question in capitals.", "title": "Shout", "type": "boolean"}
    assert schema["$defs"]["PlanTrain"]["properties"]["epochs"]["default"] == 2.0
    with pytest.raises(ValidationError):
        form.model_validate({"problems": ["p"], "objective": "o", "changes": ["c"], "change_kind": "data",
                             "success_criterion": "s", "data": {"max_rows": 41}})
    filled = form.model_validate({"problems": ["p"], "objective": "o", "changes": ["c"], "change_kind": "data",
                                  "success_criterion": "s"})
    plan = IterationPlan(iteration=2, stage=Stage.LOCAL, **filled.model_dump())
    assert plan.data.options == {"shout": True} and plan.data.max_rows == 40


def test_weak_models_get_enums_and_strong_ones_a_pattern():
    grid = plan_form(None, 100, grid=True).model_json_schema()["$defs"]
    assert grid["PlanData"]["properties"]["sources"]["items"]["enum"] == ["benchmark_train"]
    assert grid["PlanTrain"]["properties"]["learning_rate"]["enum"] == sorted({*TRAIN_GRID["learning_rate"], 2e-5})
    free = plan_form(None, 100).model_json_schema()["$defs"]["PlanData"]["properties"]["sources"]["items"]
    assert free["pattern"] == sources.PATTERN
    name = selection_form(64, ["local:/x.jsonl"], grid=True).model_json_schema()["$defs"]["SourceForm"]
    assert name["properties"]["name"]["enum"] == ["benchmark_train", "local:/x.jsonl"]


def test_construction_form_cannot_exceed_the_plans_rows_and_returns_knobs():
    form = construction_form(DataKnobs(max_rows=30), OPTIONS)
    with pytest.raises(ValidationError):
        form.model_validate({"knobs": {"max_rows": 31}, "note": "n"})
    filled = form.model_validate({"knobs": {"max_rows": 20, "options": {"shout": True}}, "note": "n"})
    knobs = data_knobs(filled.knobs, sources=["benchmark_train"])
    assert knobs == DataKnobs(sources=["benchmark_train"], max_rows=20, options={"shout": True})


def test_train_form_floors_the_cutoff_at_the_datas():
    form = train_form(TrainKnobs(cutoff_len=512), grid=True)
    assert min(form.model_json_schema()["properties"]["cutoff_len"]["enum"]) == 512
    with pytest.raises(ValidationError):
        form.model_validate({"cutoff_len": 256})


def test_verdict_and_analysis_forms():
    assert VerdictForm(decision="approve", reasons=["all checks pass"]).decision == "approve"
    with pytest.raises(ValidationError):
        VerdictForm(decision="maybe", reasons=["x"])
    with pytest.raises(ValidationError):
        AnalysisForm(analysis="", next_action="n")
    assert VerdictForm.model_json_schema()["properties"]["decision"]["description"].startswith("approve only")


def test_the_form_described_for_small_models_lists_every_field_with_its_bounds():
    text = describe_form(plan_form(None, 77, OPTIONS))
    assert "`data.max_rows` (integer, ≥ 1, ≤ 77" in text and "`data.options.shout` (boolean" in text
    assert "`train.learning_rate` (number, > 0, ≤ 0.001" in text
