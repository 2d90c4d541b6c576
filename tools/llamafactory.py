"""LlamaFactory, as the trainer runs it: a typed recipe checked against the installed argument parsers, a
supervised subprocess run with progress lines, and the short validation run before the full one.

Training itself is LlamaFactory's (`python -m llamafactory.cli train <yaml>`); nothing here replaces it.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.errors import TrainConfigError, TrainingFailed
from core.proc import die_with_parent, kill_group
from tools.sft_data import TEMPLATE

CONFIG_NAME = "llamafactory.yaml"
LOG_NAME = "train.log"
TAIL_LINES = 40

PrefLoss = Literal["sigmoid", "hinge", "ipo", "kto_pair", "orpo", "simpo"]
"""The preference losses LlamaFactory 0.9.5 accepts (RLHFArguments.pref_loss)."""


class TrainConfig(BaseModel):
    """The LlamaFactory training recipe, one field per LlamaFactory/transformers argument (None = not rendered)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # model
    model_name_or_path: str
    disable_gradient_checkpointing: bool = False
    """LlamaFactory turns gradient checkpointing on by default. Turning it off trades memory for speed; on CPU with
    SmolLM2-135M the 49k-vocabulary head dominates and the measured difference was within noise."""
    # method
    stage: Literal["sft", "dpo"] = "sft"
    """sft: supervised fine-tuning on instruction/output rows; dpo: preference training on instruction/chosen/rejected
    rows (a ranking dataset). Full DPO loads a frozen copy of the start model as its reference (a second model in
    memory); LoRA DPO uses the model with its adapters disabled."""
    do_train: bool = True
    pref_beta: float | None = Field(default=None, gt=0)
    """DPO only: how far the policy may move from the reference (LlamaFactory's default 0.1)."""
    pref_loss: PrefLoss | None = None
    """DPO only: the preference loss; sigmoid is DPO proper (orpo and simpo train without a reference model)."""
    finetuning_type: Literal["full", "lora"] = "full"
    lora_rank: int | None = Field(default=None, gt=0)
    lora_alpha: int | None = Field(default=None, gt=0)
    lora_target: str | None = None
    # data
    template: str = TEMPLATE
    dataset: str
    dataset_dir: str
    cutoff_len: int = Field(default=1024, gt=0)
    max_samples: int | None = Field(default=None, gt=0)
    overwrite_cache: bool = True
    preprocessing_num_workers: int | None = None
    """None: tokenize in the training process; worker processes only pay off on large datasets."""
    dataloader_num_workers: int = 0
    # optimisation
    per_device_train_batch_size: int = Field(default=4, gt=0)
    gradient_accumulation_steps: int = Field(default=1, gt=0)
    learning_rate: float = Field(default=2.0e-5, gt=0)
    num_train_epochs: float = Field(default=1.0, gt=0)
    max_steps: int | None = Field(default=None, gt=0)
    """When set, overrides num_train_epochs."""
    lr_scheduler_type: str = "cosine"
    warmup_steps: int = Field(default=0, ge=0)
    seed: int = 42
    # logging and output
    logging_steps: int = Field(default=1, gt=0)
    save_strategy: Literal["no"] = "no"
    """Checkpoints cost minutes and disk on CPU; LlamaFactory still saves the final model."""
    output_dir: str
    overwrite_output_dir: bool = True
    plot_loss: bool = False
    report_to: Literal["none"] = "none"
    # device
    deepspeed: str | None = None
    """A DeepSpeed config (tools/deepspeed/*.json) when the recipe shards the model state over several GPUs."""
    bf16: bool = False
    fp16: bool = False
    use_cpu: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.bf16 and self.fp16:
            raise ValueError("bf16 and fp16 are exclusive")
        if self.use_cpu and self.fp16:
            raise ValueError("fp16 mixed precision needs a GPU (use_cpu=True)")
        lora_fields = {"lora_rank": self.lora_rank, "lora_alpha": self.lora_alpha, "lora_target": self.lora_target}
        if self.finetuning_type == "full" and any(v is not None for v in lora_fields.values()):
            raise ValueError("lora_rank/lora_alpha/lora_target only apply to finetuning_type 'lora'")
        if self.finetuning_type == "lora":
            # Set through __dict__ to avoid re-running this validator on assignment.
            if self.lora_rank is None:
                self.__dict__["lora_rank"] = 8
            if self.lora_target is None:
                self.__dict__["lora_target"] = "all"
        if self.stage == "sft" and (self.pref_beta is not None or self.pref_loss is not None):
            raise ValueError("pref_beta/pref_loss only apply to stage 'dpo'")
        if self.stage == "dpo":  # rendered explicitly, so the recipe on disk says what it trained with
            if self.pref_beta is None:
                self.__dict__["pref_beta"] = 0.1
            if self.pref_loss is None:
                self.__dict__["pref_loss"] = "sigmoid"
        return self

    @classmethod
    def for_device(cls, *, on_gpu: bool, **fields: Any) -> TrainConfig:
        """A recipe with the device-dependent defaults: bf16 on GPU; float32 with use_cpu on CPU."""
        device = {"bf16": True, "fp16": False, "use_cpu": False} if on_gpu else {"bf16": False, "fp16": False,
                                                                                 "use_cpu": True}
        return cls(**{**device, **fields})

    def to_dict(self) -> dict[str, Any]:
        """The keys LlamaFactory will receive (unset optional fields are left to its defaults)."""
        return self.model_dump(exclude_none=True)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _argument_classes(command: Literal["train", "export"] = "train") -> list[type]:
    """The argument dataclasses LlamaFactory parses for `command` (its _TRAIN_ARGS / _INFER_ARGS)."""
    from llamafactory.hparams import (
        DataArguments,
        FinetuningArguments,
        GeneratingArguments,
        ModelArguments,
        TrainingArguments,
    )

    if command == "export":
        return [ModelArguments, DataArguments, FinetuningArguments, GeneratingArguments]
    return [ModelArguments, DataArguments, TrainingArguments, FinetuningArguments, GeneratingArguments]


