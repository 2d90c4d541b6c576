"""A backbone behind a flaky network: one LLM-driven iteration finishes with exit 0 and no manual resume.

Every role decides through the real OpenAI client, over HTTP, through a local proxy that drops connections, stalls
past the read timeout and answers HTTP 500 and 429 on a schedule, in front of the scripted model served as an
OpenAI-compatible endpoint. Training and evaluation are real (tiny model, small GSM8K slice)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from fakes import OpenAIServer, ScriptedChatModel, fill_handoff

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
FAULTS = {1: "drop", 2: "500", 4: "stall", 6: "429", 9: "drop", 10: "500"}
"""Chat request number → what the proxy does to it (the rest pass through)."""


class FlakyProxy:
    def __init__(self, upstream: str, faults: dict[int, str], stall_s: float):
        self.upstream, self.faults, self.stall_s = upstream, faults, stall_s
        self.seen: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802
                self._forward(None)

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                proxy.seen.append("chat")
                fault = proxy.faults.get(len(proxy.seen))
                if fault == "drop":  # the connection goes away mid-request
                    self.close_connection = True
                    return
                if fault in ("500", "429"):
                    self._reply(int(fault), b'{"error": {"message": "try again"}}', {"Retry-After": "1"})
                    return
                if fault == "stall":
                    time.sleep(proxy.stall_s)
                self._forward(body)

            def _forward(self, body: bytes | None) -> None:
                url = proxy.upstream + self.path.removeprefix("/v1")
                r = httpx.request(self.command, url, content=body, headers={"Content-Type": "application/json"},
                                  timeout=60)
                self._reply(r.status_code, r.content, {})

            def _reply(self, code: int, data: bytes, headers: dict[str, str]) -> None:
                try:
                    self.send_response(code)
                    for k, v in {
                        "Content-Type": "application/json",
                        "Content-Length": str(len(data)),
                        **headers,
                    }.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up on a stalled request
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}/v1"


def test_one_llm_driven_iteration_rides_out_drops_stalls_and_5xx(small_data_dir, tiny_model_dir, tmp_path):
    model = ScriptedChatModel(replies=[fill_handoff], repeat_last=True)
    config = tmp_path / "run.yaml"
    config.write_text("retry:\n  initial_wait_s: 0.2\n  max_wait_s: 1.5\n  read_timeout_s: 3\n")
    with OpenAIServer(model) as server:
        proxy = FlakyProxy(server.url, FAULTS, stall_s=6)
        try:
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "graph.run",
                    "--task",
                    "gsm8k",
                    "--data-dir",
                    str(small_data_dir),
                    "--base-model",
                    str(tiny_model_dir),
                    "--backbone",
                    f"openai-compatible:{proxy.url}#scripted",
                    "--max-iterations",
                    "1",
                    "--device",
                    "cpu",
                    "--config",
                    str(config),
                    "--workspace",
                    str(tmp_path / "ws"),
                ],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=1500,
            )
        finally:
            proxy.httpd.shutdown()
    assert proc.returncode == 0, proc.stderr[-3000:]
    retries = [line for line in proc.stdout.splitlines() if "; retry " in line]
    faults = [line.split(": ", 2)[-1].split(";")[0] for line in retries]
    assert {"HTTP 500", "HTTP 429"} <= set(faults) and any("Timeout" in f or "Connection" in f for f in faults), retries
    assert len(retries) == len(FAULTS)  # each fault cost exactly one retry
    assert "stopped: iteration cap 1 reached" in proc.stdout
    record = json.loads((tmp_path / "ws" / "task" / "iterations" / "001" / "record.json").read_text())
    assert record["status"] == "completed" and record["score"] is not None
    trace_free = (tmp_path / "ws" / "task" / "experiment_log.md").read_text()
    assert "### Iteration 1:" in trace_free and model.requests  # every decision went through the scripted model


def test_a_spent_token_budget_stops_the_run_and_a_resume_with_more_finishes_it(small_data_dir, tiny_model_dir,
                                                                                tmp_path):
    model = ScriptedChatModel(replies=[fill_handoff], repeat_last=True)
    ws = tmp_path / "ws"
    with OpenAIServer(model) as server:
        base = [sys.executable, "-m", "graph.run"]
        first = subprocess.run(base + ["--task", "gsm8k", "--data-dir", str(small_data_dir), "--base-model",
                                       str(tiny_model_dir), "--backbone", f"openai-compatible:{server.url}#scripted",
                                       "--max-iterations", "1", "--device", "cpu", "--max-llm-tokens", "1",
                                       "--workspace", str(ws)], cwd=REPO, capture_output=True, text=True, timeout=900)
        assert first.returncode == 5, first.stderr[-2000:]
        assert "the run's LLM token budget is spent" in first.stderr and f"--resume {ws}" in first.stderr
        calls = len(model.requests)
        again = subprocess.run(base + ["--resume", str(ws), "--max-llm-tokens", "100000000"], cwd=REPO,
                               capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(model.requests) > calls and "LLM tokens, total:" in again.stdout
    assert json.loads((ws / "run_settings.json").read_text())["max_llm_tokens"] == 100000000
