"""Rank statistics for the proxy-fidelity benchmark: Kendall tau-b, its bootstrap interval, paired differences.

Written with numpy only (no scipy dependency). The bootstrap resamples *architectures* with replacement (the
unit the proxy is asked to rank), seeded, so the same inputs give the same interval.
"""

from __future__ import annotations

import math

import numpy as np

BOOTSTRAP_RESAMPLES = 2000  # percentile interval endpoints move by < 0.01 tau between 2,000 and 10,000 here
CONFIDENCE = 0.90


def kendall_tau_b(x, y) -> float:
    """Kendall's tau-b of two rankings (ties in either handled); NaN if either is constant or n < 2.

    Args:
        x, y: equal-length sequences of numbers; pairs where either is not finite are dropped.

    Returns:
        tau-b in [-1, 1], or NaN.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    i, j = np.triu_indices(len(x), 1)
    dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    pairs = len(i)
    denom = math.sqrt(float(pairs - (dx == 0).sum()) * float(pairs - (dy == 0).sum()))
    return float((dx * dy).sum() / denom) if denom else float("nan")


def _resamples(n: int, *, seed: int, resamples: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _interval(values: np.ndarray) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if not len(v):
        return float("nan"), float("nan")
    lo, hi = np.quantile(v, [(1 - CONFIDENCE) / 2, 1 - (1 - CONFIDENCE) / 2])
    return float(lo), float(hi)


def bootstrap_tau(x, y, *, seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES) -> dict[str, float]:
    """tau-b of ``x`` against ``y`` with a percentile bootstrap interval (architectures resampled).

    Returns:
        ``{"tau", "lo", "hi", "n"}``; ``lo``/``hi`` bound the central :data:`CONFIDENCE` interval.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    idx = _resamples(len(x), seed=seed, resamples=resamples)
    boot = np.array([kendall_tau_b(x[k], y[k]) for k in idx]) if len(x) > 1 else np.array([np.nan])
    lo, hi = _interval(boot)
    return {"tau": kendall_tau_b(x, y), "lo": lo, "hi": hi, "n": int(len(x))}


def paired_difference(a, b, y, *, seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES) -> dict[str, float]:
    """tau(a, y) - tau(b, y) on the same architectures, with a paired bootstrap interval.

    The same resample of architectures scores both estimators, so the interval is that of the *difference*
    (much narrower than the two separate intervals when the estimators err on the same architectures).

    Returns:
        ``{"diff", "lo", "hi", "n"}``.
    """
    a, b, y = (np.asarray(v, dtype=float) for v in (a, b, y))
    idx = _resamples(len(y), seed=seed, resamples=resamples)
    boot = np.array([kendall_tau_b(a[k], y[k]) - kendall_tau_b(b[k], y[k]) for k in idx])
    lo, hi = _interval(boot)
    return {"diff": kendall_tau_b(a, y) - kendall_tau_b(b, y), "lo": lo, "hi": hi, "n": int(len(y))}


def noise_ceiling(truth, sigma: float, *, seed: int = 0, draws: int = 500) -> float:
    """Expected tau-b of a perfect estimator against ``truth`` measured with seed-to-seed noise ``sigma``.

    Approximation: the observed ``truth`` stands in for the noise-free accuracies, and Gaussian noise of
    standard deviation ``sigma`` is added to it ``draws`` times (slightly optimistic: the observed values
    already spread a little more than the noise-free ones).

    Returns:
        Mean tau-b over the draws (NaN if ``sigma`` is not finite).
    """
    if not math.isfinite(sigma):
        return float("nan")
    t = np.asarray(truth, dtype=float)
    rng = np.random.default_rng(seed)
    return float(np.mean([kendall_tau_b(t, t + rng.normal(0.0, sigma, len(t))) for _ in range(draws)]))


def reliability(acc, se) -> float:
    """Share of the across-architecture variance of ``acc`` that is not evaluation noise: 1 - mean(se²)/var(acc).

    1.0 = the finite validation set adds no noise to the ranking; 0.5 = half the spread between candidates
    is the validation set's binomial noise.
    """
    acc, se = np.asarray(acc, dtype=float), np.asarray(se, dtype=float)
    var = float(np.var(acc, ddof=1)) if len(acc) > 1 else float("nan")
    return 1.0 - float(np.mean(se ** 2)) / var if var and math.isfinite(var) else float("nan")
