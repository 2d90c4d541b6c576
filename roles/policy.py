"""The decisions each role makes, as one interface. The rule-based playbook and the LLM agents both implement it,
so the graph and the tools never know which backbone decided."""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from graph.state import (
    Best,
    DataKnobs,
    DataSelection,
    DatasetManifest,
    EvalReport,
    IterationPlan,
    IterationRecord,
    Stage,
    TrainKnobs,
    TrainResult,
    ValidationVerdict,
)
from tools.validate import ValidationFindings


class Evidence(BaseModel):
    """What the planner sees: the run so far and what memory recalls."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    iteration: int
    stage: Stage
    on_gpu: bool
    budget_left_s: float
    baseline: EvalReport
    best: Best
    last_eval: EvalReport | None
    history: list[IterationRecord]
    last_train: TrainResult | None
    last_plan: IterationPlan | None
    memory_hits: list[str] = Field(default_factory=list)
    """Similar past entries, each as "<id>: <text>"."""
    task_description: str = ""
    answer_format: str = ""


class ConstructionRequest(BaseModel):
    knobs: DataKnobs
    exclude_ids: list[str] = Field(default_factory=list)
    note: str = ""


class Policy(Protocol):
    def plan(self, ev: Evidence) -> IterationPlan: ...

    def select(self, plan: IterationPlan, last_verdict: ValidationVerdict | None) -> DataSelection: ...

    def construction(self, plan: IterationPlan, selection: DataSelection,
                     last_verdict: ValidationVerdict | None) -> ConstructionRequest: ...

    def judge(self, findings: ValidationFindings, manifest: DatasetManifest) -> ValidationVerdict: ...

    def train_knobs(self, plan: IterationPlan, manifest: DatasetManifest) -> TrainKnobs: ...

    def analyse(self, plan: IterationPlan, report: EvalReport | None, best_before: Best,
                failure: str | None) -> tuple[str, str]:
        """(analysis, next action) for the log entry."""
        ...
