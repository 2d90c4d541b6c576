"""The planner: reads the evidence and the experiment memory, and decides what this iteration tries."""

from __future__ import annotations

from graph.context import RunContext
from roles.policy import Evidence


def evidence(state: dict, ctx: RunContext, iteration: int) -> Evidence:
    last_eval = state.get("eval_report")
    ev = Evidence(
        iteration=iteration, stage=state["stage"], on_gpu=ctx.on_gpu,
        budget_left_s=ctx.budget_s - state.get("spent_s", 0.0), baseline=state["baseline"], best=state["best"],
        last_eval=last_eval, history=state.get("history", []), last_train=state.get("train_result"),
        last_plan=state.get("plan"), task_description=ctx.task.description, answer_format=ctx.task.answer_line_hint)
    modes = (last_eval or state["baseline"]).failure_modes
    query = "; ".join(f"{m.label} ({m.category})" for m in modes[:3]) or "first iteration"
    hits = ctx.memory.search(query, k=5, kinds=["log_entry", "failure_mode"], where={"task": ctx.task.name})
    ev.memory_hits = [f"{h.id}: {' '.join(h.text.split())[:200]}" for h in hits]
    return ev


def node(state: dict, ctx: RunContext) -> dict:
    iteration = state.get("iteration", 0) + 1
    ctx.progress.iteration = iteration
    ev = evidence(state, ctx, iteration)
    plan = ctx.policy("planner").plan(ev)
    plan = plan.model_copy(update={"iteration": iteration, "stage": state["stage"]})
    out = ctx.ws.iteration_dir(iteration)
    out.mkdir(parents=True, exist_ok=True)
    (out / "iteration_plan.md").write_text(render_plan(plan))
    ctx.memory.add("plan", f"{ctx.ws.root.name}/plan/{iteration}", render_plan(plan),
                   {"task": ctx.task.name, "iteration": iteration, "stage": int(plan.stage), "role": "planner"})
    ctx.progress(f"plan: {plan.objective} ({len(ev.memory_hits)} memory hits)")
    return {"iteration": iteration, "plan": plan, "data_rounds": 0, "failure": None}


def render_plan(plan) -> str:
    bullets = lambda xs: "\n".join(f"- {x}" for x in xs) or "- None"  # noqa: E731
    return f"""# Iteration {plan.iteration} plan (stage {int(plan.stage)})

## Problems observed
{bullets(plan.problems)}

## Objective
{plan.objective}

## Planned changes ({plan.change_kind})
{bullets(plan.changes)}

## Success criterion
{plan.success_criterion}

## References (experiment memory)
{bullets(plan.references)}

## Guidance for data and training
- data: {plan.data.model_dump_json()}
- training: {plan.train.model_dump_json()}
"""
