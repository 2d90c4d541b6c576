"""How a run's state is kept: the checkpoint serializer and the loop that runs a graph to its end, durably.

Kept apart from the graph's nodes so that readers (the report) and tests can use them without importing the roles.
"""

from __future__ import annotations


def checkpoint_serde():
    """The checkpoint serializer: told which of our types it may rebuild (every handoff, under its module path
    now and under `graph.state`, where checkpoints written before the core layer name them), and redacting what it
    writes of a failed node (the exception's message)."""
    import inspect

    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
    from pydantic import BaseModel

    from core import handoffs
    from core.redact import redact_exception
    from graph import state as legacy

    ours = [name for name, obj in vars(handoffs).items()
            if inspect.isclass(obj) and issubclass(obj, (BaseModel, int)) and obj.__module__ == handoffs.__name__]
    types = [(handoffs.__name__, n) for n in ours] + [(legacy.LEGACY_MODULE, n) for n in ours if hasattr(legacy, n)]

    class RedactingSerializer(JsonPlusSerializer):
        def dumps_typed(self, obj):
            if isinstance(obj, BaseException):
                redact_exception(obj)
            return super().dumps_typed(obj)

    return RedactingSerializer(allowed_msgpack_modules=types)


def run_to_end(graph, config: dict, context: object) -> dict:
    """Run, or continue, a compiled graph until it ends; returns the final state values.

    Checkpoints are written synchronously: a node's result is on disk before the next node starts, so a kill at
    any point loses at most the node that was running (LangGraph's default writes them in the background, and a
    kill at the start of a node lost the previous node's work). A run counts as finished only by its own end
    marker (`stop_reason`): a state without it still has work, or pending writes, to continue from.
    """
    values = graph.get_state(config).values
    if values.get("stop_reason"):
        return values
    graph.invoke(None if values else {"stage": 0}, config, context=context, durability="sync")
    return graph.get_state(config).values


def read_state(db, thread_id: str = "run") -> tuple[dict, tuple[str, ...]]:
    """A workspace's last checkpointed state values and the nodes still to run, opened read-only (a live run is
    never disturbed); ({}, ()) when there is no database."""
    import sqlite3
    from pathlib import Path
    from urllib.parse import quote

    from langgraph.checkpoint.sqlite import SqliteSaver

    from graph.build import builder

    if not Path(db).is_file():
        return {}, ()
    conn = sqlite3.connect(f"file:{quote(str(db))}?mode=ro", uri=True, check_same_thread=False)
    try:
        saver = SqliteSaver(conn, serde=checkpoint_serde())  # the run's own serializer: our types, no warnings
        snapshot = builder().compile(checkpointer=saver).get_state({"configurable": {"thread_id": thread_id}})
        return dict(snapshot.values or {}), tuple(snapshot.next or ())
    finally:
        conn.close()
