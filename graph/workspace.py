"""Where a run keeps everything: the paper's file organisation, plus the checkpoint database and memory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def task_dir(self) -> Path:
        return self.root / "task"

    @property
    def log_path(self) -> Path:
        return self.task_dir / "experiment_log.md"

    @property
    def final_model(self) -> Path:
        return self.root / "final_model"

    @property
    def checkpoint_db(self) -> Path:
        return self.root / "checkpoints.sqlite"

    @property
    def eval_checksums(self) -> Path:
        return self.root / "eval_checksums.json"

    def iteration_dir(self, iteration: int) -> Path:
        """`task/iterations/<id>/`; iteration 0 is the baseline evaluation of the base model."""
        name = "000-baseline" if iteration == 0 else f"{iteration:03d}"
        return self.task_dir / "iterations" / name

    def is_own_checkpoint(self, path: Path) -> bool:
        """Whether `path` is a model this workspace produced (a trained iteration or final_model/)."""
        path = path.resolve()
        root = self.root.resolve()
        if path == (root / "final_model"):
            return True
        try:
            rel = path.relative_to(root / "task" / "iterations")
        except ValueError:
            return False
        return len(rel.parts) == 3 and rel.parts[1:] == ("train", "model")
