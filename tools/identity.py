"""Is a submitted model really a fine-tuned copy of the base model? Checked on the weights, not on what the run says
of itself (lineage.json is self-reported): the same architecture and parameter shapes, and every tensor within a
fine-tuning distance of the base's.

The distance is the relative change of a tensor, |W - W_base| / |W_base| (Frobenius norms). Measured for the
embedded SmolLM2-135M (bench/identity.py): after one SFT iteration of the default CPU run the largest relative
change of any tensor was at most a few percent, while a differently initialised copy of the same shape differs by
about 1.4 (two independent random tensors) in every tensor. The threshold sits far from both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from core.errors import GuardViolation

MAX_RELATIVE_CHANGE = 0.5
"""The most any one tensor may move, relative to the base's, for a model to count as derived from it."""


@dataclass(frozen=True)
class Identity:
    tensors: int
    max_change: float
    max_tensor: str
    median_change: float

    def text(self) -> str:
        return (f"{self.tensors} tensors, largest relative change {self.max_change:.4f} ({self.max_tensor}), "
                f"median {self.median_change:.4f}")


def _weights(model_dir: Path) -> dict[str, Path]:
    """Tensor name → the safetensors file holding it."""
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise GuardViolation(f"{model_dir} has no safetensors weights to compare")
    from safetensors import safe_open

    where = {}
    for f in files:
        with safe_open(str(f), framework="pt") as handle:
            where.update({name: f for name in handle.keys()})
    return where


def measure(model_dir: str | Path, base_dir: str | Path) -> Identity:
    """Compare two model folders tensor by tensor (one tensor in memory at a time); `GuardViolation` when their
    architecture or parameter shapes differ."""
    from safetensors import safe_open

    model_dir, base_dir = Path(model_dir), Path(base_dir)
    arch = [json.loads((d / "config.json").read_text()).get("model_type") for d in (model_dir, base_dir)]
    if arch[0] != arch[1]:
        raise GuardViolation(f"{model_dir} is a {arch[0]} model, the base is a {arch[1]}")
    mine, theirs = _weights(model_dir), _weights(base_dir)
    if set(mine) != set(theirs):
        missing = sorted(set(theirs) ^ set(mine))
        raise GuardViolation(f"{model_dir} has other parameters than the base ({len(missing)} differ, e.g. "
                             f"{missing[0]})")
    changes: dict[str, float] = {}
    for name in sorted(mine):
        with safe_open(str(mine[name]), framework="pt") as a, safe_open(str(theirs[name]), framework="pt") as b:
            x, y = a.get_tensor(name).float(), b.get_tensor(name).float()
        if x.shape != y.shape:
            raise GuardViolation(f"{model_dir}: {name} has shape {tuple(x.shape)}, the base's is {tuple(y.shape)}")
        norm = float(y.norm())
        changes[name] = float((x - y).norm()) / norm if norm > 0 else float((x - y).norm())
    ordered = sorted(changes.values())
    worst = max(changes, key=changes.get)
    return Identity(tensors=len(changes), max_change=changes[worst], max_tensor=worst,
                    median_change=ordered[len(ordered) // 2])


def check_derives(model_dir: str | Path, base_dir: str | Path, threshold: float = MAX_RELATIVE_CHANGE) -> Identity:
    """The identity, or `GuardViolation` when the model is not a fine-tuned copy of the base."""
    identity = measure(model_dir, base_dir)
    if identity.max_change > threshold:
        raise GuardViolation(f"{model_dir} does not derive from the base model: {identity.text()}, above the "
                             f"{threshold} a fine-tuned copy stays within")
    return identity
