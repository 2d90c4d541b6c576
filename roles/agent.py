"""LLM-driven roles: one LangGraph tool-calling agent per role decision, behind the same `Policy` interface as the
playbook, so the graph never knows which backbone decided.

Each decision is a small loop: the model reads its inputs, may call its role's tools (tools/agent_tools.py), and
ends by calling `handoff`, whose arguments schema is a bounded form of the role's typed output. The form is
validated by pydantic, then by the role's rules in code (for example: no approval of data that failed
decontamination); a rejected handoff goes back to the model with the reasons, a bounded number of times, and
then the decision fails cleanly with `HandoffFailed`. Facts the agent does not decide (the iteration, the
stage, the validation checks, the contaminated ids) are filled in from the inputs, never taken from the model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from copy import copy
from typing import TYPE_CHECKING, Annotated, Any, Callable, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from typing_extensions import TypedDict

from graph.state import (
    Best,
    DataKnobs,
    DataSelection,
    DatasetManifest,
    EvalReport,
    IterationPlan,
    SourceChoice,
    TrainKnobs,
    ValidationVerdict,
)
from roles.llm import Backbone, translate_api_error
from roles.policy import ConstructionRequest, Evidence
from tools.validate import ValidationFindings

if TYPE_CHECKING:
    from langchain_core.messages import AIMessage

    from graph.context import RunContext
    from tools.agent_tools import ToolEnv

T = TypeVar("T")

HANDOFF = "handoff"
MAX_STEPS = 8
"""Model calls per decision; from the last of them on, only the handoff can be called."""
MAX_INVALID = 3
"""Rejected handoffs that are asked for again; the next one fails the decision."""
HARD_CHECKS = ("structure", "alignment", "decontamination")
"""Validation checks that must pass for an approval: broken rows, rows unlike the evaluation, test leakage."""

Short = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Long = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=800)]


class HandoffFailed(RuntimeError):
    """A role produced no valid handoff within its limits. The run stops with its state saved."""

    def __init__(self, role: str, reason: str):
        super().__init__(f"{role}: {reason}")
        self.role, self.reason = role, reason


class InvalidHandoff(ValueError):
    """A handoff that parses but breaks a role rule; its problems go back to the model."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


# ---------------------------------------------------------------------------------------------------------------
# Handoff forms: bounded views of the typed outputs (enums, ranges, lengths) that a small model can fill under a
# grammar, with the current values as defaults.

DATA_DOCS = {
    "sources": "Data sources: benchmark_train, local:<path.jsonl> or hub:<dataset>.",
    "max_rows": "Training rows to build, within what the budget affords.",
    "with_system": "Prepend the evaluation's system block (its few-shot examples) to every training prompt.",
    "strip_annotations": "Drop calculator notes that the evaluation never shows.",
    "rewrite_answers": "Rewrite each answer into the evaluation's answer format (false keeps the source text).",
    "seed": "Which rows are drawn; change it to get fresh rows.",
}
TRAIN_DOCS = {
    "start_from": "Start from the base model, or from the best checkpoint so far.",
    "learning_rate": "Peak learning rate.",
    "epochs": "Passes over the training data.",
    "batch_size": "Rows per device step.",
    "cutoff_len": "Longest training sequence in tokens; never below what the data was built for.",
    "finetuning_type": "Full fine-tuning or LoRA.",
}
_FORM = ConfigDict(extra="forbid")
SOURCE_PATTERN = r"^(benchmark_train|local:[A-Za-z0-9_./~-]+[.]jsonl|hub:[A-Za-z0-9_./-]+)$"
"""In the schema only, so that a grammar-constrained model writes only names of these kinds; the code's own check
(`_check_sources`) still decides, with a message that names the rule (measured: unconstrained, SmolLM2 wrote
'local,')."""


