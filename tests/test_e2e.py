"""The whole loop, for real: CLI → graph → LlamaFactory → inspect-ai → log and memory; and resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _small_benchmark(data_dir: Path, out: Path, test_rows: int = 40) -> Path:
    """The real train split and the first `test_rows` real test rows: a benchmark whose floor is 32 samples."""
    (out / "gsm8k").mkdir(parents=True)
    (out / "gsm8k" / "train.jsonl").write_text((data_dir / "gsm8k" / "train.jsonl").read_text())
    lines = (data_dir / "gsm8k" / "test.jsonl").read_text().splitlines()[:test_rows]
    (out / "gsm8k" / "test.jsonl").write_text("\n".join(lines) + "\n")
    return out


def _start(args: list[str], log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "graph.run", *args], cwd=REPO, env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def _iterations_logged(ws: Path) -> list[str]:
    log = ws / "task" / "experiment_log.md"
    return [line for line in log.read_text().splitlines() if line.startswith("### Iteration")] if log.exists() else []


def test_sigkill_during_training_then_resume(data_dir, tiny_model_dir, tmp_path):
    data = _small_benchmark(data_dir, tmp_path / "data")
    ws = tmp_path / "ws"
    args = ["--data-dir", str(data), "--base-model", str(tiny_model_dir), "--workspace", str(ws),
            "--max-iterations", "2", "--hours", "2"]
    proc = _start(args, tmp_path / "first.log")
    train_log = ws / "task" / "iterations" / "002" / "train" / "train.log"
    deadline = time.time() + 1500
    while time.time() < deadline and proc.poll() is None:
        if train_log.exists() and "loss" in train_log.read_text():  # the full run of iteration 2 is training
            break
        time.sleep(2)
    assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert [x.split(":")[0] for x in _iterations_logged(ws)] == ["### Iteration 1"]

    resumed = subprocess.run([sys.executable, "-m", "graph.run", "--resume", str(ws)], cwd=REPO, capture_output=True,
                             text=True, timeout=1500)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert [x.split(":")[0] for x in _iterations_logged(ws)] == ["### Iteration 1", "### Iteration 2"]
    # Finished nodes are not redone: no baseline evaluation, no iteration-1 work after the resume.
    assert "baseline_evaluation" not in resumed.stdout and "[iter 1 " not in resumed.stdout
    assert "iteration cap 2 reached" in resumed.stdout
    baseline_logs = list((ws / "task" / "iterations" / "000-baseline" / "eval" / "inspect").glob("*.json"))
    assert len(baseline_logs) == 1

    from memory.store import ExperimentMemory

    memory = ExperimentMemory(ws / "memory")  # every entry of the 2-iteration run, none twice
    assert memory.count("log_entry") == 2 and memory.count("plan") == 2
    assert memory.count("verdict") >= 2 and memory.count("failure_mode") >= 1


@pytest.mark.timeout(3300)
def test_whole_loop_on_the_embedded_model(data_dir, embedded_model_dir, tmp_path):
    """`python -m graph.run` on the embedded student: baseline + one full iteration, on a 40-sample slice of the
    real test set (floor 32) so that CI can afford its two evaluations."""
    ws = tmp_path / "ws"
    data = _small_benchmark(data_dir, tmp_path / "data")
    proc = subprocess.run([sys.executable, "-m", "graph.run", "--task", "gsm8k", "--data-dir", str(data),
                           "--workspace", str(ws), "--max-iterations", "1", "--hours", "0.5"],
                          cwd=REPO, capture_output=True, text=True, timeout=3000)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    it = ws / "task" / "iterations" / "001"
    for rel in ("iteration_plan.md", "data/manifest.json", "data/validation_report.md", "data/train.json",
                "train/llamafactory.yaml", "train/command.txt", "train/train.log", "eval/metrics.json",
                "eval/sample_summary.md"):
        assert (it / rel).is_file(), rel
    metrics = json.loads((it / "eval" / "metrics.json").read_text())
    assert metrics["n"] == 32 and metrics["canonical"] is False and 0.0 <= metrics["accuracy"] <= 1.0
    assert (it / "eval" / "sample_summary.md").read_text().count("\n## ") == 15
    entry = (ws / "task" / "experiment_log.md").read_text()
    for field in ("Context", "Status", "Motivation", "References", "Starting checkpoint", "Training data", "Method",
                  "Training config", "Evaluation", "Result", "Analysis", "Artifacts", "Next action"):
        assert f"- {field}: " in entry
    assert "iteration" in proc.stdout and "score" in proc.stdout  # the final table

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = ws / "final_model"
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    ids = tok.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]

    from memory.store import ExperimentMemory

    memory = ExperimentMemory(ws / "memory")
    assert memory.count("log_entry") == 1 and memory.count("plan") == 1
