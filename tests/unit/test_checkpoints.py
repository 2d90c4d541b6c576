"""Checkpoints: every state type survives the serializer, a run written before the core layer still resumes, and
what a failed node leaves in the database is redacted."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from core import handoffs
from core.handoffs import (
    Best,
    Check,
    DataKnobs,
    DataSelection,
    DatasetManifest,
    EvalReport,
    FailureMode,
    IterationPlan,
    IterationRecord,
    LogEntry,
    OpCount,
    SourceChoice,
    Stage,
    TrainKnobs,
    TrainResult,
    ValidationVerdict,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def every_state_type() -> list:
    report = EvalReport(model_dir="m", model_sha256="s", accuracy=0.5, stderr=0.1, n=66, limit=66, canonical=False,
                        max_tokens=256, provider="hf", log_path="l", metrics_path="p", summary_path="q",
                        failure_modes=[FailureMode(label="x", category="data", count=1, examples=["e"])],
                        runtime_s=1.0)
    return [
        Stage.EXPLORATION, report, Best(model_dir="m", score=0.5, iteration=1),
        IterationPlan(iteration=1, stage=Stage.LOCAL, problems=["p"], objective="o", changes=["c"],
                      change_kind="both", success_criterion="s", data=DataKnobs(options={"a": False}),
                      train=TrainKnobs(start_from="best")),
        DataSelection(target_behaviours=["t"], sources=[SourceChoice(name="benchmark_train", reason="r", max_rows=5)],
                      risks=["r"]),
        DatasetManifest(dataset_dir="d", dataset_name="train", rows=3, sources=["benchmark_train"],
                        operations=[OpCount(op="extract", rows_after=3)], content_sha256="c", with_system=True,
                        attempt=2),
        ValidationVerdict(decision="back_to_construction", reasons=["r"],
                          checks=[Check(name="decontamination", passed=False, detail="d")], contaminated_ids=["x"]),
        TrainResult(model_dir="m", start_checkpoint="b", lineage=["b"], config_path="c", command="x", log_path="l",
                    train_loss=None, runtime_s=2.0, steps=3, validation_run="v", knobs=TrainKnobs(), rows=9),
        IterationRecord(iteration=1, stage=Stage.LOCAL, objective="o", rows=3, method="m", score=None,
                        delta_vs_base=None, kept=False, status="failed"),
        LogEntry(iteration=1, title="t", stage=Stage.LOCAL, context="c", status="completed", motivation="m",
                 references="r", starting_checkpoint="s", training_data="d", method="m", training_config="t",
                 evaluation="e", result="r", analysis="a", artifacts="a", next_action="n"),
    ]


@pytest.mark.parametrize("value", every_state_type(), ids=lambda v: type(v).__name__)
def test_every_state_type_round_trips(value):
    from graph.build import checkpoint_serde

    serde = checkpoint_serde()
    back = serde.loads_typed(serde.dumps_typed(value))
    assert type(back) is type(value) and back == value


def test_every_handoff_class_is_allowed_by_the_serializer():
    """A new handoff type must be rebuildable from a checkpoint too (else it comes back as a plain dict)."""
    import inspect

    from graph.build import checkpoint_serde

    serde = checkpoint_serde()
    classes = {n for n, c in vars(handoffs).items() if inspect.isclass(c) and c.__module__ == handoffs.__name__
               and hasattr(c, "model_dump")}
    allowed = {name for module, name in serde._allowed_msgpack_modules if module == handoffs.__name__}
    assert classes - {"Handoff", "Evidence", "ConstructionRequest"} <= allowed


def test_a_checkpoint_written_by_e1e2552_resumes(tmp_path):
    """The fixture was written by the code at e1e2552 (types under graph.state, GSM8K's switch as a field of its
    own, no rows in TrainResult): a run stopped after data construction of iteration 2."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    from graph.build import builder, checkpoint_serde

    db = tmp_path / "checkpoints.sqlite"
    shutil.copy(FIXTURES / "checkpoint_e1e2552.sqlite", db)
    conn = sqlite3.connect(db, check_same_thread=False)
    try:
        graph = builder().compile(checkpointer=SqliteSaver(conn, serde=checkpoint_serde()))
        snap = graph.get_state({"configurable": {"thread_id": "run"}})
    finally:
        conn.close()
    v = snap.values
    assert snap.next == ("data_validation",)  # --resume continues exactly there
    assert isinstance(v["plan"], IterationPlan) and v["plan"].data.options == {"strip_annotations": True}
    assert isinstance(v["baseline"], EvalReport) and v["baseline"].accuracy == 0.030
    assert isinstance(v["manifest"], DatasetManifest) and v["manifest"].rows == 116
    assert isinstance(v["train_result"], TrainResult) and v["train_result"].rows is None
    assert isinstance(v["history"][0], IterationRecord) and v["stage"] == Stage.LOCAL
    assert "stop_reason" not in v
