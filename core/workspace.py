"""Where a run keeps everything: the paper's file organisation, plus the checkpoint database, memory and lock.

Every path of a workspace is named here and nowhere else; readers (the report) and writers (the roles) both ask.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from core.errors import InputError, WorkspaceBusy

METRICS_FILE = "metrics.json"
SAMPLES_FILE = "samples.jsonl"
SUMMARY_FILE = "sample_summary.md"
INSPECT_DIR = "inspect"
MANIFEST_FILE = "manifest.json"
VALIDATION_REPORT = "validation_report.md"
LINEAGE_FILE = "lineage.json"


@dataclass(frozen=True)
class IterationPaths:
    """`task/iterations/<id>/`: one iteration's plan, data, training and evaluation."""

    root: Path

    @property
    def plan_md(self) -> Path:
        return self.root / "iteration_plan.md"

    @property
    def plan_json(self) -> Path:
        return self.root / "iteration_plan.json"

    @property
    def log_entry_json(self) -> Path:
        return self.root / "log_entry.json"

    @property
    def record_json(self) -> Path:
        """The iteration's row of the run's history (what the report reads when the checkpoint lacks it)."""
        return self.root / "record.json"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def train(self) -> Path:
        return self.root / "train"

    @property
    def model(self) -> Path:
        return self.train / "model"

    @property
    def eval(self) -> Path:
        return self.root / "eval"


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def settings_file(self) -> Path:
        return self.root / "run_settings.json"

    @property
    def checkpoint_db(self) -> Path:
        return self.root / "checkpoints.sqlite"

    @property
    def eval_checksums(self) -> Path:
        return self.root / "eval_checksums.json"

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"

    @property
    def memory(self) -> Path:
        return self.root / "memory"

    @property
    def final_model(self) -> Path:
        return self.root / "final_model"

    @property
    def final_eval(self) -> Path:
        return self.root / "final_eval"

    @property
    def task_dir(self) -> Path:
        return self.root / "task"

    @property
    def task_definition(self) -> Path:
        return self.task_dir / "task_definition.md"

    @property
    def log_path(self) -> Path:
        return self.task_dir / "experiment_log.md"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    @property
    def report_png(self) -> Path:
        return self.root / "report_score.png"

    @property
    def failures_png(self) -> Path:
        return self.root / "report_failures.png"

    @property
    def iterations_dir(self) -> Path:
        return self.task_dir / "iterations"

    def iteration(self, iteration: int) -> IterationPaths:
        """Iteration 0 is the baseline evaluation of the base model."""
        return IterationPaths(self.iterations_dir / ("000-baseline" if iteration == 0 else f"{iteration:03d}"))

    def iteration_dir(self, iteration: int) -> Path:
        return self.iteration(iteration).root

    def iterations(self) -> dict[int, IterationPaths]:
        """The iteration folders that exist, by number (the baseline is 0)."""
        found = {}
        for d in sorted(self.iterations_dir.glob("[0-9][0-9][0-9]*")) if self.iterations_dir.is_dir() else []:
            if d.is_dir() and d.name[:3].isdigit():
                found[int(d.name[:3])] = IterationPaths(d)
        return found

    def looks_like_one(self) -> bool:
        return any(p.exists() for p in (self.checkpoint_db, self.settings_file, self.iterations_dir, self.log_path))

    def is_own_checkpoint(self, path: Path) -> bool:
        """Whether `path` is a model this workspace produced (a trained iteration or final_model/)."""
        path = path.resolve()
        if path == self.final_model.resolve():
            return True
        try:
            rel = path.relative_to(self.iterations_dir.resolve())
        except ValueError:
            return False
        return len(rel.parts) == 3 and rel.parts[1:] == ("train", "model")

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the workspace for the life of a run: a second run (or --resume) on it is refused at once.

        An OS lock (flock): the kernel drops it when the holder dies, even by SIGKILL, so a killed run never
        blocks its own --resume.
        """
        import fcntl

        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise InputError(f"workspace {self.root} is not writable: {e.strerror}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                raise WorkspaceBusy(f"workspace {self.root} is in use by another run (pid {holder}); wait for it "
                                    "to end, or use another --workspace") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)  # closing releases the lock