TRAIN_GRID: dict[str, list[float]] = {
    "learning_rate": [5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4],
    "epochs": [0.5, 1.0, 2.0, 3.0],
    "batch_size": [1, 2, 4, 8, 16, 32],
    "cutoff_len": [256, 384, 512, 1024, 2048, 4096],
}
"""The values a model that decides without exploring may pick: a grammar keeps it inside an enum, where it cannot
keep a float inside a range (measured: SmolLM2 wrote learning rates above 1e-3 under the range-only schema)."""


def _fields(model: type[BaseModel], docs: dict[str, str], current: BaseModel | None = None, *,
            exclude: tuple[str, ...] = (), caps: dict[str, int] | None = None,
            floors: dict[str, int] | None = None, grid: dict[str, list[float]] | None = None) -> dict[str, Any]:
    """`model`'s fields, constraints kept, with descriptions, `current` values as defaults, and extra upper caps
    and lower floors (so the schema itself states the bound, and pydantic enforces it). `grid` turns the named
    fields into enums of those values (within the floors, and always with the current value) in the schema."""
    import annotated_types

    out = {}
    for name, info in model.model_fields.items():
        if name in exclude:
            continue
        new = copy(info)
        new.metadata = list(info.metadata)
        new.description = docs.get(name, info.description)
        if current is not None:
            new.default, new.default_factory = getattr(current, name), None
        if caps and name in caps:
            new.metadata.append(annotated_types.Le(caps[name]))
            if isinstance(new.default, int) and new.default > caps[name]:
                new.default = caps[name]
        if floors and name in floors:
            new.metadata.append(annotated_types.Ge(floors[name]))
        if grid and name in grid:
            low = (floors or {}).get(name, float("-inf"))
            values = sorted({v for v in grid[name] if v >= low} | {new.default})
            new.json_schema_extra = {"enum": values}
        out[name] = (info.annotation, new)
    return out


def _source_names(sources: Sequence[str], grid: bool) -> dict[str, Any]:
    """Schema for a source name: with `grid`, one of these sources or the benchmark's train split (a model that
    never explores cannot know which files exist; measured: SmolLM2 named an invented local file); else the pattern.
    Schema only: `_check_sources` decides."""
    return {"enum": sorted({"benchmark_train", *sources})} if grid else {"pattern": SOURCE_PATTERN}


def _model(model_name: str, doc: str, /, **fields: Any) -> type[BaseModel]:
    from pydantic import create_model

    return create_model(model_name, __config__=_FORM, __doc__=doc, **fields)


def plan_form(last: IterationPlan | None, cap: int, *, grid: bool = False) -> type[BaseModel]:
    """`grid`: for models that decide without exploring, sources and training knobs come from enums."""
    data_fields = _fields(DataKnobs, DATA_DOCS, last.data if last else None, caps={"max_rows": cap})
    names = _source_names(last.data.sources if last else [], grid)
    data_fields["sources"][1].json_schema_extra = {"items": {"type": "string", **names}}
    data = _model("PlanData", "What the plan asks of the data engineer.", **data_fields)
    train = _model("PlanTrain", "What the plan asks of the trainer.",
                   **_fields(TrainKnobs, TRAIN_DOCS, last.train if last else TrainKnobs(),
                             grid=TRAIN_GRID if grid else None))
    return _model(
        "PlanForm", "Hand off this iteration's plan. Call once, when the plan is decided.",
        problems=(list[Short], Field(min_length=1, max_length=3, description="The main problems observed, "
                                     "with their evidence (counts, scores).")),
        objective=(Short, Field(description="The one thing this iteration tries to improve, as a hypothesis.")),
        changes=(list[Short], Field(min_length=1, max_length=4, description="Concrete planned changes.")),
        change_kind=(Literal["data", "training", "both"], Field(description="What the changes mainly touch.")),
        success_criterion=(Short, Field(description="The measurable outcome that counts as success.")),
        references=(list[Short], Field(default_factory=list, max_length=3,
                                       description="Memory entries relied on, by id.")),
        data=(data, Field(default_factory=data)),
        train=(train, Field(default_factory=train)),
    )


