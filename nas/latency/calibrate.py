"""Calibration: from the sum of a network's block entries to its end-to-end time.

A few whole networks (the paper presets in the space, then seeded random draws: :func:`calibration_configs`)
are timed end to end during a build. Of :data:`CALIBRATION_MODELS`, each tried with every cold-weights blend
of :data:`COLD_GRID_MB`, the one with the lowest leave-one-out error is kept (:func:`fit_calibration`). The
fit is stored in the table file and used as stored; it is refitted only on request
(:meth:`nas.latency.table.LatencyTable.recalibrate`, which a build calls when it ends).

The fitted model::

    latency_ms = scale * (warm + share * (cold - warm)) + per_block_ms * (blocks - 1)

where ``warm`` and ``cold`` are sums of the block entries and ``share`` is :func:`cold_share` of the network's
weight bytes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nas.arch import PRESETS, ArchConfig
from nas.errors import MissingEntriesError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from nas.latency.table import LatencyTable
    from nas.space import SearchSpace

__all__ = ["CALIBRATION_MODELS", "COLD_GRID_MB", "cold_share", "fit_calibration", "calibration_configs"]

# Calibration models: which of the block sum (S) and blocks - 1 (N) enter the fit; with "S fixed" the sum's
# coefficient is 1 and only the per-block correction is fitted. Why N: a network is one call where the table
# summed n calls (about -5..+25 us per block at 1 thread here). S itself blends the warm and the cold-weights
# entries by the network's weight bytes (cold_share), the two thresholds chosen from COLD_GRID_MB with the
# model (``None``: warm entries only, for devices whose caches hold any network of the space).
CALIBRATION_MODELS: dict[str, tuple[tuple[str, ...], bool]] = {
    "none": ((), True),
    "offset": (("N",), True),
    "scale": (("S",), False),
    "affine": (("S", "N"), False),
}
COLD_GRID_MB: tuple[tuple[float | None, float | None], ...] = ((None, None),) + tuple(
    (a, a + w) for a in (4.0, 8.0, 12.0, 16.0, 20.0, 24.0, 32.0) for w in (0.0, 4.0, 8.0, 16.0))
LOO_CAP_PCT = 20.0  # one wild network counts at most this much in a model's score
# Each free parameter (the cold blend counts as one) costs this many %-points of leave-one-out error: a richer
# model must beat a simpler one by that much to be chosen (empirical).
FREE_PARAMETER_PENALTY_PCT = 0.3
# Outliers: networks whose relative residual has a modified z-score above 3.5 (Iglewicz & Hoaglin, "How to
# Detect and Handle Outliers", 1993: |0.6745 (x - median) / MAD| > 3.5; 1 / 0.6745 = 1.4826 turns a median
# absolute deviation into a normal sigma) ...
OUTLIER_Z = 3.5
MAD_TO_SIGMA = 1.4826
# ... and at least 3 % off (when the networks agree closely, a MAD-based limit alone would set ordinary
# measurement noise aside; empirical), at most a quarter of the networks, none with fewer than 6.
OUTLIER_MIN_RESIDUAL = 0.03
OUTLIER_MAX_SHARE = 4  # at most 1/4 of the networks
OUTLIER_MIN_NETS = 6
CALIBRATION_NOTE = ("latency_ms = scale * (warm + share * (cold - warm)) + per_block_ms * (blocks - 1); share = "
                    "0 below cold_from_mb of weights, 1 above cold_full_mb, linear between")


def cold_share(weight_mb: float, cold_from_mb: float | None, cold_full_mb: float | None) -> float:
    """How far a network of ``weight_mb`` is in the cold-weights regime: 0 below ``cold_from_mb``, 1 above
    ``cold_full_mb``, linear between (0 everywhere when the calibration chose no cold blend)."""
    if cold_from_mb is None or cold_full_mb is None:
        return 0.0
    if weight_mb <= cold_from_mb:
        return 0.0
    if weight_mb >= cold_full_mb:
        return 1.0
    return (weight_mb - cold_from_mb) / (cold_full_mb - cold_from_mb)


@dataclass(frozen=True)
class _Nets:
    """The calibration networks as columns, one row per network."""

    warm: "np.ndarray"  # sum of the warm entries (ms, at the table's reference speed)
    cold: "np.ndarray"  # sum of the cold-weights entries (ms)
    weight_mb: "np.ndarray"  # float32 weights of the network (MB)
    calls: "np.ndarray"  # blocks - 1: the calls the block sum has more than the network
    measured: "np.ndarray"  # end-to-end time (ms, rescaled like the entries)


def _net_sum(table: "LatencyTable", config: ArchConfig) -> tuple[float, float, float, int]:
    """(sum of warm entries, sum of cold-weights entries, weight MB, blocks) of ``config``."""
    blocks = config.blocks()
    missing = table.missing(blocks)
    if missing:
        raise MissingEntriesError(f"{table.path or 'table'}: {len(missing)} entries missing for "
                                  f"{config.to_string()} (e.g. {missing[0]})", missing)
    ids = [b.id for b in blocks]
    return (sum(table._ms[i] for i in ids), sum(table._cold[i] for i in ids),
            sum(table._wbytes[i] for i in ids) / 1e6, len(blocks))


def _columns(nets: list[dict[str, Any]], table: "LatencyTable") -> _Nets:
    import numpy as np

    f = table.rescaler()
    rows = []
    for net in nets:
        warm, cold, mb, n = _net_sum(table, ArchConfig.from_string(net["config"]))
        rows.append((warm, cold, mb, n - 1, f(net["raw_ms"], net.get("ratio"), net["t"])))
    r = np.array(rows, dtype=float)
    return _Nets(warm=r[:, 0], cold=r[:, 1], weight_mb=r[:, 2], calls=r[:, 3], measured=r[:, 4])


def _outliers(total: "np.ndarray", calls: "np.ndarray", measured: "np.ndarray") -> list[int]:
    """Networks timed during a burst of load that their paired probe did not see: found with a one-parameter
    robust fit (median per-call offset) and a MAD threshold, so they steer neither the fit nor the choice."""
    import numpy as np

    count = len(measured)
    resid = (total + np.median((measured - total) / np.maximum(calls, 1)) * calls) / measured - 1
    dev = np.abs(resid - np.median(resid))
    limit = max(OUTLIER_Z * MAD_TO_SIGMA * float(np.median(dev)), OUTLIER_MIN_RESIDUAL)
    order = np.argsort(-dev)
    if count < OUTLIER_MIN_NETS:
        return []
    return sorted(int(i) for i in order[: count // OUTLIER_MAX_SHARE] if dev[i] > limit)


def _fit(names: tuple[str, ...], fixed_s: bool, feats: dict[str, "np.ndarray"], measured: "np.ndarray",
         idx: "np.ndarray") -> dict[str, float]:
    """Least squares on relative errors over networks ``idx``: coefficients of S (block sum) and N (calls)."""
    import numpy as np

    coef = {"S": 1.0, "N": 0.0}
    if names:
        y = (measured[idx] - (feats["S"][idx] if fixed_s else 0.0)) / measured[idx]
        x = np.stack([feats[c][idx] / measured[idx] for c in names], 1)
        sol, *_ = np.linalg.lstsq(x, y, rcond=None)
        coef.update({c: float(v) for c, v in zip(names, sol)})
    return coef


def _score(names: tuple[str, ...], fixed_s: bool, total: "np.ndarray", nets: _Nets,
           outliers: list[int]) -> dict[str, Any] | None:
    """One model's fit and leave-one-out figures (None: too few networks to leave one out)."""
    import numpy as np

    keep = np.array([i for i in range(len(total)) if i not in outliers], dtype=int)
    feats = {"S": total[keep], "N": nets.calls[keep]}
    measured = nets.measured[keep]
    kept = len(measured)
    if names and kept < len(names) + 2:  # two networks more than free parameters, for leave-one-out
        return None  # ("none" fits nothing, so it is always there: its leave-one-out error is its error)
    loo = []
    for i in range(kept):
        c = _fit(names, fixed_s, feats, measured, np.array([j for j in range(kept) if j != i]))
        loo.append(abs((c["S"] * feats["S"][i] + c["N"] * feats["N"][i]) / measured[i] - 1) * 100)
    coef = _fit(names, fixed_s, feats, measured, np.arange(kept))
    full = (coef["S"] * total + coef["N"] * nets.calls) / nets.measured - 1
    out_err = [min(abs(full[i]) * 100, LOO_CAP_PCT) for i in outliers]
    score = float(np.mean([min(x, LOO_CAP_PCT) for x in loo] + out_err))
    resid_k = (coef["S"] * feats["S"] + coef["N"] * feats["N"]) / measured - 1
    return {"scale": round(coef["S"], 6), "per_block_ms": round(coef["N"], 6), "free": len(names),
            "score_pct": round(score, 3), "loo_mape_pct": round(float(np.mean(loo)), 3),
            "loo_rms_pct": round(float(np.sqrt(np.mean(np.square(loo)))), 3),
            "fit_mape_pct": round(float(np.mean(np.abs(resid_k)) * 100), 3)}


