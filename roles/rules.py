"""The rules that hold whatever decided. Every node applies them to its policy's handoff, playbook or LLM alike;
an LLM agent sees the same problems earlier, as a rejected handoff it can fix.

A handoff that still breaks a rule when it reaches the node is refused: the run stops (exit 3, resumable) rather
than train on contaminated data, on a foreign source, or outside the bounds.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError

from core import sources
from core.errors import GuardViolation
from core.handoffs import (
    HARD_CHECKS,
    DataKnobs,
    DataSelection,
    IterationPlan,
    TrainKnobs,
    ValidationFindings,
    ValidationVerdict,
)


def source_problems(names: list[str]) -> list[str]:
    """Sources must be of a known kind and exist, and never be a remote model API."""
    return [p for p in (sources.problem(n) for n in names) if p]


def bounds_problems(model: DataKnobs | TrainKnobs) -> list[str]:
    """Field bounds, checked again on the object as it is now (an assignment after construction skips them)."""
    try:
        type(model).model_validate(model.model_dump())
    except ValidationError as e:
        return [f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors(include_url=False)]
    return []


def plan_problems(plan: IterationPlan, affordable_rows: int, *, methods: Sequence[str] = ("sft",),
                  can_generate: bool = False, affordable_answers: int | None = None) -> list[str]:
    problems = source_problems(plan.data.sources) + bounds_problems(plan.data) + bounds_problems(plan.train)
    if plan.data.max_rows > affordable_rows:
        problems.append(f"data.max_rows {plan.data.max_rows} is above the {affordable_rows} rows the budget affords")
    return problems + method_problems(plan, methods=methods, can_generate=can_generate,
                                      affordable_answers=affordable_answers)


def method_problems(plan: IterationPlan, *, methods: Sequence[str], can_generate: bool,
                    affordable_answers: int | None) -> list[str]:
    """The method and the data operations must be ones this run can carry out, within the budget."""
    d, problems = plan.data, []
    if plan.method not in methods:
        problems.append(f"method {plan.method} is not available for this benchmark (available: {', '.join(methods)}): "
                        "self_distill and dpo need a scorer that can grade training rows")
    generating = d.augment != "none" or d.synthesize > 0
    if generating and not can_generate:
        problems.append("data.augment and data.synthesize need a local generator (--generator) and a benchmark whose "
                        "prompts are built from free text")
    if generating and plan.method == "dpo":
        problems.append("dpo pairs are the model's own answers: data.augment and data.synthesize apply to sft and "
                        "self_distill")
    sampled = d.questions * d.samples
    if plan.method != "sft" and affordable_answers is not None and sampled > affordable_answers:
        problems.append(f"{d.questions} questions x {d.samples} samples = {sampled} answers to sample, above the "
                        f"{affordable_answers} the budget affords")
    return problems


def selection_problems(selection: DataSelection, plan: IterationPlan) -> list[str]:
    problems = source_problems([s.name for s in selection.sources])
    over = [s.name for s in selection.sources if s.max_rows > plan.data.max_rows]
    if over:
        problems.append(f"row caps above the plan's {plan.data.max_rows} rows: {', '.join(over)}")
    return problems


def construction_problems(knobs: DataKnobs, plan: IterationPlan) -> list[str]:
    problems = source_problems(knobs.sources) + bounds_problems(knobs)
    if knobs.max_rows > plan.data.max_rows:
        problems.append(f"max_rows {knobs.max_rows} is above the plan's {plan.data.max_rows}")
    changed = [k for k in ("augment", "synthesize", "questions", "samples", "sample_temperature", "mixture")
               if getattr(knobs, k) != getattr(plan.data, k)]
    if changed:
        problems.append(f"{', '.join(changed)} differ from the plan's: sampling and generation are the plan's decision")
    return problems


def verdict_problems(verdict: ValidationVerdict, findings: ValidationFindings) -> list[str]:
    """No approval of data that failed structure, alignment or decontamination, or that has no usable row."""
    if verdict.decision != "approve":
        return []
    hard = [c for c in findings.failed() if c in HARD_CHECKS]
    if findings.usable_rows == 0:
        hard.append("usable rows (none)")
    if hard:
        return [f"approve is not allowed: the {', '.join(hard)} check(s) failed; send the data back to "
                "construction or selection"]
    return []


def train_problems(knobs: TrainKnobs, plan: IterationPlan) -> list[str]:
    """Knobs within bounds, and able to train on this iteration's data."""
    problems = bounds_problems(knobs)
    if knobs.cutoff_len < plan.train.cutoff_len:
        problems.append(f"cutoff_len {knobs.cutoff_len} is below the {plan.train.cutoff_len} tokens the data was "
                        "built to fit: answers would be truncated")
    return problems


def enforce(role: str, problems: list[str]) -> None:
    """Refuse a handoff that breaks a rule."""
    if problems:
        raise GuardViolation(f"the {role} handed off a decision that breaks a rule: {'; '.join(problems)}")
