"""The `local` backbone for real: llama-cpp-python's server on the embedded SmolLM2 GGUF, reached over HTTP.

The 135M model writes poor prose, but every handoff is grammar-constrained to the bounded form and checked in code,
so what comes back is always a valid typed object, and contaminated data is never approved.
"""

from __future__ import annotations

import httpx
import pytest

# Module-scoped fixtures and helpers shared with the scripted-model tests.
from test_agents import clean, contaminated, ctx, evidence  # noqa: F401

from core.handoffs import IterationPlan, ValidationVerdict
from roles.agent.policy import AgentPolicy

pytestmark = pytest.mark.slow


def _require_server() -> None:
    try:
        import llama_cpp  # noqa: F401
        import llama_cpp.server.app  # noqa: F401
    except ImportError as e:
        pytest.skip(f"the local backbone needs llama-cpp-python with its server extra "
                    f"(pip install 'llama-cpp-python[server]'): {e}")


@pytest.fixture(scope="module")
def local():
    from roles.llm import load_backbone, local_server

    _require_server()
    backbone = load_backbone("local")
    server = local_server()
    assert server.url.startswith("http://127.0.0.1:") and server.proc.poll() is None
    return backbone, server


def _posts(server) -> int:
    return server.log_path.read_text(errors="replace").count("POST /v1/chat/completions")


def test_local_planner_hands_off_a_valid_plan(ctx, local):  # noqa: F811

    backbone, server = local
    ev = evidence(ctx)
    policy = AgentPolicy("planner", backbone)
    policy.attach(ctx)
    before = _posts(server)

    plan = policy.plan(ev)

    assert isinstance(plan, IterationPlan)
    assert (plan.iteration, plan.stage) == (ev.iteration, ev.stage)
    assert 1 <= plan.data.max_rows <= ev.affordable_rows  # the budget bound holds
    assert _posts(server) > before  # decided over real HTTP calls


def test_local_validation_never_approves_contaminated_data(ctx, local, contaminated, clean):  # noqa: F811
    backbone, server = local
    policy = AgentPolicy("data_validation", backbone)
    policy.attach(ctx)
    manifest, findings, leaked = contaminated

    verdict = policy.judge(findings, manifest)

    assert isinstance(verdict, ValidationVerdict) and verdict.decision != "approve"
    assert verdict.checks == findings.checks and set(verdict.contaminated_ids) == leaked

    manifest, findings = clean
    verdict = policy.judge(findings, manifest)  # any decision is allowed here; it must be well formed
    assert isinstance(verdict, ValidationVerdict) and verdict.checks == findings.checks


def test_a_local_server_answers_then_stops():
    from roles.llm import LocalServer
    from tools.model import embedded_gguf

    _require_server()
    server = LocalServer(embedded_gguf(), threads=1, n_ctx=512)
    server.start()
    try:
        assert httpx.get(server.url + "/models", timeout=5).json()["data"][0]["id"] == "local"
    finally:
        server.stop()
    assert server.proc.poll() is not None
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/models", timeout=5)
