"""One decision's loop: agent → (tools → agent)* → handoff → end, with nudges for prose and re-asks for rejected
handoffs. A LangGraph graph of its own, run inside one node of the outer graph (which checkpoints around it)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ValidationError
from typing_extensions import TypedDict

from core.errors import HandoffFailed, InvalidHandoff, ToolError
from roles.agent.briefs import HANDOFF, clip

if TYPE_CHECKING:
    from langchain_core.messages import AIMessage

    from roles.llm import Backbone


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


class AgentLoop:
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

        from roles.agent.tools import ToolEnv

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
        # retries transient faults, redacts errors, counts the tokens for this role
        reply = self.backbone.invoke(model, messages, say=self.say, role=self.role)
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
        self.say(f"handoff rejected ({invalid}/{self.max_invalid}): {clip('; '.join(problems), 200)}")
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
    template drops tool calls, and an assistant turn without content renders as nothing)."""
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