def selection_form(cap: int, planned: Sequence[str] = (), *, grid: bool = False) -> type[BaseModel]:
    """`grid`: source names only from the plan's sources and the benchmark's train split."""
    source = _model("SourceForm", "One data source.",
                    name=(Short, Field(description="benchmark_train, local:<path.jsonl> or hub:<dataset>.",
                                       json_schema_extra=_source_names(planned, grid))),
                    reason=(Short, Field(description="Why this source supports the target behaviours.")),
                    max_rows=(int, Field(min(cap, 256), ge=1, le=cap, description="Row cap for this source.")))
    return _model(
        "SelectionForm", "Hand off the data selection. Call once, when the sources are chosen.",
        target_behaviours=(list[Short], Field(min_length=1, max_length=4,
                                              description="Behaviours the new data must teach.")),
        sources=(list[source], Field(min_length=1, max_length=3, description="Sources to build from.")),
        risks=(list[Short], Field(min_length=1, max_length=4, description="Risks construction must handle.")),
    )


def construction_form(knobs: DataKnobs) -> type[BaseModel]:
    build = _model("BuildKnobs", "Construction knobs (the selection fixes the sources).",
                   **_fields(DataKnobs, DATA_DOCS, knobs, exclude=("sources",), caps={"max_rows": knobs.max_rows}))
    return _model("ConstructionForm", "Hand off the construction request. Call once, when the knobs are set.",
                  knobs=(build, Field(default_factory=build)),
                  note=(Short, Field(description="What changed from the plan's knobs, and why.")))


class VerdictForm(BaseModel):
    """Hand off the validation verdict. Call once, when decided; the measured checks are attached for you."""

    model_config = _FORM
    decision: Literal["approve", "back_to_construction", "back_to_selection"] = Field(
        description="approve only when every check passed.")
    reasons: list[Short] = Field(min_length=1, max_length=4,
                                 description="One reason per problem, naming the check and its detail.")


def train_form(planned: TrainKnobs, *, grid: bool = False) -> type[BaseModel]:
    return _model("TrainForm", "Hand off the training knobs. Call once, when they are set.",
                  **_fields(TrainKnobs, TRAIN_DOCS, planned, floors={"cutoff_len": planned.cutoff_len},
                            grid=TRAIN_GRID if grid else None))


class AnalysisForm(BaseModel):
    """Hand off the log entry's analysis and next action. Call once, when written."""

    model_config = _FORM
    analysis: Long = Field(description="Result vs the best before, whether the hypothesis held, the likely cause.")
    next_action: Short = Field(description="The one next step that follows from the analysis.")


