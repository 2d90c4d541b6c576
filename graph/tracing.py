"""Traces of a run: LangSmith (hosted or self-hosted) and an offline trace folder with the same runs.

`tracing_config(settings, trace_dir)` returns the part of the graph's RunnableConfig that turns tracing on:

- With `LANGSMITH_TRACING=true` (plus `LANGSMITH_ENDPOINT` for a self-hosted server, and `LANGSMITH_API_KEY`) the
  runs go to LangSmith through LangChain's own tracer. The graph's root run is named `posttrain-graph`, each node
  run is named after its role (LangGraph names node runs after the node), and every node run carries
  `role`, `iteration`, `stage` and `workspace` in its metadata and a `role:<name>` tag.
- With a trace folder (`graph.run --trace DIR`) the same runs, with the same ids, parents and dotted orders, are
  appended to `DIR/runs.jsonl`: one JSON object per line in LangSmith's run schema, written when a run starts and
  again when it ends (the last line of an id wins), so a run killed mid-training still leaves its open runs.

The trace folder needs no server: `python -m graph.tracing view DIR` writes `DIR/traces.html` (a static,
offline tree of the runs), and `python -m graph.tracing upload DIR` replays the runs into any LangSmith-compatible
endpoint later. API keys never reach a trace: every line passes through the one redactor (`core.redact`) before it
is written, and a run's error is redacted before it is sent.

This module imports langchain_core; import it inside the function that needs it.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import sys
import threading
from collections.abc import Iterable, Mapping
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from langchain_core.tracers.langchain import LangChainTracer
from langchain_core.tracers.schemas import Run

from core.redact import redact, register_secret

if TYPE_CHECKING:
    from core.settings import RunSettings

ROOT_RUN_NAME = "posttrain-graph"
DEFAULT_PROJECT = "posttrain-graph"
RUNS_FILE = "runs.jsonl"
VIEW_FILE = "traces.html"
_TRACING_FLAGS = ("LANGSMITH_TRACING", "LANGSMITH_TRACING_V2", "LANGCHAIN_TRACING_V2", "LANGCHAIN_TRACING")


# --------------------------------------------------------------------------------------------- role metadata

def _is_node_run(run: Run) -> bool:
    """A graph node's own run (not a router or other child that LangGraph runs inside the node)."""
    return run.run_type == "chain" and run.parent_run_id is not None and run.metadata.get("langgraph_node") == run.name


def _annotate_start(run: Run) -> None:
    """Role, stage and iteration from the node's input state, as metadata and a tag."""
    if not _is_node_run(run):
        return
    state = run.inputs if isinstance(run.inputs, Mapping) else {}
    # a fresh dict: the one in run.extra may be shared with the config that every sibling run inherits
    run.extra["metadata"] = {**run.metadata, "role": run.name, "stage": int(state.get("stage", 0)),
                             "iteration": int(state.get("iteration", 0))}
    run.tags = sorted({*(run.tags or []), f"role:{run.name}"})


def _annotate_end(run: Run) -> None:
    """The iteration a node worked on: the planner starts a new one, so its output decides."""
    if _is_node_run(run) and isinstance(run.outputs, Mapping) and isinstance(run.outputs.get("iteration"), int):
        run.extra["metadata"] = {**run.metadata, "iteration": run.outputs["iteration"]}


class RoleTracer(LangChainTracer):
    """LangChain's LangSmith tracer, plus role metadata on every node run and an optional JSONL copy of every run.

    One tracer feeds both sinks, so the trace folder holds exactly the runs LangSmith gets (same ids, times and
    dotted orders). With `send=False` nothing goes to LangSmith and only the folder is written. Being a
    LangChainTracer, it also keeps LangChain from adding a second, plain tracer when LANGSMITH_TRACING is set.
    """

    def __init__(self, *args: Any, sink: JsonlSink | None = None, send: bool = True, **kwargs: Any) -> None:
        if not send and kwargs.get("client") is None:
            from langsmith import Client

            # LangChain's default client starts a thread that calls the hosted API's /info at once; a client
            # without batching makes no request at all, and with send=False it is never asked to.
            kwargs["client"] = Client(auto_batch_tracing=False)
        super().__init__(*args, **kwargs)
        self.sink, self.send = sink, send

    def copy_with_metadata_defaults(self, **kwargs: Any) -> RoleTracer:
        # LangChain copies tracers when a LangSmith context adds metadata; the copy must keep both sinks
        copy = super().copy_with_metadata_defaults(**kwargs)
        copy.sink, copy.send = self.sink, self.send
        return copy

    def _start_trace(self, run: Run) -> None:
        super()._start_trace(run)
        _annotate_start(run)  # before the run is posted

    def _end_trace(self, run: Run) -> None:
        _annotate_end(run)  # before the run is patched
        super()._end_trace(run)

    # LangChainTracer posts every run through _persist_run_single (at its start) and patches it through
    # _update_run_single (at its end, after usage metadata was added): the JSONL copy is taken at the same points.
    def _persist_run_single(self, run: Run) -> None:
        run.error = redact(run.error) if run.error else run.error
        if self.sink:
            self.sink.write(run)
        if self.send:
            super()._persist_run_single(run)

    def _update_run_single(self, run: Run) -> None:  # an instance method here (static upstream): it needs self
        run.error = redact(run.error) if run.error else run.error
        if self.sink:
            self.sink.write(run)
        if self.send:
            LangChainTracer._update_run_single(run)


