"""The rules that hold whatever decided. Every node applies them to its policy's handoff, playbook or LLM alike;
an LLM agent sees the same problems earlier, as a rejected handoff it can fix.

A handoff that still breaks a rule when it reaches the node is refused: the run stops (exit 3, resumable) rather
than train on contaminated data, on a foreign source, or outside the bounds.
"""

from __future__ import annotations

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


def plan_problems(plan: IterationPlan, affordable_rows: int) -> list[str]:
    problems = source_problems(plan.data.sources) + bounds_problems(plan.data) + bounds_problems(plan.train)
    if plan.data.max_rows > affordable_rows:
        problems.append(f"data.max_rows {plan.data.max_rows} is above the {affordable_rows} rows the budget affords")
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
