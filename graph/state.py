"""The one typed state of a run, and the typed handoffs that the roles pass each other.

The graph routes on these objects; a rule-based playbook and an LLM agent produce exactly the same ones.
"""

from __future__ import annotations

import operator
from enum import IntEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict


class Stage(IntEnum):
    TASK_DEFINITION = 0
    BASELINE = 1
    LOCAL = 2
    EXPLORATION = 3


class Handoff(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataKnobs(Handoff):
    """What the plan asks of the data engineer."""

    sources: list[str] = Field(default_factory=lambda: ["benchmark_train"])
    max_rows: int = Field(256, ge=1, le=2_000_000)
    with_system: bool = False
    """Prepend the evaluation's own system message (the few-shot block) to every training prompt."""
    strip_annotations: bool = True
    """Drop GSM8K-style calculator notes (<<...>>) that the evaluation never shows."""
    rewrite_answers: bool = True
    """Rewrite each source answer into the evaluation's answer format (off: keep the source's own text)."""
    seed: int = 0


class TrainKnobs(Handoff):
    """What the plan asks of the trainer. Generation settings are deliberately absent (hard rule)."""

    start_from: Literal["base", "best"] = "base"
    learning_rate: float = Field(2e-5, gt=0, le=1e-3)
    epochs: float = Field(1.0, gt=0, le=20)
    batch_size: int = Field(4, ge=1, le=256)
    cutoff_len: int = Field(384, ge=64, le=32768)
    finetuning_type: Literal["full", "lora"] = "full"


class IterationPlan(Handoff):
    iteration: int
    stage: Stage
    problems: list[str]
    objective: str
    changes: list[str]
    change_kind: Literal["data", "training", "both"]
    success_criterion: str
    references: list[str] = Field(default_factory=list)
    """Memory entries the plan drew on, by id and a short quote."""
    data: DataKnobs = Field(default_factory=DataKnobs)
    train: TrainKnobs = Field(default_factory=TrainKnobs)


class SourceChoice(Handoff):
    name: str
    reason: str
    max_rows: int


class DataSelection(Handoff):
    target_behaviours: list[str]
    sources: list[SourceChoice]
    risks: list[str]


class OpCount(Handoff):
    op: str
    rows_after: int


class DatasetManifest(Handoff):
    dataset_dir: str
    dataset_name: str
    rows: int
    sources: list[str]
    operations: list[OpCount]
    content_sha256: str
    with_system: bool
    attempt: int


class Check(Handoff):
    name: Literal["structure", "alignment", "content", "decontamination"]
    passed: bool
    detail: str


class ValidationVerdict(Handoff):
    decision: Literal["approve", "back_to_construction", "back_to_selection"]
    reasons: list[str]
    checks: list[Check]
    contaminated_ids: list[str] = Field(default_factory=list)


class TrainResult(Handoff):
    model_dir: str
    start_checkpoint: str
    lineage: list[str]
    """From the base model to this checkpoint; every element is the base or a checkpoint of this workspace."""
    config_path: str
    command: str
    log_path: str
    train_loss: float | None
    runtime_s: float
    steps: int
    validation_run: str
    knobs: TrainKnobs | None = None
    """What the trainer actually ran with (it may change the plan's knobs within bounds)."""


class FailureMode(Handoff):
    label: str
    category: Literal["data", "training", "inference_template"]
    count: int
    examples: list[str]


class EvalReport(Handoff):
    model_dir: str
    model_sha256: str
    accuracy: float
    stderr: float
    n: int
    limit: int
    canonical: bool
    max_tokens: int
    provider: str
    log_path: str
    metrics_path: str
    summary_path: str
    failure_modes: list[FailureMode]
    runtime_s: float


class LogEntry(Handoff):
    iteration: int
    title: str
    stage: Stage
    context: str
    status: Literal["completed", "failed", "blocked"]
    motivation: str
    references: str
    starting_checkpoint: str
    training_data: str
    method: str
    training_config: str
    evaluation: str
    result: str
    analysis: str
    artifacts: str
    next_action: str


class IterationRecord(Handoff):
    """One row of the run's history: what the planner and the final table read."""

    iteration: int
    stage: Stage
    objective: str
    rows: int
    method: str
    score: float | None
    delta_vs_base: float | None
    kept: bool
    status: Literal["completed", "failed", "blocked"]


class Best(Handoff):
    model_dir: str
    score: float
    iteration: int


class InputState(TypedDict):
    """What a run is started with; everything else comes from the run settings and the work done."""

    stage: Stage


class RunState(InputState, total=False):
    iteration: int
    spent_s: float
    """Seconds of work done so far; downtime between a crash and --resume does not count against the budget."""
    role_seconds: Annotated[dict[str, float], lambda a, b: {k: a.get(k, 0) + b.get(k, 0) for k in a | b}]
    baseline: EvalReport
    best: Best
    plan: IterationPlan
    selection: DataSelection
    manifest: DatasetManifest
    verdict: ValidationVerdict
    data_rounds: int
    train_result: TrainResult
    eval_report: EvalReport
    failure: str | None
    """Why the current iteration could not finish (training crashed, data never approved); None when it did."""
    final_eval: EvalReport
    history: Annotated[list[IterationRecord], operator.add]
    stop_reason: str