# ---------------------------------------------------------------------------------------------------------------
# The policy


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
        from tools.agent_tools import ToolEnv

        ctx = self._ctx
        return ToolEnv(role=self.role, task=ctx.task if ctx else None, memory=ctx.memory if ctx else None, **inputs)

    # -- Policy methods ------------------------------------------------------------------------------------

    def plan(self, ev: Evidence) -> IterationPlan:
        from roles.playbook import Playbook

        cap = Playbook()._affordable_rows(ev)  # the same budget estimate as the playbook's
        form = plan_form(ev.last_plan, cap, grid=self.backbone.force_handoff)

        def finish(f: BaseModel) -> IterationPlan:
            fields = f.model_dump()
            plan = IterationPlan(iteration=ev.iteration, stage=ev.stage, **fields)
            _check_sources(plan.data.sources)
            return plan

        return self._decide(form, _plan_inputs(ev, cap), self._env(evidence=ev, affordable_rows=cap), finish)

    def select(self, plan: IterationPlan, last_verdict: ValidationVerdict | None) -> DataSelection:
        form = selection_form(plan.data.max_rows, plan.data.sources, grid=self.backbone.force_handoff)

        def finish(f: BaseModel) -> DataSelection:
            first: dict[str, Any] = {}
            for s in f.sources:  # a source named twice counts once
                first.setdefault(s.name, s)
            sel = DataSelection(target_behaviours=f.target_behaviours, risks=f.risks,
                                sources=[SourceChoice(**s.model_dump()) for s in first.values()])
            _check_sources([s.name for s in sel.sources])
            return sel

        inputs = _section("Plan", _plan_brief(plan)) + _verdict_section(last_verdict)
        return self._decide(form, inputs, self._env(plan=plan, last_verdict=last_verdict), finish)

    def construction(self, plan: IterationPlan, selection: DataSelection,
                     last_verdict: ValidationVerdict | None) -> ConstructionRequest:
        form = construction_form(plan.data)
        # Contaminated rows are excluded whatever the agent says: a fact, not a decision.
        exclude = sorted(last_verdict.contaminated_ids) if last_verdict else []

        def finish(f: BaseModel) -> ConstructionRequest:
            knobs = DataKnobs(sources=[s.name for s in selection.sources], **f.knobs.model_dump())
            note = f.note if not exclude else f"{f.note} (excluding {len(exclude)} contaminated test ids)"
            return ConstructionRequest(knobs=knobs, exclude_ids=exclude, note=note)

        inputs = (_section("Plan", _plan_brief(plan)) + _section("Selection", selection.model_dump_json(indent=1))
                  + _verdict_section(last_verdict))
        env = self._env(plan=plan, selection=selection, last_verdict=last_verdict)
        return self._decide(form, inputs, env, finish)

    def judge(self, findings: ValidationFindings, manifest: DatasetManifest) -> ValidationVerdict:
        contaminated = sorted({t for ids in findings.contaminated.values() for t in ids})

        def finish(f: BaseModel) -> ValidationVerdict:
            failed = [c.name for c in findings.checks if not c.passed]
            if f.decision == "approve":
                hard = [c for c in failed if c in HARD_CHECKS] + (["usable rows (none)"]
                                                                   if findings.usable_rows == 0 else [])
                if hard:
                    raise InvalidHandoff([f"approve is not allowed: the {', '.join(hard)} check(s) failed; send "
                                          "the data back to construction or selection"])
            # The measured checks and ids are attached from the findings, never from the model.
            return ValidationVerdict(decision=f.decision, reasons=f.reasons, checks=findings.checks,
                                     contaminated_ids=contaminated)

        inputs = _section("Findings", _findings_brief(findings, contaminated)) + _section(
            "Manifest", _manifest_brief(manifest))
        return self._decide(VerdictForm, inputs, self._env(findings=findings, manifest=manifest), finish)

    def train_knobs(self, plan: IterationPlan, manifest: DatasetManifest) -> TrainKnobs:
        from tools.agent_tools import train_knob_problems

        form = train_form(plan.train, grid=self.backbone.force_handoff)

        def finish(f: BaseModel) -> TrainKnobs:
            knobs = TrainKnobs(**f.model_dump())
            problems = train_knob_problems(knobs, plan)
            if problems:
                raise InvalidHandoff(problems)
            return knobs

        inputs = _section("Plan", _plan_brief(plan)) + _section("Manifest", _manifest_brief(manifest))
        return self._decide(form, inputs, self._env(plan=plan, manifest=manifest), finish)

    def analyse(self, plan: IterationPlan, report: EvalReport | None, best_before: Best,
                failure: str | None) -> tuple[str, str]:
        def finish(f: BaseModel) -> tuple[str, str]:
            return f.analysis, f.next_action

        if report is None:
            outcome = f"failed before evaluation: {failure}"
        else:
            modes = "; ".join(f"{m.label} ({m.category}, {m.count})" for m in report.failure_modes[:3]) or "none"
            outcome = (f"accuracy {report.accuracy:.4f} ± {report.stderr:.4f} on {report.n} samples vs best before "
                       f"{best_before.score:.4f} (delta {report.accuracy - best_before.score:+.4f}); failure "
                       f"modes: {modes}")
        inputs = _section("Plan", _plan_brief(plan)) + _section("Outcome", outcome)
        env = self._env(plan=plan, report=report, best_before=best_before, failure=failure)
        return self._decide(AnalysisForm, inputs, env, finish)

    # -- The loop ------------------------------------------------------------------------------------------

    def _decide(self, form: type[BaseModel], inputs: str, env: ToolEnv, finish: Callable[[BaseModel], T]) -> T:
        from langchain_core.messages import HumanMessage, SystemMessage

        from prompts import render
        from tools.agent_tools import TOOLS

        tools = [] if self.backbone.force_handoff else TOOLS[self.role]
        task = env.task
        system = render(self.role, task_name=task.name if task else "the benchmark",
                        task_description=task.description if task else "",
                        answer_format=task.answer_line_hint if task else "the benchmark's answer format",
                        tools=tools, max_steps=self.max_steps, max_invalid=self.max_invalid)
        human = inputs + _section("Your handoff", describe_form(form))
        loop = _AgentLoop(self.role, self.backbone, tools, form, finish, self.max_steps, self.max_invalid,
                          say=self._say)
        state = loop.graph().invoke({"messages": [SystemMessage(system), HumanMessage(human)], "steps": 0,
                                     "invalid": 0, "result": None},
                                    context=env, config={"recursion_limit": 4 * (self.max_steps + self.max_invalid)})
        used = [c["name"] for m in state["messages"] for c in getattr(m, "tool_calls", []) if c["name"] != HANDOFF]
        self._say(f"{self.backbone.spec} handed off after {state['steps']} call(s)"
                  + (f"; tools used: {', '.join(used)}" if used else ""))
        return state["result"]

    def _say(self, message: str) -> None:
        """A progress line in the run's output, when attached to a run."""
        if self._ctx is not None:
            self._ctx.progress(message)


