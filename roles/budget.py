"""How many training rows (and sampled answers) the time left affords: one estimate each, which the planner's
policy plans within and the planner node holds it to."""

from __future__ import annotations

from core.handoffs import EvalReport, IterationPlan, TrainResult

SECONDS_PER_TOKEN = {False: 2.5 / 384, True: 0.05 / 384}
"""Seconds of full-SFT work per training token before any run has been timed, by device (on GPU or not).
Measured: about 8.7 s per step of 4 rows of up to 384 tokens on 2 CPU cores for the 135M student; about 60 rows of
up to 512 tokens per second on an H100. A row is costed at the plan's cutoff, its upper bound."""
TRAIN_SHARE = 0.35
"""The share of the remaining budget a single training run may take (the evaluation and the next plans need
the rest)."""
MIN_ROWS = 8


def seconds_per_row(last_train: TrainResult | None, cutoff_len: int, on_gpu: bool) -> float:
    """From the last timed run when there is one (its rows and epochs as it ran them), else the device default."""
    if last_train is not None and last_train.rows:
        epochs = last_train.knobs.epochs if last_train.knobs else 1.0
        return last_train.runtime_s / max(1.0, last_train.rows * epochs)
    return SECONDS_PER_TOKEN[on_gpu] * cutoff_len


def affordable_rows(*, budget_left_s: float, last_eval: EvalReport, last_train: TrainResult | None,
                    last_plan: IterationPlan | None, default_cutoff: int, on_gpu: bool) -> int:
    cutoff = last_plan.train.cutoff_len if last_plan else default_cutoff
    left = max(0.0, budget_left_s - last_eval.runtime_s)  # the next evaluation costs about as much as the last
    return max(MIN_ROWS, int(left * TRAIN_SHARE / seconds_per_row(last_train, cutoff, on_gpu)))


SAMPLING_SHARE = 0.25
"""The share of the remaining budget sampling the model's own answers may take (self-distillation, DPO)."""


def affordable_answers(budget_left_s: float, last_eval: EvalReport) -> int:
    """Answers the model can sample in its share of the time left, at the last evaluation's seconds per sample
    (sampling runs through the same provider, with the same max_tokens)."""
    per_answer = last_eval.runtime_s / max(1, last_eval.n)
    left = max(0.0, budget_left_s - last_eval.runtime_s)
    return int(left * SAMPLING_SHARE / per_answer) if per_answer > 0 else 0
