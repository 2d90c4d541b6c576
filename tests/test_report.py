"""The run report: built from a small workspace written here (files plus a real checkpoint written through the
graph's own checkpointer), so the tests need no earlier run."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from core.handoffs import EvalReport

REPO = Path(__file__).resolve().parents[1]


def _eval_report(accuracy: float, model_dir: str, canonical: bool = False, n: int = 66) -> EvalReport:
    from core.handoffs import EvalReport

    return EvalReport(model_dir=model_dir, model_sha256="-", accuracy=accuracy, stderr=0.05, n=n, limit=n,
                      canonical=canonical, max_tokens=256 if not canonical else 4000, provider="hf", log_path="-",
                      metrics_path="-", summary_path="-", failure_modes=[], runtime_s=1.0)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _metrics(path: Path, accuracy: float, canonical: bool, n: int = 66) -> None:
    _write(path, json.dumps({"accuracy": accuracy, "stderr": 0.05, "n": n, "limit": n,
                             "max_tokens": 256 if not canonical else 4000, "canonical": canonical}))


OBJECTIVE_1 = "teach the answer format"
OBJECTIVE_2 = "double the format rows"


def _files(ws: Path, *, canonical: bool = False, final: bool = True) -> None:
    """The workspace files of a two-iteration run: 1 completed and kept, 2 failed in data validation."""
    from core.settings import RunSettings

    RunSettings(task="gsm8k", workspace=ws, hours=0.5, max_iterations=2).save()
    it = ws / "task" / "iterations"
    _metrics(it / "000-baseline" / "eval" / "metrics.json", 0.10, canonical)
    _write(it / "000-baseline" / "eval" / "sample_summary.md", "# Sample summary: base\n")
    from core.handoffs import IterationPlan, IterationRecord, Stage

    for n, objective, rows in ((1, OBJECTIVE_1, 117), (2, OBJECTIVE_2, 208)):
        plan = IterationPlan(iteration=n, stage=Stage.LOCAL, problems=["empty output"], objective=objective,
                             changes=[f"SFT on {rows} rows", "full fine-tuning, lr 5e-05"], change_kind="both",
                             success_criterion="beat the base")
        _write(it / f"{n:03d}" / "iteration_plan.md", f"# Iteration {n} plan (stage 2)\n")
        _write(it / f"{n:03d}" / "iteration_plan.json", plan.model_dump_json())
        status, result = (("completed", "accuracy 0.2500 ± 0.0500 (n=66); delta vs base +0.1500; kept") if n == 1
                          else ("failed", "failed: data not approved"))
        record = IterationRecord(iteration=n, stage=Stage.LOCAL, objective=objective, rows=rows, method=result,
                                 score=0.25 if n == 1 else None, delta_vs_base=0.15 if n == 1 else None, kept=n == 1,
                                 status=status)
        _write(it / f"{n:03d}" / "record.json", record.model_dump_json())
        _write(it / f"{n:03d}" / "data" / "manifest.json", json.dumps({"rows": rows}))
        _write(it / f"{n:03d}" / "data" / "validation_report.md", "# Validation\napprove\n")
    _metrics(it / "001" / "eval" / "metrics.json", 0.25, canonical)
    _write(it / "001" / "eval" / "sample_summary.md", "# Sample summary: 001\n")
    _write(ws / "task" / "experiment_log.md",
           "# Experiment log\n\n## Stage 2: local\n\n### Iteration 1: teach\n\n- Status: completed\n"
           "- Result: accuracy 0.2500 ± 0.0500 (n=66); delta vs base +0.1500; kept\n\n"
           "### Iteration 2: double\n\n- Status: failed\n- Result: failed: data not approved\n")
    _write(ws / "task" / "task_definition.md", "# Task definition (stage 0)\n")
    if final:
        _metrics(ws / "final_eval" / "metrics.json", 0.22, canonical, n=1319)


def _checkpoint(ws: Path, *, finished: bool) -> None:
    """A state written through the graph's own checkpointer: finished (as the final node) or mid-iteration 2."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    from core.handoffs import IterationRecord, Stage
    from graph.build import builder, checkpoint_serde

    rec1 = IterationRecord(iteration=1, stage=Stage.LOCAL, objective=OBJECTIVE_1, rows=117, method="SFT on 117 rows",
                           score=0.25, delta_vs_base=0.15, kept=True, status="completed", strategies=["D1", "U1"])
    rec2 = IterationRecord(iteration=2, stage=Stage.LOCAL, objective=OBJECTIVE_2, rows=208, method="SFT on 208 rows",
                           score=None, delta_vs_base=None, kept=False, status="failed", strategies=["D4", "U4"])
    values = {"stage": Stage.LOCAL, "iteration": 2, "spent_s": 754.0, "baseline": _eval_report(0.10, "base"),
              "role_seconds": {"task_definition": 12.0, "baseline_evaluation": 400.0, "planner": 0.5,
                               "trainer": 240.0, "evaluator": 100.0, "logger": 1.5},
              "history": [rec1, rec2] if finished else [rec1]}
    if finished:
        values |= {"final_eval": _eval_report(0.22, "final_model", n=1319), "stop_reason": "iteration cap 2 reached"}
    conn = sqlite3.connect(ws / "checkpoints.sqlite", check_same_thread=False)
    try:
        graph = builder().compile(checkpointer=SqliteSaver(conn, serde=checkpoint_serde()))
        # planner → data_selection is a plain edge, so no router (which needs a run context) is evaluated
        graph.update_state({"configurable": {"thread_id": "run"}}, values,
                           as_node="final_evaluation" if finished else "planner")
    finally:
        conn.close()


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    _files(ws)
    _checkpoint(ws, finished=True)
    return ws