def _add_messages(left: list, right: list) -> list:
    """LangGraph's message reducer, imported on first use: langgraph takes seconds to import, and this module is
    imported by the CLI for its exceptions."""
    from langgraph.graph.message import add_messages

    return add_messages(left, right)


class AgentState(TypedDict):
    """One decision's conversation and counters; `result` is the validated handoff once there is one."""

    messages: Annotated[list, _add_messages]
    steps: int
    invalid: int
    result: Any


class _AgentLoop:
    """agent → (tools → agent)* → handoff → end, with nudges for prose and re-asks for rejected handoffs."""

    def __init__(self, role: str, backbone: Backbone, tools: list, form: type[BaseModel],
                 finish: Callable[[BaseModel], Any], max_steps: int, max_invalid: int,
                 say: Callable[[str], None] = lambda _: None):
        from langchain_core.utils.function_calling import convert_to_openai_tool

        self.role, self.backbone, self.tools, self.form, self.finish = role, backbone, tools, form, finish
        self.max_steps, self.max_invalid, self.say = max_steps, max_invalid, say
        spec = convert_to_openai_tool(form)
        spec["function"]["name"] = HANDOFF
        self.handoff_spec = spec

    def graph(self):
        from langgraph.graph import END, START, StateGraph
        from langgraph.prebuilt import ToolNode
        from langgraph.prebuilt.tool_node import ToolInvocationError

        from tools.agent_tools import ToolEnv, ToolError

        g = StateGraph(AgentState, context_schema=ToolEnv)
        g.add_node("agent", self.call_model)
        g.add_node("handoff", self.check_handoff)
        g.add_node("nudge", self.nudge)
        # Only misuse the model can fix is returned to it; any other exception is a bug and propagates.
        g.add_node("tools", ToolNode(self.tools, handle_tool_errors=(ToolError, ToolInvocationError)))
        g.add_edge(START, "agent")
        g.add_conditional_edges("agent", self.route, ["tools", "handoff", "nudge", "agent"])
        g.add_edge("tools", "agent")
        g.add_edge("nudge", "agent")
        g.add_conditional_edges("handoff", lambda s: END if s["result"] is not None else "agent", [END, "agent"])
        # checkpointer=False: one decision is one node of the outer graph, which checkpoints around it.
        return g.compile(checkpointer=False, name=f"{self.role}_agent")

    def call_model(self, state: dict) -> dict:
        from langchain_core.messages import ToolMessage

        steps = state["steps"] + 1
        if steps > self.max_steps + self.max_invalid + 1:
            raise HandoffFailed(self.role, f"no valid handoff within {steps - 1} model calls")
        # Past the exploration budget (or for weak models, always) the only possible reply is the handoff.
        force = self.backbone.force_handoff or steps >= self.max_steps
        model = self.backbone.model.bind_tools([*self.tools, self.handoff_spec],
                                               **({"tool_choice": HANDOFF} if force else {}))
        messages = state["messages"]
        if self.backbone.plain_tool_turns:
            messages = plain_turns(messages)
        import openai

        try:
            reply = model.invoke(messages)
        except openai.OpenAIError as e:
            translated = translate_api_error(e, self.backbone.spec)
            if translated is None:
                raise
            raise translated from None  # rebuilt message: the server's text may echo a masked key
        # Malformed calls to ordinary tools are answered here; a malformed handoff is the handoff node's.
        bad = [ToolMessage(f"Error: the arguments are not valid JSON ({c.get('error') or 'unparseable'}); "
                           "call the tool again with valid JSON.", tool_call_id=c["id"], name=c["name"],
                           status="error")
               for c in reply.invalid_tool_calls if c.get("name") != HANDOFF and c.get("id")]
        return {"messages": [reply, *bad], "steps": steps}

    def route(self, state: dict) -> str:
        reply = _last_ai(state["messages"])
        names = [c["name"] for c in reply.tool_calls] + [c.get("name") for c in reply.invalid_tool_calls]
        if HANDOFF in names:
            return "handoff"
        if reply.tool_calls:
            return "tools"
        return "agent" if reply.invalid_tool_calls else "nudge"

    def nudge(self, state: dict) -> dict:
        from langchain_core.messages import HumanMessage

        return {"messages": [HumanMessage("Reply with a tool call only. When you have decided, call `handoff`.")]}

    def check_handoff(self, state: dict) -> dict:
        from langchain_core.messages import ToolMessage

        reply = _last_ai(state["messages"])
        valid = next((c for c in reply.tool_calls if c["name"] == HANDOFF), None)
        call = valid or next(c for c in reply.invalid_tool_calls if c.get("name") == HANDOFF)
        if valid is None:
            problems = [f"the arguments are not valid JSON ({call.get('error') or 'unparseable'})"]
        else:
            try:
                return {"result": self.finish(self.form.model_validate(valid["args"]))}
            except ValidationError as e:
                problems = [f"{'.'.join(map(str, x['loc'])) or 'arguments'}: {x['msg']}"
                            for x in e.errors(include_url=False)]
            except InvalidHandoff as e:
                problems = e.problems
        invalid = state["invalid"] + 1
        if invalid > self.max_invalid:
            raise HandoffFailed(self.role, f"{invalid} invalid handoffs; the last: {'; '.join(problems)}")
        self.say(f"handoff rejected ({invalid}/{self.max_invalid}): {_clip('; '.join(problems), 200)}")
        answers = [ToolMessage(f"Handoff rejected: {'; '.join(problems)}. Fix these fields and call `handoff` "
                               f"again (tries left: {self.max_invalid - invalid + 1}).", tool_call_id=call["id"],
                               name=HANDOFF, status="error")]
        # Every other call in that reply needs an answer too, or the next request is malformed.
        answers += [ToolMessage("Not run: a handoff ends the turn; call tools and `handoff` in separate replies.",
                                tool_call_id=c["id"], name=c["name"], status="error")
                    for c in [*reply.tool_calls, *reply.invalid_tool_calls] if c.get("id") != call.get("id")]
        return {"messages": answers, "invalid": invalid}


