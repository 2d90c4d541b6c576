"""Paired comparisons, on cases worked out by hand."""

from __future__ import annotations

import pytest

from tools.compare import paired


def test_flips_and_the_mean_difference():
    new = {"a": 1, "b": 1, "c": 0, "d": 0, "e": 1}
    old = {"a": 0, "b": 1, "c": 0, "d": 1, "e": 0, "f": 1}  # f was not scored by both: left out
    c = paired(new, old, against="base")
    assert (c.n, c.better, c.worse) == (5, 2, 1) and c.diff == pytest.approx(0.2)
    assert c.low <= c.diff <= c.high


def test_the_interval_when_every_sample_moved_the_same_way():
    c = paired({str(i): 1.0 for i in range(50)}, {str(i): 0.0 for i in range(50)}, against="base")
    assert (c.diff, c.low, c.high, c.better, c.worse) == (1.0, 1.0, 1.0, 50, 0)


def test_the_interval_matches_the_normal_approximation():
    """400 samples, 40 better and 20 worse: the paired difference is 0.05 with standard error
    sqrt((0.15 - 0.05**2) / 400) = 0.0192, so the 95% interval is about [0.012, 0.088]."""
    new = {str(i): 1.0 if i < 40 else 0.0 for i in range(400)}
    old = {str(i): 1.0 if 40 <= i < 60 else 0.0 for i in range(400)}
    c = paired(new, old, against="base")
    assert c.diff == pytest.approx(0.05) and (c.better, c.worse) == (40, 20)
    assert c.low == pytest.approx(0.0124, abs=0.006) and c.high == pytest.approx(0.0876, abs=0.006)


def test_no_shared_samples_no_comparison():
    assert paired({"a": 1.0}, {"b": 1.0}, against="base") is None
