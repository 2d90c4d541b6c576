"""Backbone faults: transient ones are retried with backoff (each retry a progress line and a trace run), others stop
at once; the per-call deadline and the per-run budget bound the waiting; no key reaches an error, stderr or a
checkpoint. The backbone is the scripted fake, or the real OpenAI client against a local HTTP server."""

from __future__ import annotations

import json
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import openai
import pytest
from fakes import ScriptedChatModel
from langchain_core.messages import AIMessage

from core.errors import BackboneError, BackboneUnreachable
from core.settings import RetrySettings
from roles.llm import Backbone, RetryBudget

KEY = "sk-test-ECHOED-key-0123456789abcdef"
REQUEST = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")


def status(code: int, headers: dict | None = None) -> openai.APIStatusError:
    response = httpx.Response(code, request=REQUEST, headers=headers or {}, json={"error": {"message": "x"}})
    cls = {401: openai.AuthenticationError, 404: openai.NotFoundError, 429: openai.RateLimitError,
           400: openai.BadRequestError}.get(code, openai.InternalServerError)
    return cls("x", response=response, body={"message": "x"})


def backbone(*replies, retry: RetrySettings | None = None, budget: float | None = None):
    model = ScriptedChatModel(replies=list(replies))
    b = Backbone(spec="scripted", model=model, retry=retry or RetrySettings(initial_wait_s=0.01, max_wait_s=0.05),
                 budget=RetryBudget(budget) if budget is not None else None)
    return b, model


def test_transient_faults_are_retried_with_a_line_each():
    waits: list[float] = []
    lines: list[str] = []
    b, model = backbone(openai.APIConnectionError(request=REQUEST), status(503), status(429, {"retry-after": "0.04"}),
                        AIMessage("done"))
    reply = b.invoke(model, [], say=lines.append, sleep=waits.append)
    assert reply.content == "done" and len(model.requests) == 4
    assert [line.split(": ", 1)[1].split(";")[0] for line in lines] == ["APIConnectionError", "HTTP 503", "HTTP 429"]
    assert waits[2] >= 0.04  # the server's Retry-After is honoured (capped by max_wait_s)


@pytest.mark.parametrize("code,kind", [(401, "refused the API key"), (404, "does not know this model"),
                                       (400, "refused the request: HTTP 400")])
def test_other_errors_stop_at_once(code, kind):
    b, model = backbone(status(code), AIMessage("never"))
    with pytest.raises(BackboneError, match=kind):
        b.invoke(model, [], sleep=lambda s: None)
    assert len(model.requests) == 1


def test_the_attempts_the_deadline_and_the_run_budget_bound_the_retries():
    b, model = backbone(*[status(500)] * 5, retry=RetrySettings(max_attempts=3, initial_wait_s=0.01, max_wait_s=0.01))
    with pytest.raises(BackboneError, match="HTTP 500"):
        b.invoke(model, [], sleep=lambda s: None)
    assert len(model.requests) == 3
    b, model = backbone(*[status(500)] * 5, retry=RetrySettings(initial_wait_s=5, max_wait_s=5, call_deadline_s=1))
    with pytest.raises(BackboneUnreachable, match="past the call deadline of 1 s"):
        b.invoke(model, [], sleep=lambda s: None)
    b, model = backbone(*[status(500)] * 5, retry=RetrySettings(initial_wait_s=1, max_wait_s=1), budget=0.4)
    with pytest.raises(BackboneUnreachable, match="retry budget of 0.4 s of waiting is spent"):
        b.invoke(model, [], sleep=lambda s: None)
    assert len(model.requests) == 1  # the first wait (0.5 to 1 s) did not fit what the run had left


def test_each_retry_is_a_trace_run(tmp_path):
    from graph.tracing import JsonlSink, RoleTracer, load_runs

    sink = JsonlSink(tmp_path / "runs.jsonl")
    b, model = backbone(status(502), AIMessage("ok"))
    from langchain_core.runnables import RunnableLambda

    RunnableLambda(lambda _: b.invoke(model, [], sleep=lambda s: None), name="planner").invoke(
        None, config={"callbacks": [RoleTracer(sink=sink, send=False)]})
    runs = load_runs(tmp_path)
    retry = [r for r in runs.values() if r["name"] == "backbone_retry"]
    assert len(retry) == 1 and retry[0]["inputs"]["fault"] == "HTTP 502" and retry[0]["parent_run_id"]


class Echo(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint that fails every chat call with a 400 whose body echoes the request headers."""

    def do_POST(self):  # noqa: N802
        body = json.dumps({"error": {"message": f"bad request; you sent {dict(self.headers)}",
                                     "type": "invalid_request_error"}}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_key_echoed_by_the_server_reaches_no_error_stderr_or_checkpoint(tmp_path, monkeypatch, capsys):
    """The server echoes `Authorization: Bearer <key>` in its error body; the node fails with a BackboneError, the
    CLI prints it, and the failed task's error is written into a real checkpoint database."""
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.graph import END, START, StateGraph
    from typing_extensions import TypedDict

    from core.settings import RunSettings
    from graph.build import checkpoint_serde
    from roles.llm import load_backbone

    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("OPENAI_COMPATIBLE_API_KEY", KEY)
    monkeypatch.setenv("UNRELATED", KEY)  # not a key-like name: only the shape and the configured key redact it
    b = load_backbone(f"openai-compatible:http://127.0.0.1:{server.server_port}/v1#m",
                      RunSettings(task="gsm8k", workspace=tmp_path / "unused"), check=False)

    class S(TypedDict, total=False):
        x: int

    def node(state):
        b.invoke(b.model, [("user", "hi")])
        return {}

    g = StateGraph(S)
    g.add_node("planner", node)
    g.add_edge(START, "planner")
    g.add_edge("planner", END)
    db = tmp_path / "checkpoints.sqlite"
    conn = sqlite3.connect(db, check_same_thread=False)
    graph = g.compile(checkpointer=SqliteSaver(conn, serde=checkpoint_serde()))
    try:
        with pytest.raises(BackboneError) as err:
            graph.invoke({"x": 1}, {"configurable": {"thread_id": "t"}}, durability="sync")
    finally:
        conn.close()
        server.shutdown()
    assert "bad request; you sent" in err.value.headline() and KEY not in err.value.headline()
    assert "[redacted]" in err.value.headline()
    print(err.value.headline(), file=__import__("sys").stderr)
    assert KEY not in capsys.readouterr().err
    raw = db.read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("checkpoints.sqlite-*"))
    assert KEY.encode() not in raw and b"[redacted]" in raw  # the error was written, redacted


def test_an_unknown_model_or_a_refused_key_stops_at_start(tmp_path, monkeypatch):
    from fakes import OpenAIServer, ScriptedChatModel

    from roles.llm import load_backbone

    with OpenAIServer(ScriptedChatModel(replies=[]), name="served-model") as server:
        with pytest.raises(BackboneError, match="does not serve model 'other'.*served-model"):
            load_backbone(f"openai-compatible:{server.url}#other")
        assert load_backbone(f"openai-compatible:{server.url}#served-model").spec.endswith("#served-model")