def _last_ai(messages: list) -> AIMessage:
    from langchain_core.messages import AIMessage

    return next(m for m in reversed(messages) if isinstance(m, AIMessage))


def plain_turns(messages: list) -> list:
    """Tool calls and results replayed as plain text, for chat templates that cannot render them (SmolLM2's
    template drops tool calls, and llama-cpp's server refuses an assistant turn without content)."""
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

    out = []
    for m in messages:
        if isinstance(m, AIMessage) and (m.tool_calls or m.invalid_tool_calls):
            calls = [f"{c['name']}({json.dumps(c['args'], ensure_ascii=False)})" for c in m.tool_calls]
            calls += [f"{c.get('name')}({c.get('args')})" for c in m.invalid_tool_calls]
            out.append(AIMessage("\n".join(filter(None, [m.text, *calls]))))
        elif isinstance(m, ToolMessage):
            out.append(HumanMessage(f"[{m.name or 'tool'} result]\n{m.text}"))
        else:
            out.append(m)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Inputs, as compact Markdown: the evidence a decision rests on, so even a model without tools sees it.


def _section(title: str, body: str) -> str:
    return f"## {title}\n\n{body.strip()}\n\n"


def describe_form(form: type[BaseModel]) -> str:
    """The handoff's fields, one line each with type, bounds and default (small models do not see tool schemas)."""
    schema = form.model_json_schema()
    defs = schema.get("$defs", {})
    lines = [f"Call `{HANDOFF}` with these fields. {(form.__doc__ or '').strip()}"]

    def walk(props: dict, required: set[str], prefix: str) -> None:
        for name, spec in props.items():
            spec = _deref(spec, defs)
            items = _deref(spec.get("items", {}), defs)
            if spec.get("type") == "object" and "properties" in spec:
                walk(spec["properties"], set(spec.get("required", [])), f"{prefix}{name}.")
                continue
            lines.append(f"- `{prefix}{name}` ({_type(spec, defs)}{'' if name in required else ', optional'})"
                         f"{': ' + spec['description'] if spec.get('description') else ''}")
            if "properties" in items:
                walk(items["properties"], set(items.get("required", [])), f"{prefix}{name}[].")

    walk(schema["properties"], set(schema.get("required", [])), "")
    return "\n".join(lines)


