"""Run settings: one pydantic object, saved in the workspace so that `--resume` continues with the same ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ROLES = ("planner", "data_selection", "data_construction", "data_validation", "trainer", "logger")
"""The roles that decide something, so the ones a backbone can be chosen for (the evaluator runs the benchmark's
own evaluation and decides nothing)."""
SETTINGS_FILE = "run_settings.json"


class RetrySettings(BaseModel):
    """How backbone calls ride out faults: dropped connections, timeouts, HTTP 5xx and 429."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    max_attempts: int = Field(8, ge=1, le=100)
    """Attempts per call, the first included."""
    initial_wait_s: float = Field(2.0, gt=0, allow_inf_nan=False)
    """Wait before the first retry; it doubles each time (with jitter), up to max_wait_s."""
    max_wait_s: float = Field(60.0, gt=0, allow_inf_nan=False)
    """The longest single wait (a server's Retry-After is honoured up to this too)."""
    run_budget_s: float = Field(1800.0, ge=0, allow_inf_nan=False)
    """Seconds of waiting for retries the whole run may spend; past it, a fault stops the run (resumable)."""
    call_deadline_s: float = Field(600.0, gt=0, allow_inf_nan=False)
    """One call, retries included, gives up after this long."""
    read_timeout_s: float = Field(180.0, gt=0, allow_inf_nan=False)
    """One request's wait for the server's answer; a stalled answer counts as a fault and is retried."""


class RunSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    task: str
    """Benchmark name; see `tasks.TASKS`."""
    data_dir: Path | None = None
    """Folder holding `<task>/<split>.jsonl`; without it the data comes from the hub."""
    base_model: str | None = None
    """HF id or local folder of the student; None is the embedded SmolLM2-135M-Instruct."""
    workspace: Path
    hours: float = Field(0.75, gt=0, allow_inf_nan=False)
    """Wall-clock budget for work done (time between a crash and --resume does not count)."""
    max_iterations: int = Field(2, ge=0)
    target: float | None = Field(None, ge=0, le=1)
    """Stop once the development score reaches this."""
    backbone: str = "playbook"
    """Default backbone for every role: playbook, local, openai:MODEL or openai-compatible:URL#MODEL."""
    role_backbones: dict[str, str] = Field(default_factory=dict)
    """Per-role overrides of `backbone`."""
    judge: str | None = None
    """Backbone spec of the judge model, for benchmarks scored by a judge."""
    generator: str | None = None
    """The local model that writes augmented and synthetic rows: `student` (the model being trained) or
    openai-compatible:URL#MODEL on a local host. None: no generation."""
    train_file: Path | None = None
    """A local JSONL in the benchmark's raw schema that replaces its default training source (benchmark_train)."""
    max_llm_tokens: int | None = Field(None, ge=1)
    """Stop the run (resumable, exit 5) once the LLM backbones have spent this many tokens, input and output."""
    prices: dict[str, tuple[float, float]] = Field(default_factory=dict)
    """Price per million input and output tokens, by backbone spec (or its model name): the log and report show cost."""
    backbone_max_tokens: int = Field(2048, ge=64, le=65536)
    """Longest answer a backbone may write in one call (a handoff is a few hundred tokens)."""
    retry: RetrySettings = Field(default_factory=RetrySettings)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    eval_limit: int | None = Field(None, ge=1)
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
    allow_overlap: bool = False
    """Run even when the training source shares items with the test set (refused by default)."""

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data: Any) -> Any:
        # Runs saved before the deciding roles were one list allowed an `evaluator` backbone that nothing asked.
        if isinstance(data, dict) and isinstance(data.get("role_backbones"), dict):
            data = {**data, "role_backbones": {k: v for k, v in data["role_backbones"].items() if k != "evaluator"}}
        return data

    @field_validator("role_backbones")
    @classmethod
    def _known_roles(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(v) - set(ROLES))
        if unknown:
            raise ValueError(f"unknown role(s) {unknown}; roles are {', '.join(ROLES)}")
        return v

    @field_validator("workspace", "data_dir", "memory_dir", "train_file", mode="before")
    @classmethod
    def _path(cls, v: Any) -> Any:
        if v is None:
            return v
        if not isinstance(v, (str, Path)):
            raise ValueError(f"expected a path, got {type(v).__name__} {v!r}")
        if not str(v).strip():
            raise ValueError("the path is empty")
        return Path(v).expanduser().resolve()  # saved absolute, so a resume from another folder finds it

    def backbone_for(self, role: str) -> str:
        return self.role_backbones.get(role, self.backbone)

    def cost(self, role: str, usage: Any) -> float | None:
        """USD a role's tokens cost, from `prices` (by the role's backbone spec, or its model name); None: no price."""
        spec = self.backbone_for(role)
        model = spec.rpartition("#")[2] if "#" in spec else spec.partition(":")[2]
        price = self.prices.get(spec) or self.prices.get(model)
        return None if price is None else (usage.input * price[0] + usage.output * price[1]) / 1e6

    def token_lines(self, tokens: dict[str, Any]) -> list[str]:
        """One line per role that spent LLM tokens, then the total, with the cost where prices are known."""
        lines, total, dollars = [], None, 0.0
        for role, usage in sorted(tokens.items()):
            cost = self.cost(role, usage)
            dollars += cost or 0.0
            total = usage if total is None else total + usage
            lines.append(f"{role}: {usage.input} input ({usage.cached} cached) + {usage.output} output tokens in "
                         f"{usage.calls} calls" + (f", ${cost:.4f}" if cost is not None else ""))
        if total is not None:
            lines.append(f"total: {total.total} tokens in {total.calls} calls" + (f", ${dollars:.4f}" if self.prices
                                                                                    else ""))
        return lines

    @property
    def memory_path(self) -> Path:
        return self.memory_dir or self.workspace / "memory"

    def save(self) -> None:
        self.workspace.mkdir(parents=True, exist_ok=True)
        path = self.workspace / SETTINGS_FILE
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.model_dump_json(indent=2))
        tmp.replace(path)  # a kill mid-write leaves the old file or the new one, never half of one

    @classmethod
    def load(cls, workspace: Path) -> RunSettings:
        return cls.model_validate_json((workspace / SETTINGS_FILE).read_text(encoding="utf-8"))
