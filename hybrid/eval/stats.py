"""Significance: bootstrap confidence intervals and paired bootstrap tests, in numpy.

    lo, hi = bootstrap_ci([0.1, 0.5, 0.9, ...])               # 95% CI of the mean
    diff, (lo, hi), p = paired_bootstrap(scores_a, scores_b)  # is a better than b?
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def bootstrap_ci(values: Sequence[float], *, n_boot: int = 2000, alpha: float = 0.05,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean; a single value or none gives a zero-width interval."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return 0.0, 0.0
    if x.size == 1:
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_boot, x.size))
    means = x[idx].mean(axis=1)
    return float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2))


def paired_bootstrap(a: Sequence[float], b: Sequence[float], *, n_boot: int = 2000, alpha: float = 0.05,
                     seed: int = 0) -> tuple[float, tuple[float, float], float]:
    """Mean difference a-b over the same questions, its CI, and a two-sided bootstrap p-value."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired samples need equal length, got {x.size} and {y.size}")
    if x.size == 0:
        return 0.0, (0.0, 0.0), 1.0
    d = x - y
    observed = float(d.mean())
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.size, size=(n_boot, d.size))
    boots = d[idx].mean(axis=1)
    lo, hi = float(np.quantile(boots, alpha / 2)), float(np.quantile(boots, 1 - alpha / 2))
    # p-value: how often the centred bootstrap distribution is at least as extreme as observed
    centred = boots - observed
    p = float((np.abs(centred) >= abs(observed) - 1e-12).mean()) if observed != 0 else 1.0
    return observed, (lo, hi), p
