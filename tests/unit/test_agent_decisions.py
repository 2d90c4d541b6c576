"""An LLM decision runs as a small graph of its own inside a node of the outer, durably checkpointed graph."""

from __future__ import annotations

import sqlite3

from fakes import call, scripted
from typing_extensions import TypedDict

from core.handoffs import Check, DatasetManifest, ValidationFindings


class S(TypedDict, total=False):
    stage: int
    decision: str
    stop_reason: str


def test_a_decision_inside_a_durably_checkpointed_node(tmp_path):
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.graph import END, START, StateGraph

    from graph.checkpoints import checkpoint_serde, run_to_end

    findings = ValidationFindings(checks=[Check(name="decontamination", passed=False, detail="1 row")],
                                  usable_rows=3, contaminated={"r1": ["t9"]})
    manifest = DatasetManifest(dataset_dir="d", dataset_name="train", rows=3, sources=["benchmark_train"],
                               operations=[], content_sha256="", with_system=False, attempt=1)
    policy, model = scripted("data_validation", None,
                             call("handoff", decision="approve", reasons=["looks fine"]),  # refused: contaminated
                             call("handoff", decision="back_to_construction", reasons=["decontamination: 1 row"]))

    def node(state):
        verdict = policy.judge(findings, manifest)
        return {"decision": verdict.decision, "stop_reason": "done"}

    g = StateGraph(S)
    g.add_node("data_validation", node)
    g.add_edge(START, "data_validation")
    g.add_edge("data_validation", END)
    conn = sqlite3.connect(tmp_path / "cp.sqlite", check_same_thread=False)
    try:
        graph = g.compile(checkpointer=SqliteSaver(conn, serde=checkpoint_serde()))
        values = run_to_end(graph, {"configurable": {"thread_id": "run"}}, None)
    finally:
        conn.close()
    assert values["decision"] == "back_to_construction" and len(model.requests) == 2