def check_config(cfg: TrainConfig | Mapping[str, Any], command: Literal["train", "export"] = "train") -> None:
    """Check every key and value against the installed LlamaFactory's and transformers' argument parsers.

    Raises `TrainConfigError` naming unknown keys (e.g. `warmup_ratio`, which transformers 5.17 no longer accepts)
    or the parser's own complaint about a value. Run it before every run: a rejected key otherwise costs a model
    load and a dataset pass before LlamaFactory fails.
    """
    os.environ.setdefault("DISABLE_VERSION_CHECK", "1")  # llamafactory refuses to import without it (datasets pin)
    import dataclasses

    from transformers import HfArgumentParser

    args = cfg.to_dict() if isinstance(cfg, TrainConfig) else dict(cfg)
    classes = _argument_classes(command)
    known = {f.name for c in classes for f in dataclasses.fields(c) if f.init}
    unknown = sorted(set(args) - known)
    if unknown:
        import transformers

        raise TrainConfigError(
            f"unknown {command} argument(s) {', '.join(unknown)}: not accepted by the installed LlamaFactory "
            f"{_llamafactory_version()} / transformers {transformers.__version__}"
        )
    try:
        HfArgumentParser(classes).parse_dict(args, allow_extra_keys=False)
    except (ValueError, TypeError) as e:  # the dataclasses' own value checks (__post_init__)
        raise TrainConfigError(f"{command} config rejected by the argument parser: {e}") from e


def _llamafactory_version() -> str:
    import llamafactory

    return str(getattr(llamafactory, "__version__", "?"))


# ------------------------------------------------------------------------------------------------------ the runs


@dataclass(frozen=True)
class TrainRun:
    """The outcome of one LlamaFactory run."""

    returncode: int
    log_path: Path
    train_loss: float | None
    runtime_s: float
    """Wall time of the subprocess (start-up, data, training, save)."""
    steps: int | None
    command: list[str]
    output_dir: Path
    train_runtime_s: float | None = None
    """The trainer's own train_runtime (the training loop only)."""


