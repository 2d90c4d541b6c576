"""The typed objects the roles hand each other. The graph routes on them; the rule-based playbook and an LLM agent
produce exactly the same ones.

Field docstrings are the documentation and, through `use_attribute_docstrings`, the descriptions an LLM sees in
its handoff schema: one text per field, in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Stage(IntEnum):
    TASK_DEFINITION = 0
    BASELINE = 1
    LOCAL = 2
    EXPLORATION = 3


class Handoff(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class DataKnobs(Handoff):
    """What the plan asks of the data engineer."""

    sources: list[str] = Field(default_factory=lambda: ["benchmark_train"])
    """Data sources: benchmark_train (the benchmark's own training source, never its test set),
    local:<path.jsonl> or hub:<dataset>."""
    max_rows: int = Field(256, ge=1, le=2_000_000)
    """Training rows to build, within what the budget affords."""
    with_system: bool = False
    """Prepend the evaluation's own system message (for example its few-shot block) to every training prompt."""
    rewrite_answers: bool = True
    """Rewrite each source answer into the evaluation's answer format (false keeps the source's own text)."""
    seed: int = 0
    """Which rows are drawn; change it to get fresh rows."""
    options: dict[str, bool] = Field(default_factory=dict)
    """The benchmark's own construction switches, by name (see the task's construction options); unset ones take
    the task's defaults."""
    mixture: dict[str, float] = Field(default_factory=dict)
    """Share of the rows each source gives, by source name (the rest split evenly); empty: sources in turn."""
    difficulty: Literal["any", "easier", "harder"] = "any"
    """Keep the easier or the harder third of the rows: by the model's own pass rate where it was sampled, else
    by the length of the reference solution."""
    augment: Literal["none", "paraphrase", "alt_solution", "harder"] = "none"
    """Add, for each kept row, a variant written by the generator (a local model): the question reworded, another
    worked solution, or a harder question of the same kind. Needs --generator."""
    synthesize: int = Field(0, ge=0, le=100_000)
    """New rows the generator writes in the benchmark's format, from a few kept rows as examples. Needs
    --generator."""
    questions: int = Field(64, ge=1, le=100_000)
    """Self-distillation and DPO: training questions the model answers, `samples` times each (the rows come from
    its answers, so max_rows caps them and this sizes the sampling)."""
    samples: int = Field(4, ge=2, le=16)
    """Self-distillation and DPO: answers sampled from the model per training question."""
    sample_temperature: float = Field(0.8, gt=0, le=1.5)
    """Self-distillation and DPO: the sampling temperature of those answers."""

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data: Any) -> Any:
        # Checkpoints written before the task interface held a benchmark's switches as fields of their own: any
        # unknown boolean field is such a switch, and becomes an option of the same name.
        if isinstance(data, dict):
            legacy = {k: v for k, v in data.items() if k not in cls.model_fields and isinstance(v, bool)}
            if legacy:
                data = {k: v for k, v in data.items() if k not in legacy}
                data["options"] = {**legacy, **data.get("options", {})}
        return data


class TrainKnobs(Handoff):
    """What the plan asks of the trainer. Generation settings are deliberately absent (hard rule)."""

    start_from: Literal["base", "best"] = "base"
    """Start from the base model, or from the best checkpoint so far."""
    learning_rate: float = Field(2e-5, gt=0, le=1e-3)
    """Peak learning rate."""
    epochs: float = Field(1.0, gt=0, le=20)
    """Passes over the training data."""
    batch_size: int = Field(4, ge=1, le=256)
    """Rows per device step."""
    cutoff_len: int = Field(384, ge=64, le=32768)
    """Longest training sequence in tokens; never below what the data was built for."""
    finetuning_type: Literal["full", "lora"] = "full"
    """Full fine-tuning or LoRA."""


class IterationPlan(Handoff):
    iteration: int
    stage: Stage
    problems: list[str]
    """The main problems observed, with their evidence (counts, scores)."""
    objective: str
    """The one thing this iteration tries to improve, as a hypothesis."""
    changes: list[str]
    """Concrete planned changes."""
    change_kind: Literal["data", "training", "both"]
    """What the changes mainly touch."""
    success_criterion: str
    """The measurable outcome that counts as success."""
    references: list[str] = Field(default_factory=list)
    """Memory entries the plan drew on, by id and a short quote."""
    method: Literal["sft", "self_distill", "dpo"] = "sft"
    """sft: fine-tune on the built rows; self_distill: sample the model's own answers to training questions and
    fine-tune on the ones the benchmark's scorer marks right; dpo: preference training on pairs of its own right and
    wrong answers to the same question."""
    data: DataKnobs = Field(default_factory=DataKnobs)
    train: TrainKnobs = Field(default_factory=TrainKnobs)


