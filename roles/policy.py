"""The decisions each role makes, as one interface. The rule-based playbook and the LLM agents both implement it,
so the graph and the tools never know which backbone decided; the nodes apply the rules (`roles.rules`) to
whatever it returns."""

from __future__ import annotations

from typing import Protocol

from core.handoffs import (
    Best,
    ConstructionRequest,
    DataSelection,
    DatasetManifest,
    EvalReport,
    Evidence,
    IterationPlan,
    TrainKnobs,
    ValidationFindings,
    ValidationVerdict,
)


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
