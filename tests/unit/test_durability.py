"""Kills at node boundaries lose nothing. The run is driven by the same `run_to_end` as the real graph (synchronous
checkpoints; finished only by its end marker), over a toy graph with the same SqliteSaver and serializer. The run
to kill is a forked child that SIGKILLs itself as a node starts, before that node writes anything."""

from __future__ import annotations

import operator
import os
import signal
import sqlite3
from pathlib import Path
from typing import Annotated

import pytest
from typing_extensions import TypedDict

NODES = ["task_definition", "baseline", "planner", "trainer", "final"]


class S(TypedDict, total=False):
    stage: int
    done: Annotated[list, operator.add]
    stop_reason: str


def run(folder: Path, kill_at: str | None = None) -> dict:
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.graph import END, START, StateGraph

    from graph.checkpoints import checkpoint_serde, run_to_end

    def node(name):
        def step(state):
            with (folder / "starts.log").open("a") as f:
                f.write(name + "\n")
            if name == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return {"done": [name], **({"stop_reason": "finished"} if name == NODES[-1] else {})}
        return step

    g = StateGraph(S)
    for n in NODES:
        g.add_node(n, node(n))
    g.add_edge(START, NODES[0])
    for a, b in zip(NODES, NODES[1:]):
        g.add_edge(a, b)
    g.add_edge(NODES[-1], END)
    conn = sqlite3.connect(folder / "cp.sqlite", check_same_thread=False)
    try:
        graph = g.compile(checkpointer=SqliteSaver(conn, serde=checkpoint_serde()))
        return run_to_end(graph, {"configurable": {"thread_id": "run"}}, None)
    finally:
        conn.close()


def killed_run(folder: Path, kill_at: str) -> int:
    pid = os.fork()
    if pid == 0:  # the child: run until it kills itself
        try:
            run(folder, kill_at)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.WTERMSIG(status) if os.WIFSIGNALED(status) else -1


@pytest.mark.parametrize("kill_at", NODES)
def test_a_kill_as_a_node_starts_loses_no_finished_node(tmp_path, kill_at):
    assert killed_run(tmp_path, kill_at) == signal.SIGKILL
    values = run(tmp_path)  # --resume
    assert values["stop_reason"] == "finished" and values["done"] == NODES  # every node's work, once
    starts = (tmp_path / "starts.log").read_text().split()
    # Only the node that was killed runs twice: nothing that had finished is redone.
    cut = NODES.index(kill_at)
    assert starts == NODES[:cut + 1] + NODES[cut:]
    assert run(tmp_path)["done"] == NODES  # a finished run stays finished...
    assert (tmp_path / "starts.log").read_text().split() == starts  # ...and nothing runs again