def _deref(spec: dict, defs: dict) -> dict:
    return defs[spec["$ref"].split("/")[-1]] if "$ref" in spec else spec


def _type(spec: dict, defs: dict) -> str:
    if "enum" in spec:
        kind = " | ".join(json.dumps(v) for v in spec["enum"])
    elif spec.get("type") == "array":
        item = _deref(spec.get("items", {}), defs)
        inner = "objects" if "properties" in item else _type(item, defs)
        kind = (f"list of {inner}" if inner == "objects" else f"list of ({inner})") + (
            f", at most {spec['maxItems']} items" if "maxItems" in spec else "")
    else:
        kind = spec.get("type", "any")
    bounds = [f"{label} {spec[key]}" for key, label in (("minimum", "≥"), ("exclusiveMinimum", ">"),
                                                       ("maximum", "≤")) if key in spec]
    if "maxLength" in spec:
        bounds.append(f"at most {spec['maxLength']} characters")
    default = f"default {json.dumps(spec['default'])}" if "default" in spec else ""
    return ", ".join(filter(None, [kind, *bounds, default]))


def _plan_inputs(ev: Evidence, cap: int) -> str:
    report = ev.last_eval or ev.baseline
    modes = "\n".join(f"- {m.label} ({m.category}, {m.count} of {report.n})"
                      + (f": e.g. {_clip(m.examples[0], 200)}" if m.examples else "")
                      for m in report.failure_modes[:3]) or "- none recorded"
    history = "\n".join(f"- iteration {r.iteration} (stage {int(r.stage)}, {r.status}): {_clip(r.objective, 120)}; "
                        f"{r.rows} rows; score {r.score}; {'kept' if r.kept else 'not kept'}"
                        for r in ev.history[-5:]) or "- none yet"
    memory = "\n".join(f"- {_clip(h, 220)}" for h in ev.memory_hits[:5]) or "- nothing recalled"
    last = (f"objective: {ev.last_plan.objective}\ndata: {ev.last_plan.data.model_dump_json()}\n"
            f"train: {ev.last_plan.train.model_dump_json()}" if ev.last_plan else "none (first iteration)")
    train = (f"{ev.last_train.runtime_s:.0f} s, {ev.last_train.steps} steps, loss {ev.last_train.train_loss}"
             if ev.last_train else "none yet")
    return (_section("Run", f"iteration {ev.iteration}, stage {int(ev.stage)}; {'GPU' if ev.on_gpu else 'CPU'}; "
                            f"{ev.budget_left_s / 60:.0f} min of budget left, enough for about {cap} training rows")
            + _section("Scores", f"baseline {ev.baseline.accuracy:.4f} (n={ev.baseline.n}); best "
                                 f"{ev.best.score:.4f} (iteration {ev.best.iteration})")
            + _section("Latest evaluation" if ev.last_eval else "Baseline evaluation",
                       f"accuracy {report.accuracy:.4f} on {report.n} samples; failure modes:\n{modes}")
            + _section("History", history) + _section("Previous plan", last) + _section("Last training", train)
            + _section("Memory", memory))


