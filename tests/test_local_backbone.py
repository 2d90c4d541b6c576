"""The `local` backbone for real: the project's server (roles/local_server.py) on the embedded SmolLM2, converted
from its GGUF, reached over HTTP.

The 135M model writes poor prose, but every handoff is constrained to the bounded form's JSON schema and checked in
code, so what comes back is always a valid typed object, and contaminated data is never approved.
"""

from __future__ import annotations

import httpx
import pytest

# Module-scoped fixtures and helpers shared with the scripted-model tests.
from test_agents import clean, contaminated, ctx, evidence  # noqa: F401

from core.handoffs import IterationPlan, ValidationVerdict
from roles.agent.policy import AgentPolicy

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local():
    from roles.llm import load_backbone, local_server

    backbone = load_backbone("local")  # every install has the server's packages: no skip
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


def test_the_converted_tokenizer_lets_a_forced_call_write_a_space_and_a_quote(embedded_model_dir):
    """The real tokenizer under llguidance (no server): without roles.local_server.byte_level_fix a forced call
    stopped after `{"decision":`, because ` "` was refused."""
    from transformers import AutoTokenizer

    from roles.agent.forms import VerdictForm
    from roles.local_server import JsonConstraint

    tok = AutoTokenizer.from_pretrained(embedded_model_dir)
    constraint = JsonConstraint.for_hf(tok, len(tok))
    matcher = constraint.matcher(VerdictForm.model_json_schema())
    for t in tok.encode('{"decision": "back_to_selection", "reasons": ["the contamination check failed"]}'):
        assert constraint.allowed(matcher)[t], repr(tok.decode([t]))
        assert matcher.consume_token(t)
    assert matcher.is_accepting() and constraint.allowed(matcher)[tok.eos_token_id]


def test_a_local_server_answers_then_stops(embedded_model_dir):
    from roles.agent.forms import VerdictForm
    from roles.llm import LocalServer

    server = LocalServer(embedded_model_dir, threads=1, n_ctx=512)
    server.start()
    try:
        assert httpx.get(server.url + "/models", timeout=5).json()["data"][0]["id"] == "local"
        tool = {"type": "function", "function": {"name": "handoff", "parameters": VerdictForm.model_json_schema()}}
        body = {"model": "local", "temperature": 0, "max_tokens": 300, "tools": [tool],
                "messages": [{"role": "user", "content": "The contamination check failed. Hand off your verdict."}],
                "tool_choice": {"type": "function", "function": {"name": "handoff"}}}
        reply = httpx.post(server.url + "/chat/completions", json=body, timeout=120).json()
        call = reply["choices"][0]["message"]["tool_calls"][0]["function"]
        assert call["name"] == "handoff" and reply["choices"][0]["finish_reason"] == "tool_calls"
        VerdictForm.model_validate_json(call["arguments"])  # constrained to the schema: it always validates
        plain = httpx.post(server.url + "/chat/completions", timeout=120, json={
            "model": "local", "temperature": 0, "max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}]})
        assert plain.json()["usage"]["completion_tokens"] <= 5 and "tool_calls" not in plain.json()["choices"][0][
            "message"]
        for bad, says in ((dict(body, tool_choice={"type": "function", "function": {"name": "other"}}),
                           "not among the tools"),
                          (dict(body, max_tokens=600), "exceed context window of 512")):
            refused = httpx.post(server.url + "/chat/completions", json=bad, timeout=30)
            assert refused.status_code == 400 and says in refused.json()["error"]["message"]
    finally:
        server.stop()
    assert server.proc.poll() is not None
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/models", timeout=5)