def _hrefs(page: str) -> list[str]:
    return re.findall(r'(?:href|src)="([^"]+)"', page)


def test_report_from_checkpoint(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from readers.report import main

    assert main([str(workspace)]) == 0
    out = workspace / "report.html"
    assert capsys.readouterr().out.strip() == str(out)
    page = out.read_text()
    png = workspace / "report_score.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert 'src="report_score.png"' in page
    # the iteration table from the checkpointed history, with the base and final rows
    assert OBJECTIVE_1 in page and OBJECTIVE_2 in page
    assert "+0.150" in page and ">failed<" in page and "iteration cap 2 reached" in page
    assert "final_model/ on the full benchmark" in page and "0.220" in page and "n=1319" in page
    # where the time went, in graph order
    assert page.index(">task_definition<") < page.index(">trainer<") < page.index(">logger<")
    assert "12m34s" in page  # total of role_seconds
    # a visible note for non-canonical scores
    assert 'id="not-canonical"' in page and "max_tokens 256" in page
    # offline: every link and image is relative and points at a file of the workspace
    refs = _hrefs(page)
    assert refs and not [r for r in refs if re.match(r"^[a-z]+:|^/", r)]
    for rel in ("task/iterations/001/iteration_plan.md", "task/iterations/001/data/validation_report.md",
                "task/iterations/001/eval/sample_summary.md", "task/iterations/002/iteration_plan.md"):
        assert rel in refs
    assert all((workspace / r).is_file() for r in refs)
    assert "<script" not in page and "<link" not in page


def test_report_unfinished_run_reads_files_for_the_rest(tmp_path: Path) -> None:
    from readers.report import load_view

    ws = tmp_path / "ws"
    _files(ws, final=False)
    _checkpoint(ws, finished=False)
    view = load_view(ws)
    assert view.pending == ("data_selection",)
    by_it = {r.iteration: r for r in view.rows}
    assert by_it[1].source == "checkpoint" and by_it[1].kept is True
    assert by_it[2].source == "files" and by_it[2].status == "in progress (next: data_selection)"
    assert by_it[2].objective == OBJECTIVE_2 and by_it[2].rows == 208 and by_it[2].score is None
    assert view.final is None and view.role_seconds["trainer"] == 240.0


def test_report_from_files_only(tmp_path: Path) -> None:
    from readers.report import load_view, write_report

    ws = tmp_path / "ws"
    _files(ws, canonical=True)
    view = load_view(ws)
    assert view.state_source == "files" and view.pending == ()
    r1, r2 = view.rows
    assert (r1.score, r1.kept, r1.status, r1.rows) == (0.25, True, "completed", 117)
    assert r1.delta_vs_base == pytest.approx(0.15)
    assert r1.method == "SFT on 117 rows; full fine-tuning, lr 5e-05"
    assert (r2.score, r2.kept, r2.status) == (None, False, "failed")
    assert view.final is not None and view.final.n == 1319
    page = write_report(ws).read_text()
    assert 'id="not-canonical"' not in page  # canonical scores: no warning
    assert "Not recorded" in page  # role times live only in the checkpoint


@pytest.mark.parametrize("make", [lambda p: p / "missing", lambda p: p, lambda p: _file(p / "x.txt")],
                         ids=["missing", "empty-folder", "file"])
def test_not_a_workspace(tmp_path: Path, make: Callable[[Path], Path], capsys: pytest.CaptureFixture[str]) -> None:
    from readers.report import main

    assert main([str(make(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def _file(path: Path) -> Path:
    path.write_text("not a workspace")
    return path


def test_cli_exit_code(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "readers.report", str(tmp_path)], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "is not a posttrain-graph workspace" in proc.stderr


@pytest.mark.slow
def test_screenshot(workspace: Path) -> None:
    """The page renders in headless Chromium (no network) to a non-trivial PNG."""
    if not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")):
        pytest.skip("no Chromium on PATH (apt-get install -y chromium)")
    proc = subprocess.run([sys.executable, "bench/report_screenshot.py", str(workspace), "--out",
                           str(workspace / "shot.png")], cwd=REPO, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    png = Path(proc.stdout.strip().splitlines()[-1])
    assert png == workspace / "shot.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 20_000  # a blank page is a few kB; plot and table make it far larger
    # The strategy table is in what Chromium rendered, one row per strategy the iterations named.
    browser = next(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b))
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                          (workspace / "report.html").as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert 'id="strategies"' in dom and all(f"<td>{code} " in dom for code in ("D1", "U1", "D4", "U4")), dom[-3000:]


def test_report_shows_failure_classes_paired_comparisons_and_the_held_out_result(tmp_path: Path) -> None:
    from langgraph.checkpoint.sqlite import SqliteSaver

    from core.handoffs import Comparison, FinalResult, IterationRecord, Stage
    from graph.build import builder, checkpoint_serde
    from readers.report import write_report

    ws = tmp_path / "ws"
    _files(ws)
    for it, counts in ((0, {"correct": 2, "failure_categories": {"inference_template": 53, "data": 11}}),
                       (1, {"correct": 2, "failure_categories": {"data": 48, "training": 16}})):
        folder = ws / "task" / "iterations" / ("000-baseline" if it == 0 else f"{it:03d}") / "eval"
        metrics = json.loads((folder / "metrics.json").read_text())
        (folder / "metrics.json").write_text(json.dumps({**metrics, **counts}))
    vs = Comparison(against="the base model", n=66, diff=0.0, low=-0.03, high=0.03, better=1, worse=1)
    record = IterationRecord(iteration=1, stage=Stage.LOCAL, objective=OBJECTIVE_1, rows=117, method="SFT",
                             score=0.03, delta_vs_base=0.0, kept=False, status="completed", vs=vs,
                             strategies=["P1", "D1", "U1"])
    held = _eval_report(0.05, "final_model")
    final = FinalResult(kind="held-out", model=held, base=_eval_report(0.04, "base"),
                        comparison=Comparison(against="the base model", n=66, diff=0.015, low=-0.02, high=0.05,
                                              better=3, worse=2),
                        identity="final_model/ is the base model (no iteration was kept)",
                        note="samples 67-132, disjoint from the development slice")
    conn = sqlite3.connect(ws / "checkpoints.sqlite", check_same_thread=False)
    try:
        graph = builder().compile(checkpointer=SqliteSaver(conn, serde=checkpoint_serde()))
        graph.update_state({"configurable": {"thread_id": "run"}},
                           {"stage": Stage.LOCAL, "iteration": 1, "baseline": _eval_report(0.03, "base"),
                            "history": [record], "final": final, "stop_reason": "iteration cap 1 reached"},
                           as_node="final_evaluation")
    finally:
        conn.close()
    page = write_report(ws).read_text()
    assert (ws / "report_failures.png").read_bytes()[:4] == b"\x89PNG" and 'src="report_failures.png"' in page
    assert "+0.000 [-0.030, +0.030]" in page and "1↑ 1↓ of 66" in page  # iteration vs the best before it
    assert 'id="final"' in page and "Final evaluation (held-out)" in page
    assert "0.0500 ± 0.0500 on 66 samples" in page and "0.0400 ± 0.0500" in page  # final_model/ and the base
    assert "+0.0150 [-0.0200, +0.0500] vs the base model on 66 paired samples (3 better, 2 worse)" in page
    assert "CPU profile, max_tokens 256: not canonical" in page
    assert 'id="strategies"' in page and "U1 full SFT" in page  # which strategies were tried, and how they did