# The trainer's own bar has no description ("  25%|██▌       | 1/4 [00:08<00:26,  8.88s/it]"); dataset, weight
# loading and shard-writing bars all start with one, so anchoring on the bare percentage picks the training bar.
_TRAIN_BAR = re.compile(r"^\s*\d+%\|[^|]*\|\s*(\d+)/(\d+) \[")
_NUMBER = r"['\"]?(-?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?|nan|inf)['\"]?"
_LOSS = re.compile(r"['\"]loss['\"]: *" + _NUMBER, re.IGNORECASE)  # the trainer's per-logging-step dict
_EPOCH = re.compile(r"['\"]epoch['\"]: *" + _NUMBER)
_TRAIN_LOSS = re.compile(r"['\"]train_loss['\"]: *" + _NUMBER, re.IGNORECASE)  # its end-of-training dict


class _ProgressParser:
    """Turns LlamaFactory's output (the training bar and the trainer's log dicts) into short progress lines."""

    def __init__(self, logging_steps: int) -> None:
        self.logging_steps = logging_steps
        self.step: int | None = None
        self.total: int | None = None
        self.loss: float | None = None

    def _where(self) -> str:
        """"step 3/40 " once the trainer's bar was seen (without it: nothing)."""
        return f"step {self.step}/{self.total} " if self.step is not None else ""

    def feed(self, line: str) -> str | None:
        """The progress line to report for `line`, or None when it brings nothing new."""
        if m := _TRAIN_LOSS.search(line):
            steps = f"{self.step}/{self.total} steps, " if self.step is not None else ""
            return f"done: {steps}train_loss {float(m.group(1)):.4f}"
        if m := _LOSS.search(line):
            self.loss = float(m.group(1))
            epoch = _EPOCH.search(line)
            where = self._where() or (f"epoch {float(epoch.group(1)):g}: " if epoch else "")
            return f"{where}loss {self.loss:.4f}"
        if m := _TRAIN_BAR.search(line):
            step, total = int(m.group(1)), int(m.group(2))
            advanced = step != self.step
            self.step, self.total = step, total
            # A logging step reports itself with its loss a moment later; only the others are reported here.
            if advanced and (step == 0 or step % self.logging_steps != 0):
                return f"step {step}/{total}" + (f" (last loss {self.loss:.4f})" if self.loss is not None else "")
        return None


def build_command(config_path: Path, python: str | None = None, command: str = "train") -> list[str]:
    """The LlamaFactory CLI invocation; its launcher starts torchrun itself when several GPUs are visible."""
    return [python or sys.executable, "-m", "llamafactory.cli", command, str(config_path)]


def run_training(
    cfg: TrainConfig,
    workdir: Path,
    on_progress: Callable[[str], None] | None = None,
    *,
    timeout_s: float | None = None,
    python: str | None = None,
    env: Mapping[str, str] | None = None,
) -> TrainRun:
    """Run LlamaFactory on `cfg` in a subprocess, logging into `workdir/train.log`; `env` adds defaults to the
    child's environment (the caller's own variables win: CUDA_VISIBLE_DEVICES, NNODES and the like pass through).

    Writes `workdir/llamafactory.yaml` and `workdir/command.txt`, checks the config first (`check_config`), streams
    the child's output into the log and `on_progress` ("step 3/16 loss 1.2345"), and returns a `TrainRun`.
    A non-zero exit or a timeout raises `TrainingFailed` with the last log lines. The child runs in its own session
    and dies with this process (PDEATHSIG), so neither a crash in it nor a kill of the caller leaves a stray trainer.
    """
    cfg = _absolute_paths(cfg)  # the child runs in workdir; relative paths must keep meaning the caller's
    check_config(cfg)
    # On shared CPUs, OpenMP's default spin-waiting made a 2-thread step ~2.5x slower than a passive wait
    # (SmolLM2-135M, batch 4x300: 77-86 s vs 29-36 s at load ~7). The caller's own setting wins.
    cpu_env = {"OMP_WAIT_POLICY": "PASSIVE"} if cfg.use_cpu else {}
    cpu_env |= dict(env or {})
    returncode, log_path, parser, runtime, command = _run_cli(
        "train", cfg.to_yaml(), Path(workdir), cfg.logging_steps, on_progress, timeout_s, python, cpu_env
    )
    metrics = _read_metrics(Path(cfg.output_dir))
    return TrainRun(
        returncode=returncode,
        log_path=log_path,
        train_loss=metrics.get("train_loss", parser.loss),
        runtime_s=runtime,
        steps=metrics.get("global_step", parser.step),
        command=command,
        output_dir=Path(cfg.output_dir),
        train_runtime_s=metrics.get("train_runtime"),
    )


