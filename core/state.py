"""The one typed state of a run, with its named reducers, and the fields that belong to one iteration."""

from __future__ import annotations

from typing import Annotated, Any

from typing_extensions import TypedDict

from core.handoffs import (
    Best,
    DataSelection,
    DatasetManifest,
    EvalReport,
    FinalResult,
    IterationPlan,
    IterationRecord,
    Stage,
    TokenUsage,
    TrainResult,
    ValidationVerdict,
)


def add_seconds(left: dict[str, float], right: dict[str, float]) -> dict[str, float]:
    """Per-role seconds: each node adds its own time."""
    return {k: left.get(k, 0) + right.get(k, 0) for k in left | right}


def add_usage(left: dict[str, TokenUsage], right: dict[str, TokenUsage]) -> dict[str, TokenUsage]:
    """LLM tokens per role: each node adds what its decisions cost."""
    return {k: left.get(k, TokenUsage()) + right.get(k, TokenUsage()) for k in left | right}


def append_records(left: list[IterationRecord], right: list[IterationRecord]) -> list[IterationRecord]:
    """The history only grows: the logger appends one record per iteration."""
    return left + right


class InputState(TypedDict):
    """What a run is started with; everything else comes from the run settings and the work done."""

    stage: Stage


DATA_FAILURE = "data not approved"
"""How an iteration's failure text starts when validation never approved its data."""


class RunState(InputState, total=False):
    iteration: int
    spent_s: float
    """Seconds of work done so far; downtime between a crash and --resume does not count against the budget."""
    role_seconds: Annotated[dict[str, float], add_seconds]
    llm_tokens: Annotated[dict[str, TokenUsage], add_usage]
    """Tokens the LLM backbones spent, per role (the playbook spends none)."""
    baseline: EvalReport
    best: Best
    history: Annotated[list[IterationRecord], append_records]
    final_eval: EvalReport
    final: FinalResult
    """The closing measurement (held-out on CPU, the final protocol on GPU)."""
    stop_reason: str
    """Set by the final node only: the run's end marker (a state without it has work left, whatever else it holds)."""
    # One iteration's work; see ITERATION_FIELDS.
    plan: IterationPlan
    selection: DataSelection | None
    manifest: DatasetManifest | None
    verdict: ValidationVerdict | None
    data_rounds: int
    excluded_ids: list[str]
    """Test ids whose contaminated rows every rebuild of this iteration leaves out (they accumulate)."""
    train_result: TrainResult | None
    eval_report: EvalReport | None
    failure: str | None
    """Why the current iteration could not finish (training crashed; data never approved, text starting with
    DATA_FAILURE); None when it did."""
    last_train: TrainResult | None
    """The latest finished training run of any iteration: the planner's speed estimate reads it."""


ITERATION_FIELDS: dict[str, Any] = {
    "selection": None, "manifest": None, "verdict": None, "data_rounds": 0, "excluded_ids": [],
    "train_result": None, "eval_report": None, "failure": None,
}
"""What one iteration produces, and its value when the planner starts the next: nothing lingers from the last."""
