"""run_eval end to end on the real inspect-ai pipeline (tiny random-init model, prefixcache/ provider)."""

from __future__ import annotations

import json
import re

from tasks import get_task
from tools.evaluate import CPU_BATCH_CAP, default_batch_size, run_eval


def test_default_batch_sizes():
    assert default_batch_size("prefixcache", 66) == 66
    assert default_batch_size("prefixcache", 1319) == CPU_BATCH_CAP
    assert default_batch_size("hf", 66) == 8


def test_run_eval_writes_the_evidence_and_reports_progress(data_dir, tiny_model_dir, tmp_path):
    lines: list[str] = []
    task = get_task("gsm8k", data_dir)
    # run_eval itself does not enforce the floor (the evaluator role does); 32 rows keep this test short.
    report = run_eval(task, str(tiny_model_dir), tmp_path / "eval", limit=32, on_gpu=False, provider="prefixcache",
                      batch_size=None, seed=0, on_progress=lines.append)
    assert lines[0].endswith("with prefixcache/, batch 32 (max_tokens 256)")
    assert any("prefilled a" in line for line in lines[1:]), lines  # the provider's own progress came through
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["n"] == report.n == 32 and metrics["canonical"] is False and metrics["max_tokens"] == 256
    assert metrics["accuracy"] == report.accuracy and 0.0 <= report.accuracy <= 1.0
    summary = (tmp_path / "eval" / "sample_summary.md").read_text()
    assert summary.count("\n## ") == 15
    assert len(re.findall(r"\n## \d+\. \S+: (correct|wrong) \(extracted ", summary)) == 15  # the score
    for field in ("**Input**", "**Target**", "**Output**"):
        assert summary.count(field) == 15, field
    # A random-init model gets (almost) everything wrong; every failure is labelled with one of the three causes.
    assert sum(m.count for m in report.failure_modes) == round(32 * (1 - report.accuracy))
    assert {m.category for m in report.failure_modes} <= {"data", "training", "inference_template"}