class JsonlSink:
    """Appends runs, in LangSmith's run schema, to a JSONL file, with secrets redacted from every line."""

    def __init__(self, path: Path, secrets: Iterable[str] = ()) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for secret in secrets:
            register_secret(secret)
        self._lock = threading.Lock()  # nodes may run in worker threads

    def write(self, run: Run) -> None:
        line = redact(json.dumps(run_record(run), default=_jsonable, ensure_ascii=False))
        with self._lock, self.path.open("a", encoding="utf-8") as f:
            f.write(line + "\n")


def run_record(run: Run) -> dict[str, Any]:
    """A run as LangSmith's ingest API takes it (the fields `Client.batch_ingest_runs` needs, and its content)."""
    return {"id": str(run.id), "trace_id": str(run.trace_id), "parent_run_id": _str_or_none(run.parent_run_id),
            "dotted_order": run.dotted_order, "name": run.name, "run_type": run.run_type,
            "start_time": run.start_time, "end_time": run.end_time, "inputs": run.inputs, "outputs": run.outputs,
            "error": run.error, "tags": list(run.tags or []), "extra": {"metadata": dict(run.metadata)}}


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _jsonable(obj: Any) -> Any:
    """json.dumps fallback for what a graph state holds: pydantic models, enums, paths, datetimes, ids."""
    from pydantic import BaseModel

    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, (UUID, Path)):
        return str(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, bytes):
        return f"<{len(obj)} bytes>"
    return repr(obj)  # anything else is kept as its repr rather than failing the run


# --------------------------------------------------------------------------------------------- config

def secret_values(env: Mapping[str, str]) -> list[str]:
    """Values of key-like variables of `env` (API keys, tokens): they must never appear in a trace."""
    from core.redact import MIN_SECRET_LEN, SECRET_NAME

    return [v for k, v in env.items() if SECRET_NAME.search(k) and len(v) >= MIN_SECRET_LEN]


def langsmith_enabled(env: Mapping[str, str]) -> bool:
    return any(env.get(flag, "").strip().lower() == "true" for flag in _TRACING_FLAGS)