class SourceChoice(Handoff):
    name: str
    """benchmark_train, local:<path.jsonl> or hub:<dataset>."""
    reason: str
    """Why this source supports the target behaviours."""
    max_rows: int
    """Row cap for this source."""


class DataSelection(Handoff):
    target_behaviours: list[str]
    """Behaviours the new data must teach."""
    sources: list[SourceChoice]
    """Sources to build from."""
    risks: list[str]
    """Risks construction must handle."""


class OpCount(Handoff):
    op: str
    rows_after: int


class Sampling(Handoff):
    """How the model's own answers were sampled for self-distillation or DPO, and what came of them."""

    model_dir: str
    samples: int
    """Answers per question (k)."""
    temperature: float
    questions: int
    pass_rate: float
    """Share of all sampled answers the benchmark's scorer marked correct."""
    kept_per_question: dict[str, int] = Field(default_factory=dict)
    """How many questions gave 0, 1, 2, ... training rows (unique correct answers, or pairs)."""
    seconds: float = 0.0


class Generation(Handoff):
    """What the generator was asked for, and how many of its candidates survived."""

    generator: str
    mode: str
    asked: int
    kept: int
    dropped: dict[str, int] = Field(default_factory=dict)
    """Why candidates were dropped (test-set n-gram overlap included), with counts."""


class DatasetManifest(Handoff):
    dataset_dir: str
    dataset_name: str
    rows: int
    sources: list[str]
    operations: list[OpCount]
    content_sha256: str
    with_system: bool
    attempt: int
    method: Literal["sft", "self_distill", "dpo"] = "sft"
    pairwise: bool = False
    """Rows are (prompt, chosen, rejected) preference pairs (DPO) instead of (prompt, response)."""
    mixture: dict[str, int] = Field(default_factory=dict)
    """Rows each source gave, as built (generated rows count under "generated")."""
    sampling: Sampling | None = None
    generation: list[Generation] = Field(default_factory=list)
    generated_rows: list[dict[str, str]] = Field(default_factory=list)
    """Provenance of each generated row: its id, the generator, the prompt template and the source row(s)."""


class Check(Handoff):
    name: Literal["structure", "alignment", "content", "decontamination"]
    passed: bool
    detail: str


HARD_CHECKS = ("structure", "alignment", "decontamination")
"""Validation checks that must pass for an approval: broken rows, rows unlike the evaluation, test leakage."""


class ValidationVerdict(Handoff):
    decision: Literal["approve", "back_to_construction", "back_to_selection"]
    """approve only when every check passed."""
    reasons: list[str]
    """One reason per problem, naming the check and its detail."""
    checks: list[Check]
    contaminated_ids: list[str] = Field(default_factory=list)
    """Source ids of the training rows that share an n-gram with the test set (construction leaves them out)."""


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
    rows: int | None = None
    """Training rows of this run (None in checkpoints written before it was recorded)."""
    recipe: str = ""
    """Why this training recipe (GPU only: full, ZeRO-2/3, offload or LoRA, and the micro-batch) was chosen."""


class FailureMode(Handoff):
    label: str
    category: Literal["data", "training", "inference_template"]
    count: int
    examples: list[str]


class Comparison(Handoff):
    """One evaluation against another on the same samples (see tools.compare)."""

    against: str
    """What the new evaluation is compared with (e.g. "best so far (iteration 1)", "base model")."""
    n: int
    """Samples both evaluations scored."""
    diff: float
    """Mean paired difference, new minus old."""
    low: float
    high: float
    """95% interval of the difference (paired bootstrap)."""
    better: int
    worse: int
    """Samples the new model scored higher / lower on."""

    def text(self) -> str:
        return (f"{self.diff:+.4f} [{self.low:+.4f}, {self.high:+.4f}] vs {self.against} on {self.n} paired samples "
                f"({self.better} better, {self.worse} worse)")


