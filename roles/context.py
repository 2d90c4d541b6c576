"""What every node gets besides the state: settings, the task, the workspace, memory and each role's policy."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.redact import redact
from core.settings import RunSettings
from core.workspace import Workspace
from tasks.base import BenchmarkTask

if TYPE_CHECKING:
    from memory.store import ExperimentMemory
    from roles.policy import Policy


@dataclass
class Progress:
    """One line per event: iteration, stage, role, what happened, time spent and budget left."""

    budget_s: float
    stream: Any = sys.stdout
    iteration: int = 0
    stage: int = 0
    role: str = "-"
    spent_s: float = 0.0
    started: float = field(default_factory=time.time)

    def enter(self, role: str, state: dict) -> None:
        self.role, self.iteration, self.stage = role, state.get("iteration", 0), int(state.get("stage", 0))
        self.spent_s, self.started = state.get("spent_s", 0.0), time.time()

    def __call__(self, message: str) -> None:
        spent = self.spent_s + time.time() - self.started
        left = max(0.0, self.budget_s - spent)
        print(f"[iter {self.iteration} | stage {self.stage} | {self.role:<17}] {redact(message)}  "
              f"({_clock(spent)} spent, {_clock(left)} left)", file=self.stream, flush=True)


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


@dataclass
class RunContext:
    settings: RunSettings
    task: BenchmarkTask
    ws: Workspace
    base_model: str
    on_gpu: bool
    memory: ExperimentMemory
    policies: dict[str, Policy]
    progress: Progress
    meter: Any = None
    """The run's TokenMeter: what the LLM backbones spend, by role (None when every role is the playbook)."""
    _index: Any = None

    def policy(self, role: str) -> Policy:
        return self.policies[role]

    @property
    def budget_s(self) -> float:
        return self.settings.hours * 3600

    def test_index(self):
        """The benchmark test set's n-gram index for decontamination, built once per process."""
        if self._index is None:
            from tools.decontam import NgramIndex

            self._index = NgramIndex.build(self.task.test_texts())
        return self._index