def tracing_config(settings: RunSettings, trace_dir: Path | None = None,
                   env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The RunnableConfig keys that trace a run: merge them into the config given to `graph.invoke`.

    Returns `run_name`, `tags`, `metadata` (workspace, task, backbone: inherited by every run) and `callbacks`:
    one RoleTracer that sends to LangSmith when LANGSMITH_TRACING=true and writes `trace_dir/runs.jsonl` when
    `trace_dir` is given; no callbacks when neither.
    """
    env = os.environ if env is None else env
    send = langsmith_enabled(env)
    callbacks: list[RoleTracer] = []
    if send or trace_dir is not None:
        from langsmith import Client

        # Explicit endpoint and key: langsmith caches environment lookups, and a test or a long-lived process
        # may change them after the first client was made.
        client = Client(api_url=env.get("LANGSMITH_ENDPOINT") or env.get("LANGCHAIN_ENDPOINT") or None,
                        api_key=env.get("LANGSMITH_API_KEY") or env.get("LANGCHAIN_API_KEY") or None) if send else None
        project = env.get("LANGSMITH_PROJECT") or env.get("LANGCHAIN_PROJECT") or DEFAULT_PROJECT
        sink = JsonlSink(Path(trace_dir) / RUNS_FILE, secrets=secret_values(env)) if trace_dir is not None else None
        callbacks.append(RoleTracer(client=client, project_name=project, sink=sink, send=send))
    metadata = {"workspace": str(settings.workspace), "run": settings.workspace.name, "task": settings.task,
                "backbone": settings.backbone}
    return {"run_name": ROOT_RUN_NAME, "tags": [f"task:{settings.task}"], "metadata": metadata,
            "callbacks": callbacks}


def flush_traces(config: Mapping[str, Any]) -> None:
    """Wait until the LangSmith client has sent everything (the JSONL tracer writes synchronously)."""
    for cb in config.get("callbacks") or []:
        if isinstance(cb, LangChainTracer):
            cb.wait_for_futures()


# --------------------------------------------------------------------------------------------- trace folder

def load_runs(trace_dir: Path) -> dict[str, dict[str, Any]]:
    """The runs of a trace folder by id: the last line written for each id (its end, or its start if it never
    ended), in dotted order, so parents come before their children."""
    path = Path(trace_dir) / RUNS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {RUNS_FILE} in {trace_dir}: not a trace folder (graph.run --trace DIR)")
    runs: dict[str, dict[str, Any]] = {}
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                if number == _count_lines(path):  # a process killed mid-write leaves a torn last line
                    print(f"warning: {path}:{number}: torn last line ignored ({e})", file=sys.stderr)
                    continue
                raise ValueError(f"{path}:{number}: not JSON: {e}") from None
            runs[record["id"]] = record
    return dict(sorted(runs.items(), key=lambda kv: kv[1]["dotted_order"]))


def _count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for _ in f)


def upload(trace_dir: Path, *, api_url: str | None = None, api_key: str | None = None,
           project: str | None = None) -> int:
    """Replay a trace folder into a LangSmith-compatible endpoint (ids kept: uploading twice updates, not
    duplicates). The key comes from the arguments or the environment, never from the trace. Returns the count."""
    from langsmith import Client

    runs = [{**r, "session_name": project or DEFAULT_PROJECT} for r in load_runs(trace_dir).values()]
    client = Client(api_url=api_url or os.environ.get("LANGSMITH_ENDPOINT") or None,
                    api_key=api_key or os.environ.get("LANGSMITH_API_KEY") or None)
    client.batch_ingest_runs(create=runs)
    client.flush()
    return len(runs)


def render_view(runs: Mapping[str, Mapping[str, Any]], title: str = "posttrain-graph traces") -> str:
    """A static HTML tree of the runs (nested <details>), with inline CSS and no script: opens offline."""
    children: dict[str | None, list[Mapping[str, Any]]] = {}
    for r in runs.values():
        parent = r.get("parent_run_id")
        children.setdefault(parent if parent in runs else None, []).append(r)  # orphans go to the top

    def node(r: Mapping[str, Any]) -> str:
        md = (r.get("extra") or {}).get("metadata") or {}
        facts = [f"{k} {md[k]}" for k in ("iteration", "stage") if k in md]
        took = _duration(r.get("start_time"), r.get("end_time"))
        state = "error" if r.get("error") else "open" if not r.get("end_time") else ""
        head = (f"<b>{html.escape(str(r['name']))}</b> <span class=k>{html.escape(str(r.get('run_type')))}</span> "
                f"<span class=t>{took}</span> <span class=m>{html.escape(', '.join(facts))}</span>"
                + (f" <span class={state}>{state}</span>" if state else ""))
        body = [f"<div class=m>id {html.escape(str(r['id']))} · start {html.escape(str(r.get('start_time')))}</div>"]
        if r.get("error"):
            body.append(f"<pre class=error>{html.escape(str(r['error'])[-4000:])}</pre>")
        for key in ("inputs", "outputs", "extra"):
            if r.get(key):
                text = json.dumps(r[key], indent=1, ensure_ascii=False)
                cut = f"\n… {len(text) - 20000} more characters" if len(text) > 20000 else ""
                body.append(f"<details><summary>{key}</summary><pre>{html.escape(text[:20000] + cut)}</pre></details>")
        kids = "".join(node(c) for c in children.get(str(r["id"]), []))
        return f"<details class=run{' open' if r.get('parent_run_id') is None else ''}><summary>{head}</summary>" \
               f"{''.join(body)}{kids}</details>"

    css = ("body{font-family:system-ui,sans-serif;margin:20px;color:#222}details.run{margin:3px 0 3px 18px;"
           "border-left:2px solid #dde}summary{cursor:pointer;padding:2px 4px}.k{color:#4a6fa5}.t{color:#555}"
           ".m{color:#777;font-size:.9em}.error{color:#b03a2e}.open{color:#c27c0e}pre{background:#f6f8fa;"
           "padding:8px;overflow-x:auto;font-size:.85em;max-height:480px}")
    roots = "".join(node(r) for r in children.get(None, []))
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{css}</style></head><body><h1>{html.escape(title)}</h1><p class=m>{len(runs)} runs</p>"
            f"{roots or '<p>no runs</p>'}</body></html>")


def _duration(start: str | None, end: str | None) -> str:
    if not start or not end:
        return "…"
    seconds = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    return f"{seconds:.2f}s" if seconds < 60 else f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def view(trace_dir: Path) -> Path:
    """Write DIR/traces.html and return its path."""
    out = Path(trace_dir) / VIEW_FILE
    out.write_text(render_view(load_runs(trace_dir), f"traces: {Path(trace_dir).resolve().name}"), encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m graph.tracing", description="Offline trace folders.")
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("view", help="write DIR/traces.html, a static tree of the runs")
    v.add_argument("trace_dir", type=Path)
    u = sub.add_parser("upload", help="replay DIR into a LangSmith-compatible endpoint (key: LANGSMITH_API_KEY)")
    u.add_argument("trace_dir", type=Path)
    u.add_argument("--endpoint", help="default: LANGSMITH_ENDPOINT, else LangSmith's hosted API")
    u.add_argument("--project", default=DEFAULT_PROJECT)
    args = p.parse_args(argv)
    try:
        if args.command == "view":
            print(view(args.trace_dir))
        else:
            print(f"{upload(args.trace_dir, api_url=args.endpoint, project=args.project)} runs uploaded")
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
