"""The planner: reads the evidence and the experiment memory, and decides what this iteration tries."""

from __future__ import annotations

from core.handoffs import Evidence, IterationPlan
from core.state import ITERATION_FIELDS, RunState
from roles import rules
from roles.budget import affordable_answers, affordable_rows
from roles.context import RunContext


def evidence(state: RunState, ctx: RunContext, iteration: int) -> Evidence:
    last_eval = state.get("eval_report")
    last_train = state.get("last_train") or state.get("train_result")
    last_plan = state.get("plan")
    budget_left = ctx.budget_s - state.get("spent_s", 0.0)
    cap = affordable_rows(budget_left_s=budget_left, last_eval=last_eval or state["baseline"], last_train=last_train,
                          last_plan=last_plan, default_cutoff=ctx.task.train_cutoff, on_gpu=ctx.on_gpu)
    ev = Evidence(
        iteration=iteration, stage=state["stage"], on_gpu=ctx.on_gpu, budget_left_s=budget_left, affordable_rows=cap,
        baseline=state["baseline"], best=state["best"], last_eval=last_eval, history=state.get("history", []),
        last_train=last_train, last_plan=last_plan, task_description=ctx.task.description,
        answer_format=ctx.task.answer_line_hint, default_cutoff=ctx.task.train_cutoff,
        methods=["sft", "self_distill", "dpo"] if ctx.task.grades_training_rows else ["sft"],
        can_generate=bool(ctx.settings.generator) and ctx.task.free_text_prompts,
        affordable_answers=affordable_answers(budget_left, last_eval or state["baseline"]))
    modes = (last_eval or state["baseline"]).failure_modes
    query = "; ".join(f"{m.label} ({m.category})" for m in modes[:3]) or "first iteration"
    hits = ctx.memory.search(query, k=5, kinds=["log_entry", "failure_mode"], where={"task": ctx.task.name})
    ev.memory_hits = [f"{h.id}: {' '.join(h.text.split())[:200]}" for h in hits]
    return ev


def node(state: RunState, ctx: RunContext) -> dict:
    iteration = state.get("iteration", 0) + 1
    ctx.progress.iteration = iteration
    ev = evidence(state, ctx, iteration)
    plan = ctx.policy("planner").plan(ev)
    plan = plan.model_copy(update={"iteration": iteration, "stage": state["stage"]})
    rules.enforce("planner", rules.plan_problems(plan, ev.affordable_rows, methods=ev.methods,
                                                 can_generate=ev.can_generate,
                                                 affordable_answers=ev.affordable_answers))
    paths = ctx.ws.iteration(iteration)
    paths.root.mkdir(parents=True, exist_ok=True)
    paths.plan_md.write_text(render_plan(plan))
    paths.plan_json.write_text(plan.model_dump_json(indent=2))
    ctx.memory.add("plan", f"{ctx.ws.root.name}/plan/{iteration}", render_plan(plan),
                   {"task": ctx.task.name, "iteration": iteration, "stage": int(plan.stage), "role": "planner"})
    ctx.progress(f"plan: {plan.objective} ({len(ev.memory_hits)} memory hits)")
    # A new iteration starts clean: nothing of the last one's data, training or evaluation lingers.
    return {**ITERATION_FIELDS, "iteration": iteration, "plan": plan,
            "last_train": ev.last_train}


def render_plan(plan: IterationPlan) -> str:
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
