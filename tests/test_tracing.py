"""Traces: one real graph pass (stage 0, then interrupted) traced to a local LangSmith-compatible receiver and to
an offline trace folder at once; the folder is then replayed into a second receiver and rendered as HTML."""

from __future__ import annotations

import email.parser
import email.policy
import gzip
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from roles.context import RunContext

API_KEY = "lsv2_test_key_that_must_not_be_traced"
OTHER_SECRET = "sk-another-secret-that-must-not-be-traced"


class Receiver:
    """A minimal LangSmith-compatible endpoint on 127.0.0.1: answers GET /info, stores POST /runs/multipart and
    /runs/batch, and merges what arrives into runs by id (post, then patch)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        store = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _reply(self, body: bytes) -> None:
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                store.requests.append(("GET", self.path, dict(self.headers), b""))
                self._reply(json.dumps({"version": "0.0.0-test"}).encode() if self.path.startswith("/info") else b"{}")

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                store.requests.append(("POST", self.path, dict(self.headers), body))
                self._reply(b"{}")

            do_PATCH = do_POST

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def runs(self) -> dict[str, dict[str, Any]]:
        runs: dict[str, dict[str, Any]] = {}
        for method, path, headers, body in self.requests:
            if method != "POST":
                continue
            if path.endswith("/runs/multipart"):
                parts = _multipart(headers, body)
            elif path.endswith("/runs/batch"):
                batch = json.loads(body)
                parts = [(f"{op}.{r['id']}", r) for op in ("post", "patch") for r in batch.get(op, [])]
            else:
                continue
            for name, value in parts:
                _, run_id, *field = name.split(".")
                run = runs.setdefault(run_id, {})
                if field:
                    run[field[0]] = value
                else:
                    run.update(value)
        return runs

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _multipart(headers: dict[str, str], body: bytes) -> list[tuple[str, Any]]:
    content_type = next(v for k, v in headers.items() if k.lower() == "content-type")
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    out = []
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        out.append((name, json.loads(part.get_payload(decode=True))))
    return out


@pytest.fixture
def stage0_context(tmp_path: Path, data_dir: Path) -> RunContext:
    """A real run context built as conftest's make_context builds it, around a base-model folder with a config and
    tokenizer but no weights: stage 0 never loads weights, and skipping the tiny model saves the torch start-up."""
    from core.settings import RunSettings
    from graph.run import build_context

    model = tmp_path / "placeholder-model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')
    from transformers import AutoTokenizer

    from tools.model import convert_embedded

    AutoTokenizer.from_pretrained(convert_embedded()).save_pretrained(model)
    settings = RunSettings(
        task="gsm8k", workspace=tmp_path / "ws", data_dir=data_dir, base_model=str(model), device="cpu"
    )
    settings.save()
    return build_context(settings)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def langsmith_env(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    """LangSmith tracing on, pointed at the local receiver."""
    from langsmith import utils as ls_utils

    for k, v in {
        "LANGSMITH_TRACING": "true",
        "LANGSMITH_ENDPOINT": receiver.url,
        "LANGSMITH_API_KEY": API_KEY,
        "OPENAI_API_KEY": OTHER_SECRET,
    }.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("LANGSMITH_PROJECT", raising=False)
    ls_utils.get_env_var.cache_clear()  # langsmith caches environment lookups per process
    yield receiver
    ls_utils.get_env_var.cache_clear()


def _check_tree(runs: dict[str, dict[str, Any]], workspace: Path) -> None:
    """Root `posttrain-graph`, one `task_definition` node run under it, with role metadata and proper links."""
    root = next(r for r in runs.values() if r["name"] == "posttrain-graph")
    node = next(r for r in runs.values() if r["name"] == "task_definition")
    assert root.get("parent_run_id") is None and root["trace_id"] == root["id"]
    assert node["parent_run_id"] == root["id"] and node["trace_id"] == root["id"]
    assert node["dotted_order"].startswith(root["dotted_order"] + ".")
    assert all(r["trace_id"] == root["id"] for r in runs.values())
    md = node["extra"]["metadata"]
    assert (md["role"], md["stage"], md["iteration"], md["workspace"]) == ("task_definition", 0, 0, str(workspace))
    assert "role:task_definition" in node["tags"]
    assert root["extra"]["metadata"]["workspace"] == str(workspace) and "role" not in root["extra"]["metadata"]
    assert node["outputs"]["stage"] == 1 and node["end_time"]


def test_one_graph_pass_reaches_langsmith_and_the_trace_folder(
    stage0_context: RunContext, langsmith_env: Receiver, tmp_path: Path
) -> None:
    from langgraph.checkpoint.memory import InMemorySaver

    from graph.build import builder
    from graph.tracing import flush_traces, load_runs, tracing_config, view

    ctx = stage0_context
    trace_dir = tmp_path / "trace"
    config = {"configurable": {"thread_id": "t"}, **tracing_config(ctx.settings, trace_dir)}
    graph = builder().compile(checkpointer=InMemorySaver(), interrupt_after=["task_definition"])
    graph.invoke({"stage": 0}, config, context=ctx)
    flush_traces(config)

    sent = langsmith_env.runs()
    local = load_runs(trace_dir)
    _check_tree(sent, ctx.settings.workspace)
    _check_tree(local, ctx.settings.workspace)
    assert set(local) == set(sent)  # the same runs, by id
    for run_id, run in local.items():
        assert (run["parent_run_id"], run["dotted_order"], run["name"]) == (
            sent[run_id].get("parent_run_id"),
            sent[run_id]["dotted_order"],
            sent[run_id]["name"],
        )
    # one tracer only: LangChain did not add its own beside ours
    assert len([r for r in sent.values() if r["name"] == "task_definition"]) == 1
    # no key in what was sent (it travels in a header only) nor in the trace folder
    text = (trace_dir / "runs.jsonl").read_text()
    for secret in (API_KEY, OTHER_SECRET):
        assert secret not in text
        assert secret.encode() not in b"".join(b for _, _, _, b in langsmith_env.requests)

    # the offline folder replays into any LangSmith-compatible endpoint, ids and links kept
    from graph.tracing import upload

    second = Receiver()
    try:
        assert upload(trace_dir, api_url=second.url, api_key="k" * 12, project="replay") == len(local)
        replayed = second.runs()
    finally:
        second.close()
    _check_tree(replayed, ctx.settings.workspace)
    assert set(replayed) == set(local)

    page = view(trace_dir).read_text()
    assert "task_definition" in page and "posttrain-graph" in page and "<script" not in page


def test_no_tracing_without_env_or_folder(tmp_path: Path) -> None:
    from core.settings import RunSettings
    from graph.tracing import tracing_config

    cfg = tracing_config(RunSettings(task="gsm8k", workspace=tmp_path / "ws"), None, env={"LANGSMITH_API_KEY": API_KEY})
    assert cfg["callbacks"] == [] and cfg["run_name"] == "posttrain-graph"
    assert cfg["metadata"]["workspace"] == str(tmp_path / "ws")


def test_jsonl_redacts_secrets_and_last_line_wins(tmp_path: Path) -> None:
    """Unit level, nothing sent: a chain whose inputs hold a key; a run killed mid-way stays as its start line."""
    from langchain_core.runnables import RunnableLambda

    from graph.tracing import JsonlSink, RoleTracer, load_runs, render_view, secret_values

    sink = JsonlSink(tmp_path / "runs.jsonl", secrets=secret_values({"MY_API_KEY": OTHER_SECRET, "HOME": "/r"}))
    tracer = RoleTracer(sink=sink, send=False)
    RunnableLambda(lambda x: {"echo": x}).invoke({"key": OTHER_SECRET}, {"callbacks": [tracer], "run_name": "echo"})
    lines = (tmp_path / "runs.jsonl").read_text().splitlines()
    assert len(lines) == 2 and OTHER_SECRET not in "".join(lines) and "[redacted]" in lines[1]
    with (tmp_path / "runs.jsonl").open("a") as f:  # a start line with no end, then a torn line
        f.write(json.dumps({**json.loads(lines[0]), "id": "open-run", "dotted_order": "z", "end_time": None}))
        f.write('\n{"id": "torn')
    runs = load_runs(tmp_path)
    assert list(runs)[-1] == "open-run" and runs["open-run"]["end_time"] is None
    assert next(iter(runs.values()))["outputs"] == {"echo": {"key": "[redacted]"}}
    assert "open" in render_view(runs)


def test_node_metadata_follows_the_iteration_a_node_worked_on(tmp_path: Path) -> None:
    """On a small real LangGraph graph: the planner's run carries the iteration it planned, later nodes the same
    one, and a router run inside a node gets no role."""
    from langgraph.graph import END, START, StateGraph
    from typing_extensions import TypedDict

    from core.settings import RunSettings
    from graph.tracing import load_runs, tracing_config

    class S(TypedDict, total=False):
        stage: int
        iteration: int

    g = StateGraph(S)
    g.add_node("planner", lambda s: {"iteration": s.get("iteration", 0) + 1})
    g.add_node("trainer", lambda s: {})
    g.add_edge(START, "planner")
    g.add_conditional_edges("planner", lambda s: "trainer", ["trainer"])
    g.add_edge("trainer", END)
    config = tracing_config(RunSettings(task="gsm8k", workspace=tmp_path / "ws"), tmp_path / "trace", env={})
    g.compile().invoke({"stage": 2, "iteration": 3}, config)
    runs = list(load_runs(tmp_path / "trace").values())
    md = {r["name"]: r["extra"]["metadata"] for r in runs}
    assert (md["planner"]["role"], md["planner"]["iteration"], md["planner"]["stage"]) == ("planner", 4, 2)
    assert (md["trainer"]["role"], md["trainer"]["iteration"]) == ("trainer", 4)
    assert all("role" not in m for name, m in md.items() if name not in ("planner", "trainer"))
    assert len(runs) > 3  # the root and the router are there too
