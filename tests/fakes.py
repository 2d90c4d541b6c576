"""The one fake of the test suite: a scripted chat model standing in for an LLM backbone. Everything behind it (the
agent loop, the tools, the data, training and evaluation) is real.

It replays queued replies: an `AIMessage` (usually a tool call, see `call`), an exception, which it raises as the
backbone's client would (an `openai.APIConnectionError`, say), or a function of the request that returns one
(`fill_handoff` answers any handoff form with a valid minimal handoff). Every request is recorded.

`OpenAIServer` serves the same scripted model over HTTP as an OpenAI-compatible endpoint, so runs and judges reach
it through the real clients (langchain-openai, inspect's openai provider), faults and retries included.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field


class ScriptedChatModel(BaseChatModel):
    """Replays queued replies, recording what each request carried (messages, tool names, tool choice)."""

    replies: list[Any]
    requests: list[dict[str, Any]] = Field(default_factory=list)
    repeat_last: bool = False
    """Keep answering with the last reply (a function of the request, usually) once the others are used."""

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        request = {
            "messages": list(messages),
            "tools": kwargs.get("tools", []),
            "tool_choice": kwargs.get("tool_choice"),
        }
        self.requests.append(request)
        assert self.replies, "the script ran out of replies"
        reply = self.replies[0] if self.repeat_last and len(self.replies) == 1 else self.replies.pop(0)
        if callable(reply) and not isinstance(reply, BaseException):
            reply = reply(request)
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


# ---------------------------------------------------------------------------------------------------------------
# Any handoff, filled minimally from its schema


def fill_handoff(request: dict[str, Any]) -> AIMessage:
    """A valid minimal `handoff` call for the form in `request` (its tool schemas): required fields only, the
    first enum value, the smallest number allowed. After a rejected handoff, the next enum choice of the field
    the rejection names (so a verdict that may not approve moves on to sending the data back)."""
    tools = {t["function"]["name"]: t["function"] for t in request["tools"] if isinstance(t, dict)}
    schema = tools["handoff"]["parameters"]
    rejected = sum(1 for m in request["messages"] if isinstance(m, ToolMessage) and "Handoff rejected" in m.text)
    rejected += sum(1 for m in request["messages"] if "Handoff rejected" in str(getattr(m, "content", "")))
    return call("handoff", **_fill(schema, schema.get("$defs", {}), rejected))


def _fill(schema: dict[str, Any], defs: dict[str, Any], shift: int = 0) -> Any:
    if "$ref" in schema:
        return _fill(defs[schema["$ref"].split("/")[-1]], defs, shift)
    if "anyOf" in schema:
        return _fill(schema["anyOf"][0], defs, shift)
    if "enum" in schema:
        return schema["enum"][min(shift, len(schema["enum"]) - 1)]
    kind = schema.get("type")
    if kind == "object":
        return {
            k: _fill(v, defs, shift) for k, v in schema.get("properties", {}).items() if k in schema.get("required", [])
        }
    if kind == "array":
        return [_fill(schema.get("items", {}), defs, shift) for _ in range(max(1, schema.get("minItems", 1)))]
    if kind == "string":
        return "benchmark_train" if "pattern" in schema else "a scripted answer"
    if kind in ("integer", "number"):
        return schema.get("default", schema.get("minimum", 1))
    if kind == "boolean":
        return schema.get("default", False)
    return None


# ---------------------------------------------------------------------------------------------------------------
# The scripted model over HTTP


class OpenAIServer:
    """`/v1/models` and `/v1/chat/completions` on 127.0.0.1, answered by a ScriptedChatModel."""

    def __init__(self, model: ScriptedChatModel, name: str = "scripted"):
        self.model, self.name = model, name
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0, "calls": 0}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                self._send(200, {"object": "list", "data": [{"id": server.name, "object": "model"}]})

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                self._send(200, server.answer(body))

            def _send(self, code: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}/v1"

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        from langchain_openai.chat_models.base import _convert_dict_to_message

        messages = [_convert_dict_to_message(m) for m in body["messages"]]
        tool_choice = body.get("tool_choice")
        with self._lock:  # one scripted conversation at a time
            reply = self.model.invoke(messages, tools=body.get("tools", []), tool_choice=tool_choice)
            prompt = sum(len(str(m.content).split()) for m in messages)
            completion = len(str(reply.content).split()) + sum(
                len(json.dumps(c["args"])) // 4 for c in reply.tool_calls
            )
            self.usage = {
                "prompt_tokens": self.usage["prompt_tokens"] + prompt,
                "completion_tokens": self.usage["completion_tokens"] + completion,
                "calls": self.usage["calls"] + 1,
            }
        message: dict[str, Any] = {"role": "assistant", "content": reply.content or None}
        if reply.tool_calls:
            message["tool_calls"] = [
                {
                    "id": c["id"] or f"call_{uuid.uuid4().hex[:8]}",
                    "type": "function",
                    "function": {"name": c["name"], "arguments": json.dumps(c["args"])},
                }
                for c in reply.tool_calls
            ]
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.name,
            "choices": [
                {"index": 0, "message": message, "finish_reason": "tool_calls" if reply.tool_calls else "stop"}
            ],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        }

    def __enter__(self) -> OpenAIServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def text_reply(text: str | Callable[[dict[str, Any]], str]) -> Callable[[dict[str, Any]], AIMessage]:
    """A reply function answering with plain text (a judge's verdict, say)."""
    return lambda request: AIMessage(text(request) if callable(text) else text)
