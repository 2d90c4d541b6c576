"""The one fake of the test suite: a scripted chat model standing in for an LLM backbone. Everything behind it (the
agent loop, the tools, the data, training and evaluation) is real.

It replays queued replies: an `AIMessage` (usually a tool call, see `call`) or an exception, which it raises as the
backbone's client would (an `openai.APIConnectionError`, say). Every request is recorded.
"""

from __future__ import annotations

import uuid
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field


class ScriptedChatModel(BaseChatModel):
    """Replays queued replies, recording what each request carried (messages, tool names, tool choice)."""

    replies: list[Any]
    requests: list[dict[str, Any]] = Field(default_factory=list)

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        self.requests.append({"messages": list(messages), "tools": kwargs.get("tools", []),
                              "tool_choice": kwargs.get("tool_choice")})
        assert self.replies, "the script ran out of replies"
        reply = self.replies.pop(0)
        if isinstance(reply, BaseException):
            raise reply
        return ChatResult(generations=[ChatGeneration(message=reply)])

    def bind_tools(self, tools, *, tool_choice=None, **kwargs):
        from langchain_core.utils.function_calling import convert_to_openai_tool

        names = [convert_to_openai_tool(t)["function"]["name"] for t in tools]
        return self.bind(tools=names, tool_choice=tool_choice, **kwargs)

    @property
    def _llm_type(self) -> str:
        return "scripted"


def call(tool_name: str, /, **args: Any) -> AIMessage:
    return AIMessage("", tool_calls=[{"name": tool_name, "args": args, "id": f"call_{uuid.uuid4().hex[:8]}"}])


def scripted(role: str, ctx, *replies: Any, backbone_fields: dict | None = None, **limits):
    """An AgentPolicy for `role` whose backbone is a ScriptedChatModel; (policy, model)."""
    from roles.agent.policy import AgentPolicy
    from roles.llm import Backbone

    model = ScriptedChatModel(replies=list(replies))
    policy = AgentPolicy(role, Backbone(spec="scripted", model=model, **(backbone_fields or {})), **limits)
    if ctx is not None:
        policy.attach(ctx)
    return policy, model


def tool_results(model: ScriptedChatModel) -> dict[str, list[ToolMessage]]:
    """Every ToolMessage the model was shown, by tool name."""
    out: dict[str, list[ToolMessage]] = {}
    seen = set()
    for request in model.requests:
        for m in request["messages"]:
            if isinstance(m, ToolMessage) and m.tool_call_id not in seen:
                seen.add(m.tool_call_id)
                out.setdefault(m.name, []).append(m)
    return out
