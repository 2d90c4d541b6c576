"""The final evaluation as PostTrainBench v1.2 scores a submission: the full test set, a pristine copy of the
evaluation code, several seeds where decoding samples, lower max_tokens when an attempt fails, and the base
model's score when every attempt fails.

`graph.evaluate --final` runs it in a process of its own; the run's final node calls that.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from core.errors import EvalFailed
from core.handoffs import EvalReport
from tasks.base import BenchmarkTask, GenerationSettings, mean_and_stderr
from tools.evaluate import run_eval
from tools.guards import eval_code_files, verify_pristine

SEEDS = (72332, 87681, 38992, 92201, 13818)
"""PostTrainBench's seeds: each seed is one full pass over the test set."""
PROTOCOL_FILE = "protocol.json"
REPORT_FILE = "report.json"


def ladder(gen: GenerationSettings) -> list[int]:
    """max_tokens of each attempt, in order."""
    return [gen.max_tokens, *gen.cascade]


def seed_count(task: BenchmarkTask, gen: GenerationSettings, requested: int | None) -> int:
    """1 for greedy decoding (every seed gives the same answers), 5 otherwise; a task whose seed also shuffles its
    inputs (multiple-choice order) always takes 5."""
    if requested:
        return requested
    return len(SEEDS) if task.seeds_always or not gen.greedy else 1


def run_protocol(task: BenchmarkTask, model_dir: str, out_dir: Path, *, on_gpu: bool, provider: str,
                 batch_size: int | None, gen: GenerationSettings, seeds: int | None = None,
                 limit: int | None = None, on_progress: Callable[[str], None] | None = None) -> EvalReport:
    """Attempt after attempt down the max_tokens ladder until one finishes every seed; `EvalFailed` when none
    does (the caller then falls back to the base model's score and says so). Writes protocol.json (every attempt,
    which one counted, each seed's score) and report.json (the counted result) under `out_dir`."""
    say = on_progress or (lambda _: None)
    verify_pristine(eval_code_files(provider, task.eval_modules))
    size = limit or task.benchmark_size()
    k = seed_count(task, gen, seeds)
    record: dict = {"task": task.name, "model": str(model_dir), "samples": size, "seeds": list(SEEDS[:k]),
                    "canonical": gen.canonical, "attempts": []}
    out_dir.mkdir(parents=True, exist_ok=True)
    for number, max_tokens in enumerate(ladder(gen), 1):
        attempt_gen = gen.model_copy(update={"max_tokens": max_tokens})
        say(f"final evaluation, attempt {number}: {size} samples, max_tokens {max_tokens}, {k} seed(s)")
        try:
            reports = [run_eval(task, model_dir, out_dir / f"attempt{number}" / f"seed{seed}", limit=size,
                                on_gpu=on_gpu, provider=provider, batch_size=batch_size, seed=seed,
                                on_progress=on_progress, gen=attempt_gen) for seed in SEEDS[:k]]
        except EvalFailed as e:
            record["attempts"].append({"attempt": number, "max_tokens": max_tokens, "status": "failed",
                                       "error": e.message})
            say(f"attempt {number} failed: {e.message[:200]}")
            _write(out_dir / PROTOCOL_FILE, record)
            continue
        report = _combine(reports, out_dir)
        record["attempts"].append({"attempt": number, "max_tokens": max_tokens, "status": "counted",
                                   "per_seed": [r.accuracy for r in reports], "score": report.accuracy})
        record["counted"] = number
        _write(out_dir / PROTOCOL_FILE, record)
        (out_dir / REPORT_FILE).write_text(report.model_dump_json(indent=2))
        return report
    raise EvalFailed(f"every attempt of the final evaluation failed ({len(record['attempts'])} attempts; see "
                     f"{out_dir / PROTOCOL_FILE})")


def _combine(reports: list[EvalReport], out_dir: Path) -> EvalReport:
    """One report for all seeds: the mean of the per-seed scores, per-sample scores averaged over seeds."""
    first = reports[0]
    if len(reports) == 1:
        return first
    ids = set.intersection(*(set(r.samples) for r in reports))
    samples = {i: sum(r.samples[i] for r in reports) / len(reports) for i in sorted(ids)}
    score, spread = mean_and_stderr([r.accuracy for r in reports])
    return first.model_copy(update={"accuracy": score, "stderr": max(spread, first.stderr), "samples": samples,
                                    "runtime_s": round(sum(r.runtime_s for r in reports), 1),
                                    "metrics_path": str(out_dir / PROTOCOL_FILE)})


def _write(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)
