"""Benchmarks the system can post-train for. Adding one means adding one module and one line in `TASKS`."""

from __future__ import annotations

import importlib
from pathlib import Path

from tasks.base import BenchmarkTask, GenerationSettings, InputError, TrainingExample, sample_floor

__all__ = ["BenchmarkTask", "GenerationSettings", "InputError", "TrainingExample", "get_task", "sample_floor", "TASKS"]

DEFAULT_TASK = "gsm8k"
TASKS: dict[str, str] = {
    "gsm8k": "tasks.gsm8k:GSM8K",
    "aime2025": "tasks.aime2025:AIME2025",
    "gpqa_diamond": "tasks.gpqa:GPQADiamond",
    "bfcl": "tasks.bfcl:BFCL",
    "humaneval": "tasks.humaneval:HumanEval",
    "healthbench": "tasks.healthbench:HealthBench",
    "arenahard": "tasks.arenahard:ArenaHard",
}
"""Task name → "module:class" (imported on first use: each benchmark pulls in its own inspect-evals code)."""


def task_class(name: str) -> type[BenchmarkTask]:
    if name not in TASKS:
        raise InputError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    module, _, cls = TASKS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def get_task(name: str, data_dir: Path | None, *, judge: str | None = None,
             train_file: Path | None = None) -> BenchmarkTask:
    """The task called `name`; an unknown name is an `InputError` listing the known ones."""
    cls = task_class(name)
    if data_dir is not None and not (data_dir / name).is_dir():
        raise InputError(f"data dir {data_dir} has no {name}/ folder (expected the benchmark's files under "
                         f"{data_dir / name}/)")
    if cls.needs_judge and not judge:
        raise InputError(f"task {name} is scored by a judge model: give one with --judge SPEC (e.g. openai:gpt-5-mini)")
    if train_file is not None and not train_file.is_file():
        raise InputError(f"--train-file {train_file} not found")
    return cls(data_dir, judge=judge, train_file=train_file)
