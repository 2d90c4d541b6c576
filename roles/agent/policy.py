"""LLM-driven roles: one LangGraph tool-calling agent per role decision, behind the same `Policy` interface as the
playbook, so the graph never knows which backbone decided.

Each decision is a small loop (`roles.agent.loop`): the model reads its inputs, may call its role's tools, and ends
by calling `handoff`, whose arguments schema is a bounded form of the role's typed output (`roles.agent.forms`).
The form is validated by pydantic, then by the rules every node applies (`roles.rules`); a rejected handoff goes
back to the model with the reasons, a bounded number of times, and then the decision fails with `HandoffFailed`.
Facts the agent does not decide (the iteration, the stage, the validation checks, the contaminated ids) are filled
in from the inputs, never taken from the model.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from core.errors import InvalidHandoff
from core.handoffs import (
    Best,
    ConstructionRequest,
    DataSelection,
    DatasetManifest,
    EvalReport,
    Evidence,
    IterationPlan,
    SourceChoice,
    TrainKnobs,
    ValidationFindings,
    ValidationVerdict,
)
from roles import rules
from roles.agent import briefs, forms
from roles.agent.briefs import section

if TYPE_CHECKING:
    from roles.agent.loop import AgentLoop
    from roles.agent.tools import ToolEnv
    from roles.context import RunContext
    from roles.llm import Backbone

T = TypeVar("T")

MAX_STEPS = 8
"""Model calls per decision; from the last of them on, only the handoff can be called."""
MAX_INVALID = 3
"""Rejected handoffs that are asked for again; the next one fails the decision."""


def _check(problems: list[str]) -> None:
    if problems:
        raise InvalidHandoff(problems)


class AgentPolicy:
    """The `Policy` of one role, decided by an LLM backbone through that role's tools."""

    def __init__(self, role: str, backbone: Backbone, *, max_steps: int = MAX_STEPS,
                 max_invalid: int = MAX_INVALID):
        self.role, self.backbone = role, backbone
        self.max_steps, self.max_invalid = max_steps, max_invalid
        self.name = backbone.spec
        self._ctx: RunContext | None = None

    def __repr__(self) -> str:
        return f"AgentPolicy(role={self.role!r}, backbone={self.backbone.spec!r})"

    def attach(self, ctx: RunContext) -> None:
        """Give the tools the run's task and memory (the policies are built before the run context)."""
        self._ctx = ctx

    def _env(self, **inputs: Any) -> ToolEnv:
        from roles.agent.tools import ToolEnv

        ctx = self._ctx
        return ToolEnv(role=self.role, task=ctx.task if ctx else None, memory=ctx.memory if ctx else None, **inputs)

    def _options(self) -> forms.Options:
        return self._ctx.task.construction_options if self._ctx else {}

    # -- Policy methods ------------------------------------------------------------------------------------

    def plan(self, ev: Evidence) -> IterationPlan:
        cap = ev.affordable_rows
        form = forms.plan_form(ev.last_plan, cap, self._options(), grid=self.backbone.force_handoff,
                               methods=ev.methods, can_generate=ev.can_generate)

        def finish(f: BaseModel) -> IterationPlan:
            fields = f.model_dump()
            plan = IterationPlan(iteration=ev.iteration, stage=ev.stage, **fields)
            _check(rules.plan_problems(plan, cap, methods=ev.methods, can_generate=ev.can_generate,
                                       affordable_answers=ev.affordable_answers))
            return plan

        return self._decide(form, briefs.plan_inputs(ev, cap), self._env(evidence=ev, affordable_rows=cap), finish)

    def select(self, plan: IterationPlan, last_verdict: ValidationVerdict | None) -> DataSelection:
        form = forms.selection_form(plan.data.max_rows, plan.data.sources, grid=self.backbone.force_handoff)

        def finish(f: BaseModel) -> DataSelection:
            first: dict[str, Any] = {}
            for s in f.sources:  # a source named twice counts once
                first.setdefault(s.name, s)
            sel = DataSelection(target_behaviours=f.target_behaviours, risks=f.risks,
                                sources=[SourceChoice(**s.model_dump()) for s in first.values()])
            _check(rules.selection_problems(sel, plan))
            return sel

        inputs = section("Plan", briefs.plan_brief(plan)) + briefs.verdict_section(last_verdict)
        return self._decide(form, inputs, self._env(plan=plan, last_verdict=last_verdict), finish)

    def construction(self, plan: IterationPlan, selection: DataSelection,
                     last_verdict: ValidationVerdict | None) -> ConstructionRequest:
        form = forms.construction_form(plan.data, self._options())

        def finish(f: BaseModel) -> ConstructionRequest:
            kept = {k: getattr(plan.data, k) for k in ("mixture", *forms.SAMPLING_FIELDS, *forms.GENERATION_FIELDS)}
            knobs = forms.data_knobs(f.knobs, sources=[s.name for s in selection.sources], **kept)
            _check(rules.construction_problems(knobs, plan))
            return ConstructionRequest(knobs=knobs, note=f.note)

        inputs = (section("Plan", briefs.plan_brief(plan)) + section("Selection", selection.model_dump_json(indent=1))
                  + briefs.verdict_section(last_verdict))
        env = self._env(plan=plan, selection=selection, last_verdict=last_verdict)
        return self._decide(form, inputs, env, finish)

    def judge(self, findings: ValidationFindings, manifest: DatasetManifest) -> ValidationVerdict:
        contaminated = findings.contaminated_test_ids()

        def finish(f: BaseModel) -> ValidationVerdict:
            # The measured checks and ids are attached from the findings, never from the model.
            verdict = ValidationVerdict(decision=f.decision, reasons=f.reasons, checks=findings.checks,
                                        contaminated_ids=findings.contaminated_rows())
            _check(rules.verdict_problems(verdict, findings))
            return verdict

        inputs = section("Findings", briefs.findings_brief(findings, contaminated)) + section(
            "Manifest", briefs.manifest_brief(manifest))
        return self._decide(forms.VerdictForm, inputs, self._env(findings=findings, manifest=manifest), finish)

    def train_knobs(self, plan: IterationPlan, manifest: DatasetManifest) -> TrainKnobs:
        form = forms.train_form(plan.train, grid=self.backbone.force_handoff)

        def finish(f: BaseModel) -> TrainKnobs:
            knobs = TrainKnobs(**f.model_dump())
            _check(rules.train_problems(knobs, plan))
            return knobs

        inputs = section("Plan", briefs.plan_brief(plan)) + section("Manifest", briefs.manifest_brief(manifest))
        return self._decide(form, inputs, self._env(plan=plan, manifest=manifest), finish)

    def analyse(self, plan: IterationPlan, report: EvalReport | None, best_before: Best,
                failure: str | None) -> tuple[str, str]:
        def finish(f: BaseModel) -> tuple[str, str]:
            return f.analysis, f.next_action

        if report is None:
            outcome = f"failed before evaluation: {failure}"
        else:
            modes = "; ".join(f"{m.label} ({m.category}, {m.count})" for m in report.failure_modes[:3]) or "none"
            outcome = (f"{report.metric} {report.accuracy:.4f} ± {report.stderr:.4f} on {report.n} samples vs best "
                       f"before {best_before.score:.4f} (delta {report.accuracy - best_before.score:+.4f}); failure "
                       f"modes: {modes}")
        inputs = section("Plan", briefs.plan_brief(plan)) + section("Outcome", outcome)
        env = self._env(plan=plan, report=report, best_before=best_before, failure=failure)
        return self._decide(forms.AnalysisForm, inputs, env, finish)

    # -- The loop ------------------------------------------------------------------------------------------

    def _decide(self, form: type[BaseModel], inputs: str, env: ToolEnv, finish: Callable[[BaseModel], T]) -> T:
        from prompts import render
        from roles.agent.loop import AgentLoop
        from roles.agent.tools import TOOLS

        tools = [] if self.backbone.force_handoff else TOOLS[self.role]
        task = env.task
        system = render(self.role, task_name=task.name if task else "the benchmark",
                        task_description=task.description if task else "",
                        answer_format=task.answer_line_hint if task else "the benchmark's answer format",
                        options=task.construction_options if task else {}, tools=tools, max_steps=self.max_steps,
                        max_invalid=self.max_invalid)
        human = inputs + section("Your handoff", briefs.describe_form(form))
        loop = AgentLoop(self.role, self.backbone, tools, form, finish, self.max_steps, self.max_invalid,
                         say=self._say)
        with warnings.catch_warnings():  # "durability has no effect" without a checkpointer: that is the point
            warnings.filterwarnings("ignore", message=".*durability.* has no effect")
            state = self._run(loop, system, human, env)
        used = [c["name"] for m in state["messages"] for c in getattr(m, "tool_calls", []) if c["name"] != "handoff"]
        self._say(f"{self.backbone.spec} handed off after {state['steps']} call(s)"
                  + (f"; tools used: {', '.join(used)}" if used else ""))
        return state["result"]

    def _run(self, loop: AgentLoop, system: str, human: str, env: ToolEnv) -> dict:
        from langchain_core.messages import HumanMessage, SystemMessage

        # It keeps no checkpoints of its own (the outer node is checkpointed), so it must not inherit the outer
        # run's synchronous durability, which waits on one.
        return loop.graph().invoke({"messages": [SystemMessage(system), HumanMessage(human)], "steps": 0,
                                    "invalid": 0, "result": None},
                                   context=env, config={"recursion_limit": 4 * (self.max_steps + self.max_invalid)},
                                   durability="exit")

    def _say(self, message: str) -> None:
        """A progress line in the run's output, when attached to a run."""
        if self._ctx is not None:
            self._ctx.progress(message)


def attach(policies: dict, ctx: RunContext) -> None:
    """Give every agent policy the run context its tools read (call once the RunContext exists)."""
    for policy in policies.values():
        if isinstance(policy, AgentPolicy):
            policy.attach(ctx)
