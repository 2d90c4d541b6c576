"""The post-training graph: stage 0 and 1 once, then plan → data (with its return edges) → train → eval → log."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from core.state import InputState, RunState
from graph.checkpoints import checkpoint_serde, run_to_end  # noqa: F401  (part of the graph's interface)
from roles import data_engineer, evaluator, logger, planner, task_definition, trainer
from roles.context import RunContext

NodeFn = Callable[[RunState, RunContext], dict]


def _node(role: str, fn: NodeFn):
    """Wrap a role: progress line on entry, time accounting on exit (the budget counts work, not downtime)."""

    def run(state: RunState, runtime: Runtime[RunContext]) -> dict:
        ctx = runtime.context
        ctx.progress.enter(role, state)
        if ctx.meter is not None:  # the cap counts every token the run spent before this node too
            ctx.meter.start_node(sum(u.total for u in (state.get("llm_tokens") or {}).values()))
        t0 = time.time()
        update = fn(state, ctx)
        dt = time.time() - t0
        tokens = ctx.meter.take() if ctx.meter is not None else {}
        return {**update, "spent_s": state.get("spent_s", 0.0) + dt, "role_seconds": {role: dt},
                **({"llm_tokens": tokens} if tokens else {})}

    run.__name__ = role
    return run


def stop_reason(state: RunState, ctx: RunContext) -> str | None:
    """Why the run must stop now, if it must: the target, the budget or the iteration cap."""
    s = ctx.settings
    best = state.get("best")
    if s.target is not None and best is not None and best.score >= s.target:
        return f"target {s.target} reached ({best.score:.3f})"
    if state.get("spent_s", 0.0) >= ctx.budget_s:
        return f"time budget of {s.hours:g} h spent"
    if state.get("iteration", 0) >= s.max_iterations:
        return f"iteration cap {s.max_iterations} reached"
    return None


def route_continue(state: RunState, runtime: Runtime[RunContext]) -> Literal["planner", "final_evaluation"]:
    return "final_evaluation" if stop_reason(state, runtime.context) else "planner"


def route_verdict(state: RunState, runtime: Runtime[RunContext]) -> Literal[
        "trainer", "data_construction", "data_selection", "logger"]:
    decision = state["verdict"].decision
    if decision == "approve":
        return "trainer"
    if state.get("data_rounds", 0) >= runtime.context.settings.max_data_rounds:
        return "logger"  # the iteration is logged as failed rather than looping forever
    return "data_construction" if decision == "back_to_construction" else "data_selection"


def route_trained(state: RunState) -> Literal["evaluator", "logger"]:
    return "logger" if state.get("failure") else "evaluator"


def final_node(state: RunState, ctx: RunContext) -> dict:
    # stop_reason is the run's end marker: only this node sets it.
    return {**evaluator.final(state, ctx), "stop_reason": stop_reason(state, ctx) or "stopped"}


def builder() -> StateGraph:
    """The uncompiled graph, so tests can compile it with their own checkpointer."""
    g = StateGraph(RunState, context_schema=RunContext, input_schema=InputState)
    nodes = {
        "task_definition": task_definition.node, "baseline_evaluation": evaluator.baseline,
        "planner": planner.node, "data_selection": data_engineer.selection,
        "data_construction": data_engineer.construction, "data_validation": data_engineer.validation,
        "trainer": trainer.node, "evaluator": evaluator.node, "logger": logger.node, "final_evaluation": final_node,
    }
    for name, fn in nodes.items():
        g.add_node(name, _node(name, fn))
    g.add_edge(START, "task_definition")
    g.add_edge("task_definition", "baseline_evaluation")
    g.add_conditional_edges("baseline_evaluation", route_continue)
    g.add_edge("planner", "data_selection")
    g.add_edge("data_selection", "data_construction")
    g.add_edge("data_construction", "data_validation")
    g.add_conditional_edges("data_validation", route_verdict)
    g.add_conditional_edges("trainer", route_trained)
    g.add_edge("evaluator", "logger")
    g.add_conditional_edges("logger", route_continue)
    g.add_edge("final_evaluation", END)
    return g
