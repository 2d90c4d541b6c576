"""Benchmarks the system can post-train for. Adding one means adding one module and one line here."""

from __future__ import annotations

from pathlib import Path

from tasks.base import BenchmarkTask, GenerationSettings, InputError, TrainingExample, sample_floor

__all__ = ["BenchmarkTask", "GenerationSettings", "InputError", "TrainingExample", "get_task", "sample_floor", "TASKS"]


def _gsm8k(data_dir: Path | None) -> BenchmarkTask:
    from tasks.gsm8k import GSM8K

    return GSM8K(data_dir)


TASKS = {"gsm8k": _gsm8k}


def get_task(name: str, data_dir: Path | None) -> BenchmarkTask:
    """The task called `name`; an unknown name is an `InputError` listing the known ones."""
    if name not in TASKS:
        raise InputError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    if data_dir is not None and not (data_dir / name).is_dir():
        raise InputError(f"data dir {data_dir} has no {name}/ folder (expected {data_dir / name}/{{train,test}}.jsonl)")
    return TASKS[name](data_dir)