class EvalReport(Handoff):
    model_dir: str
    model_sha256: str
    accuracy: float
    """The benchmark's headline score, in [0, 1] (accuracy for most tasks; the task names its metric)."""
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
    metric: str = "accuracy"
    """What `accuracy` measures, as the task names it."""
    samples: dict[str, float] = Field(default_factory=dict)
    """Per-sample scores by sample id: what paired comparisons read."""
    vs: Comparison | None = None
    """The paired comparison this evaluation was judged by (an iteration: against the best so far)."""


class TokenUsage(Handoff):
    """What LLM backbone calls cost, in tokens."""

    calls: int = 0
    input: int = 0
    output: int = 0
    cached: int = 0
    """Input tokens the server read from its prompt cache (a part of `input`)."""

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(calls=self.calls + other.calls, input=self.input + other.input,
                          output=self.output + other.output, cached=self.cached + other.cached)

    @property
    def total(self) -> int:
        return self.input + self.output


class FinalResult(Handoff):
    """The run's closing measurement of final_model/, apart from the development scores that chose it."""

    kind: Literal["held-out", "full", "skipped"]
    """held-out: CPU, samples no decision saw; full: PostTrainBench's final protocol; skipped: see `note`."""
    model: EvalReport | None = None
    base: EvalReport | None = None
    """The base model on the same samples."""
    comparison: Comparison | None = None
    """final_model/ against the base, sample by sample."""
    identity: str = ""
    """What the weight check found (final_model/ derives from the base model, or why it was refused)."""
    fallback: bool = False
    """True when the score is the base model's, because final_model/ was refused or every attempt failed."""
    note: str = ""


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
    strategies: list[str] = Field(default_factory=list)
    """The seed paper's strategy codes this iteration used (D1-D6, T1-T3, O1-O3, U1-U7, P1-P4; see
    roles/strategies.py)."""


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
    vs: Comparison | None = None
    """The iteration against the best before it, on the same samples."""
    strategies: list[str] = Field(default_factory=list)
    """The seed paper's strategy codes this iteration used."""


class Best(Handoff):
    model_dir: str
    score: float
    iteration: int


class Evidence(BaseModel):
    """What the planner sees: the run so far and what memory recalls."""

    iteration: int
    stage: Stage
    on_gpu: bool
    budget_left_s: float
    affordable_rows: int
    """The most training rows one iteration can use within the budget left (the node holds plans to it)."""
    baseline: EvalReport
    best: Best
    last_eval: EvalReport | None
    """The previous iteration's evaluation; None when it failed before evaluation, or at the first iteration."""
    history: list[IterationRecord]
    last_train: TrainResult | None
    """The most recent training run that finished (rows and knobs included), if any."""
    last_plan: IterationPlan | None
    memory_hits: list[str] = Field(default_factory=list)
    """Similar past entries, each as "<id>: <text>"."""
    task_description: str = ""
    answer_format: str = ""
    default_cutoff: int = 384
    """The training cutoff the task suggests for its rows (tokens), for a first plan."""
    methods: list[str] = Field(default_factory=lambda: ["sft"])
    """The training methods this benchmark allows: self_distill and dpo need a scorer that grades training rows."""
    can_generate: bool = False
    """A local generator is configured and the benchmark's prompts are built from free text: augment and
    synthesize are available."""
    affordable_answers: int = 0
    """Answers the model can sample within a quarter of the budget left, at the last evaluation's speed."""


class ConstructionRequest(BaseModel):
    knobs: DataKnobs
    exclude_ids: list[str] = Field(default_factory=list)
    """Test ids whose contaminated training rows are left out."""
    note: str = ""


@dataclass
class ValidationFindings:
    """What the validation checks measured; which way the data goes next is the validation role's decision."""

    checks: list[Check]
    usable_rows: int
    contaminated: dict[str, list[str]] = field(default_factory=dict)
    """Training source id → the test ids it shares an n-gram with."""
    report_md: str = ""

    def check(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    def failed(self) -> list[str]:
        return [c.name for c in self.checks if not c.passed]

    def contaminated_rows(self) -> list[str]:
        return sorted(self.contaminated)

    def contaminated_test_ids(self) -> list[str]:
        return sorted({t for ids in self.contaminated.values() for t in ids})