def _absolute_paths(cfg: TrainConfig) -> TrainConfig:
    update = {"output_dir": str(Path(cfg.output_dir).resolve()), "dataset_dir": str(Path(cfg.dataset_dir).resolve())}
    if Path(cfg.model_name_or_path).exists():  # a local folder, not a hub id
        update["model_name_or_path"] = str(Path(cfg.model_name_or_path).resolve())
    return cfg.model_copy(update=update)


def _run_cli(
    command_name: str,
    config_yaml: str,
    workdir: Path,
    logging_steps: int,
    on_progress: Callable[[str], None] | None,
    timeout_s: float | None,
    python: str | None,
    default_env: Mapping[str, str] | None = None,
) -> tuple[int, Path, _ProgressParser, float, list[str]]:
    """Run `llamafactory.cli <command_name> <workdir/llamafactory.yaml>`, supervised; raise TrainingFailed on error."""
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / CONFIG_NAME
    config_path.write_text(config_yaml, encoding="utf-8")
    command = build_command(config_path, python, command_name)
    (workdir / "command.txt").write_text(_shell_line(command) + "\n", encoding="utf-8")
    log_path = workdir / LOG_NAME

    env = {**(default_env or {}), **os.environ}  # CUDA_VISIBLE_DEVICES and friends pass through untouched
    env["DISABLE_VERSION_CHECK"] = "1"  # llamafactory 0.9.5 pins datasets<=4.0.0; the lock has a newer one
    env["PYTHONUNBUFFERED"] = "1"  # progress must arrive as it happens, not when a pipe buffer fills
    env.pop("TQDM_DISABLE", None)  # the trainer's bar goes to the log, and the progress lines are read from it
    # transformers turns its bar off below warning verbosity, and graph.run quiets it to error for itself.
    env["TRANSFORMERS_VERBOSITY"] = "warning"
    started = time.monotonic()
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    parser = _ProgressParser(logging_steps)
    with log_path.open("w", encoding="utf-8") as log:
        log.write(f"$ {_shell_line(command)}\n")
        log.flush()
        proc = subprocess.Popen(
            command,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: one killpg reaches torchrun's workers too
            preexec_fn=die_with_parent(),
        )
        try:
            timed_out = _pump(proc, log, tail, parser, on_progress, started, timeout_s)
            returncode = proc.wait()
        except BaseException:
            kill_group(proc)  # an exception here (KeyboardInterrupt, a failing callback) must not orphan it
            raise
    runtime = time.monotonic() - started
    if timed_out:
        raise TrainingFailed(f"LlamaFactory {command_name} timed out after {timeout_s:.0f}s", None, list(tail),
                             log_path)
    if returncode != 0:
        raise TrainingFailed(f"LlamaFactory {command_name} exited with code {returncode}", returncode, list(tail),
                             log_path)
    return returncode, log_path, parser, runtime, command


