"""Sweeps: every (task, base model) pair as an ordinary run, on an existing engine; a killed sweep re-run finishes
without redoing the runs that had finished. Real runs of tiny models on a small GSM8K slice."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def sweep_args(sweep: Path, data: Path, models: list[Path], *extra: str) -> list[str]:
    return [sys.executable, "-m", "graph.sweep", "--tasks", "gsm8k", "--base-models", ",".join(map(str, models)),
            "--sweep-dir", str(sweep), "--data-dir", str(data), "--run-args", "--max-iterations 0 --device cpu",
            *extra]


@pytest.fixture
def two_models(tiny_model_dir, tmp_path) -> list[Path]:
    other = tmp_path / "tiny-copy"
    shutil.copytree(tiny_model_dir, other)
    return [tiny_model_dir, other]


def test_a_killed_sweep_rerun_skips_finished_runs_and_resumes_the_rest(small_data_dir, two_models, tmp_path):
    sweep = tmp_path / "sweep"
    first = subprocess.Popen(sweep_args(sweep, small_data_dir, two_models, "--engine", "local"), cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:  # kill the sweep once its first run has finished
        if "exit 0" in (line := first.stdout.readline()):
            break
        assert line or first.poll() is None, "the sweep ended before its first run"
    first.send_signal(signal.SIGKILL)
    first.wait()
    again = subprocess.run(sweep_args(sweep, small_data_dir, two_models, "--engine", "local"), cwd=REPO,
                           capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout + again.stderr
    from graph.sweep import Pair

    names = [Pair("gsm8k", str(p)).name for p in two_models]
    assert f"{names[0]}: finished before, skipped" in again.stdout  # not redone
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert [r["finished"] for r in summary["pairs"]] == [True, True]
    assert all(r["base"] is not None and r["canonical"] is False for r in summary["pairs"])
    assert set(summary["averages"]) == {str(p) for p in two_models}
    assert (sweep / "sweep_summary.md").is_file() and (sweep / "sweep_scores.png").is_file()


def test_the_slurm_engine_through_submitits_local_executor(small_data_dir, two_models, tmp_path):
    pytest.importorskip("submitit")  # in the lock; the `cluster` extra for users
    sweep = tmp_path / "sweep"
    proc = subprocess.run(sweep_args(sweep, small_data_dir, two_models[:1], "--engine", "slurm", "--slurm-local",
                                     "--hours", "0.5"), cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads((sweep / "sweep_summary.json").read_text())["pairs"][0]["finished"]
    assert any((sweep / "submitit").iterdir())  # submitit's own job folder