def _plan_brief(plan: IterationPlan) -> str:
    return (f"iteration {plan.iteration}, stage {int(plan.stage)}\nproblems: {'; '.join(plan.problems)}\n"
            f"objective: {plan.objective}\nchanges: {'; '.join(plan.changes)}\n"
            f"data knobs: {plan.data.model_dump_json()}\ntraining knobs: {plan.train.model_dump_json()}")


def _verdict_section(verdict: ValidationVerdict | None) -> str:
    if verdict is None:
        return ""
    failed = "; ".join(f"{c.name}: {c.detail}" for c in verdict.checks if not c.passed) or "none"
    return _section("Last validation verdict", f"decision: {verdict.decision}\nreasons: {'; '.join(verdict.reasons)}"
                                               f"\nfailed checks: {_clip(failed, 600)}\ncontaminated ids: "
                                               f"{len(verdict.contaminated_ids)} (excluded automatically)")


def _findings_brief(findings: ValidationFindings, contaminated: list[str]) -> str:
    checks = "\n".join(f"- {c.name}: {'pass' if c.passed else 'FAIL'}. {_clip(c.detail, 300)}"
                       for c in findings.checks)
    return (f"{checks}\n- usable rows: {findings.usable_rows}\n- contaminated rows: {len(findings.contaminated)}, "
            f"sharing n-grams with {len(contaminated)} test samples")


def _manifest_brief(m: DatasetManifest) -> str:
    ops = " → ".join(f"{o.op}: {o.rows_after}" for o in m.operations)
    return f"{m.rows} rows from {', '.join(m.sources)} (attempt {m.attempt}); {ops}"


def _clip(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _check_sources(names: list[str]) -> None:
    """Sources must be of a known kind, and never a remote model API (hard rule)."""
    from pathlib import Path

    from tools.guards import GuardViolation, check_data_source

    problems = []
    for name in names:
        try:
            check_data_source(name)
        except GuardViolation as e:
            problems.append(str(e))
            continue
        if name.startswith("local:") and not Path(name[6:]).is_file():
            problems.append(f"source {name!r}: no such file")
        elif name != "benchmark_train" and not name.startswith(("local:", "hub:")):
            problems.append(f"source {name!r}: use benchmark_train, local:<path.jsonl> or hub:<dataset>")
    if problems:
        raise InvalidHandoff(problems)


def attach(policies: dict, ctx: RunContext) -> None:
    """Give every agent policy the run context its tools read (call once the RunContext exists)."""
    for policy in policies.values():
        if isinstance(policy, AgentPolicy):
            policy.attach(ctx)