def _pump(
    proc: subprocess.Popen[bytes],
    log: Any,
    tail: deque[str],
    parser: _ProgressParser,
    on_progress: Callable[[str], None] | None,
    started: float,
    timeout_s: float | None,
) -> bool:
    """Copy the child's output to the log line by line (tqdm's `\\r` updates count as lines); True on timeout."""
    import selectors

    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    pending = b""
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            if timeout_s is not None and time.monotonic() - started > timeout_s:
                kill_group(proc)
                tail.append(f"[killed after {timeout_s:.0f}s timeout]")
                log.write(tail[-1] + "\n")
                return True
            if not sel.select(timeout=1.0):
                if proc.poll() is not None:  # exited, but a stray grandchild still holds the pipe open
                    break
                continue
            chunk = os.read(fd, 65536)
            if not chunk:  # EOF: the child closed its output
                break
            pending += chunk
            *lines, pending = re.split(rb"\r\n|\r|\n", pending)
            for raw in lines:
                _take_line(raw.decode("utf-8", "replace"), log, tail, parser, on_progress)
            log.flush()
    if pending:
        _take_line(pending.decode("utf-8", "replace"), log, tail, parser, on_progress)
    proc.stdout.close()
    return False


def _take_line(
    line: str, log: Any, tail: deque[str], parser: _ProgressParser, on_progress: Callable[[str], None] | None
) -> None:
    if not line.strip():
        return
    log.write(line + "\n")
    tail.append(line)
    progress = parser.feed(line)
    if progress and on_progress is not None:
        on_progress(progress)


def _read_metrics(output_dir: Path) -> dict[str, Any]:
    """train_loss / train_runtime from train_results.json and global_step from trainer_state.json."""
    metrics: dict[str, Any] = {}
    results = output_dir / "train_results.json"
    if results.is_file():
        metrics.update(json.loads(results.read_text(encoding="utf-8")))
    state = output_dir / "trainer_state.json"
    if state.is_file():
        metrics["global_step"] = json.loads(state.read_text(encoding="utf-8")).get("global_step")
    return metrics


def _shell_line(command: list[str]) -> str:
    import shlex

    return " ".join(shlex.quote(c) for c in command)


def validation_run(
    cfg: TrainConfig,
    workdir: Path,
    on_progress: Callable[[str], None] | None = None,
    *,
    steps: int = 2,
    timeout_s: float | None = None,
    env: Mapping[str, str] | None = None,
) -> TrainRun:
    """The short validation run before the full one: the same recipe for `steps` optimizer steps.

    Everything lives under `workdir/validation`; the saved weights are deleted afterwards (nothing is exported),
    the log and metrics stay. A non-finite loss is a failure: the full run would only waste its budget.
    """
    vdir = Path(workdir).resolve() / "validation"
    if vdir.exists():
        shutil.rmtree(vdir)  # a stale folder from an earlier attempt would mix its files into this one's
    out = vdir / "output"
    vcfg = cfg.model_copy(update={"max_steps": steps, "output_dir": str(out), "logging_steps": 1})
    vcfg = TrainConfig.model_validate(vcfg.model_dump())  # re-validate the copy
    run = run_training(vcfg, vdir, on_progress, timeout_s=timeout_s, env=env)
    if run.train_loss is None or not math.isfinite(run.train_loss):
        raise TrainingFailed(f"validation run finished with loss {run.train_loss}", 0, _tail(run.log_path),
                             run.log_path)
    for item in out.iterdir():
        is_weights = item.suffix in {".safetensors", ".bin", ".pt", ".pth"} or item.name.endswith(".index.json")
        if is_weights and item.name != "training_args.bin":
            item.unlink()  # the weights of a 2-step run are worthless and large (0.5 GB for SmolLM2-135M)
    return run


def _tail(log_path: Path, n: int = TAIL_LINES) -> list[str]:
    with log_path.open(encoding="utf-8", errors="replace") as f:
        return [line.rstrip("\n") for line in deque(f, maxlen=n)]


def is_out_of_memory(error: TrainingFailed) -> bool:
    """Whether a failed run ran out of GPU memory (then a smaller recipe may fit)."""
    return any("out of memory" in line.lower() for line in error.log_tail)
