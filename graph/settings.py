"""Run settings: one pydantic object, saved in the workspace so that `--resume` continues with the same ones."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

ROLES = ("planner", "data_selection", "data_construction", "data_validation", "trainer", "evaluator", "logger")
SETTINGS_FILE = "run_settings.json"


class RunSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: str = "gsm8k"
    """Benchmark name; see `tasks.TASKS`."""
    data_dir: Path | None = None
    """Folder holding `<task>/{train,test}.jsonl`; without it the data comes from the hub."""
    base_model: str | None = None
    """HF id or local folder of the student; None is the embedded SmolLM2-135M-Instruct."""
    workspace: Path
    hours: float = Field(0.75, gt=0)
    """Wall-clock budget for work done (time between a crash and --resume does not count)."""
    max_iterations: int = Field(2, ge=0)
    target: float | None = Field(None, ge=0, le=1)
    """Stop once the development score reaches this accuracy."""
    backbone: str = "playbook"
    """Default backbone for every role: playbook, local, openai:MODEL or openai-compatible:URL#MODEL."""
    role_backbones: dict[str, str] = Field(default_factory=dict)
    """Per-role overrides of `backbone`."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    eval_limit: int | None = None
    """Development evaluation size; None means the sample floor. Below the floor is refused."""
    eval_provider: Literal["auto", "prefixcache", "hf", "vllm"] = "auto"
    eval_batch_size: int | None = Field(None, ge=1)
    """Samples generated together; None: the provider's default (tools.evaluate.default_batch_size)."""
    final_eval: Literal["auto", "full", "none"] = "auto"
    """Full-benchmark evaluation of final_model/ at the end: auto runs it on GPU only."""
    memory_dir: Path | None = None
    """Shared experiment memory (chromadb); defaults to <workspace>/memory."""
    seed: int = 0
    stall_window: int = Field(2, ge=1)
    """Stage 2 becomes stage 3 after this many iterations without a meaningful gain."""
    min_gain: float = Field(0.01, ge=0)
    max_data_rounds: int = Field(4, ge=1)
    """How many times validation may send the data back in one iteration before it is marked failed."""

    @field_validator("role_backbones")
    @classmethod
    def _known_roles(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(v) - set(ROLES))
        if unknown:
            raise ValueError(f"unknown role(s) {unknown}; roles are {', '.join(ROLES)}")
        return v

    def backbone_for(self, role: str) -> str:
        return self.role_backbones.get(role, self.backbone)

    @property
    def memory_path(self) -> Path:
        return self.memory_dir or self.workspace / "memory"

    def save(self) -> None:
        self.workspace.mkdir(parents=True, exist_ok=True)
        (self.workspace / SETTINGS_FILE).write_text(self.model_dump_json(indent=2))

    @classmethod
    def load(cls, workspace: Path) -> RunSettings:
        return cls.model_validate_json((workspace / SETTINGS_FILE).read_text())