def fit_calibration(nets: list[dict[str, Any]], table: "LatencyTable") -> dict[str, Any]:
    """Fit each model of :data:`CALIBRATION_MODELS` for each cold blend of :data:`COLD_GRID_MB`; keep the one
    with the lowest leave-one-out error.

    Errors are relative (a 5 ms and a 100 ms network weigh the same), as the acceptance figures are. A model
    with more free parameters must beat a simpler one by :data:`FREE_PARAMETER_PENALTY_PCT` of leave-one-out
    error per parameter to be chosen. Outlying networks are listed in ``outliers`` and left out of the fit;
    every network counts in the score (capped at ``LOO_CAP_PCT``), so that a blend which explains a network is
    preferred to one that sets it aside.

    Args:
        nets: the timed networks (rows of :func:`nas.latency.measure.measure_network`).
        table: the table whose entries are summed.

    Returns:
        The table's ``calibration`` document: the chosen ``model``, ``scale``, ``per_block_ms``,
        ``cold_from_mb``/``cold_full_mb``, ``rel_error``, every model's figures and the ``nets``.

    Raises:
        MissingEntriesError: a network needs entries the table lacks.
    """
    import numpy as np

    cols = _columns(nets, table)
    options = []
    for lo, hi in COLD_GRID_MB:
        total = cols.warm + np.array([cold_share(mb, lo, hi) for mb in cols.weight_mb]) * (cols.cold - cols.warm)
        outliers = _outliers(total, cols.calls, cols.measured)
        models = {name: m for name, (names, fixed_s) in CALIBRATION_MODELS.items()
                  if (m := _score(names, fixed_s, total, cols, outliers)) is not None}
        for name, m in models.items():
            free = m["free"] + (0 if lo is None else 1)
            options.append((m["score_pct"] + FREE_PARAMETER_PENALTY_PCT * free, free, name, lo, hi, m,
                            {"models": models, "outliers": outliers}))
    options.sort(key=lambda o: (o[0], o[1]))
    _, _, best, lo, hi, chosen, ev = options[0]
    warm_only = next(o for o in options if o[3] is None and o[2] == best)
    return {"models": ev["models"], "model": best, "scale": chosen["scale"], "per_block_ms": chosen["per_block_ms"],
            "cold_from_mb": lo, "cold_full_mb": hi, "rel_error": chosen["loo_rms_pct"] / 100.0,
            "loo_mape_pct": chosen["loo_mape_pct"], "warm_only_loo_mape_pct": warm_only[5]["loo_mape_pct"],
            "outliers": [nets[i]["config"] for i in ev["outliers"]], "nets": nets, "note": CALIBRATION_NOTE}


def calibration_configs(space: "SearchSpace", resolution: int, count: int, seed: int) -> list[ArchConfig]:
    """The paper presets that lie in the space, then seeded random draws, ``count`` distinct configs."""

    out: dict[str, ArchConfig] = {}
    for cfg in PRESETS.values():
        c = cfg.with_resolution(resolution)
        if len(out) < count and space.contains(c):
            out.setdefault(c.hash(), c)
    rng = random.Random(seed)
    for _ in range(50 * count):  # bounded: a tiny space may have fewer distinct configs than `count`
        if len(out) >= count:
            break
        c = space.sample(rng, fixed={"resolution": resolution})
        out.setdefault(c.hash(), c)
    return list(out.values())

