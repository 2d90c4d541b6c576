"""Hard rules enforced in code: evaluation code checksums, model lineage, data provenance and GPU visibility."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path

from graph.workspace import Workspace


class GuardViolation(RuntimeError):
    """A hard rule was broken. The run stops cleanly with its state saved; the message says what and where."""


# Modules whose code decides what the evaluation measures: the benchmark's task, our task adapter and scorer,
# and the generation path in use. Their files are checksummed at the start and checked before every evaluation.
EVAL_MODULES = (
    "inspect_evals.gsm8k.gsm8k",
    "inspect_ai.scorer._common",
    "tasks.base",
    "tasks.gsm8k",
    "tasks.scoring",
    "tools.evaluate",
)
PROVIDER_MODULES = {
    "prefixcache": "tools.prefix_cache",
    "hf": "inspect_ai.model._providers.hf",
    "vllm": "inspect_ai.model._providers.vllm",
}


def eval_code_files(provider: str) -> list[Path]:
    files = []
    for name in (*EVAL_MODULES, PROVIDER_MODULES[provider]):
        spec = importlib.util.find_spec(name)  # locate without importing: the heavy stack loads later
        if spec is None or spec.origin is None:
            raise GuardViolation(f"evaluation module {name} not found")
        files.append(Path(spec.origin).resolve())
    return files


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def record_eval_checksums(ws: Workspace, provider: str) -> dict[str, str]:
    """Write the checksums of the evaluation code once per run (kept across --resume)."""
    if ws.eval_checksums.is_file():
        return json.loads(ws.eval_checksums.read_text())
    sums = {str(p): _sha256(p) for p in eval_code_files(provider)}
    ws.eval_checksums.write_text(json.dumps(sums, indent=2))
    return sums


def verify_eval_checksums(ws: Workspace) -> None:
    """Refuse to evaluate if any checksummed evaluation file changed since the run started."""
    sums = json.loads(ws.eval_checksums.read_text())
    for path, digest in sums.items():
        p = Path(path)
        if not p.is_file():
            raise GuardViolation(f"evaluation file removed since the run started: {path}")
        if _sha256(p) != digest:
            raise GuardViolation(f"evaluation file modified since the run started: {path}")


def check_start_checkpoint(start: str, base_model: str, ws: Workspace) -> list[str]:
    """The lineage of a training start point; anything but the base model or this workspace's own checkpoints
    (which descend from it) is refused."""
    if start == base_model:
        return [base_model]
    path = Path(start)
    if not path.is_dir() or not ws.is_own_checkpoint(path):
        raise GuardViolation(f"refusing to train from {start}: only the base model ({base_model}) or checkpoints "
                             f"this workspace produced are allowed")
    lineage_file = path / "lineage.json"
    if not lineage_file.is_file():
        raise GuardViolation(f"refusing to train from {start}: it has no lineage.json recording its origin")
    lineage = json.loads(lineage_file.read_text())
    if not lineage or lineage[0] != base_model:
        raise GuardViolation(f"refusing to train from {start}: its lineage starts at {lineage[:1]}, not {base_model}")
    return [*lineage, str(path)]


def write_lineage(model_dir: Path, lineage: list[str]) -> None:
    (model_dir / "lineage.json").write_text(json.dumps(lineage, indent=2))


def check_data_source(source: str) -> None:
    """Training data may come from local files, the hub, or a local model; never from a remote model API."""
    lowered = source.lower()
    if lowered.startswith(("http://", "https://", "openai:", "openai-compatible:", "api:")):
        raise GuardViolation(f"refusing data source {source!r}: remote model APIs may be used only for evaluation "
                             "judges, never to build training data")


def child_env(**extra: str) -> dict[str, str]:
    """Environment for training and evaluation subprocesses: inherits CUDA_VISIBLE_DEVICES untouched."""
    env = dict(os.environ)
    env.update(extra)
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
    return env
