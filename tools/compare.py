"""Paired comparisons: two evaluations on the same samples, compared sample by sample.

The difference of two scores measured on the same samples is far less noisy than either score: the samples both
models get right or wrong cancel out. Every comparison the run reports (an iteration against the best so far, the
final model against the base) gives the mean paired difference, its 95% interval from a paired bootstrap, and how
many samples flipped each way.
"""

from __future__ import annotations

import random

from core.handoffs import Comparison

BOOTSTRAP = 2000


def paired(new: dict[str, float], old: dict[str, float], *, against: str, seed: int = 0,
           resamples: int = BOOTSTRAP) -> Comparison | None:
    """`new` minus `old` on the samples both scored (None when they share none)."""
    ids = sorted(set(new) & set(old))
    if not ids:
        return None
    diffs = [new[i] - old[i] for i in ids]
    n = len(diffs)
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(diffs, k=n)) / n for _ in range(resamples))
    lo, hi = means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]
    return Comparison(against=against, n=n, diff=sum(diffs) / n, low=lo, high=hi,
                      better=sum(d > 0 for d in diffs), worse=sum(d < 0 for d in diffs))
