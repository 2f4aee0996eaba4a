"""The correction a transfer fits: from a source table's predictions to whole networks timed on this machine.

Each network's source prediction is split into parts (:func:`net_parts`): the blended block sums per block
family, per stage and per weight size, the source's per-call term, and the network's weight megabytes. Each
model of :data:`TRANSFER_MODELS` is a linear combination of some parts; it is fitted by least squares on
relative errors and scored by leave-one-out over the timed networks (:func:`fit_transfer`). A model with more
free parameters must beat a simpler one by :data:`~nas.latency.calibrate.FREE_PARAMETER_PENALTY_PCT` of
leave-one-out error per extra parameter; ``scale`` (one global scale of the source predictions) is always
there and is the fallback.

Every model is linear in per-entry terms, so a fit turns into rescaled entries (:func:`entry_coefficients`):
``new_ms = k(entry) * source_ms + d(entry)``, and a per-call term; the transferred table predicts with the
ordinary :func:`nas.latency.predict`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from nas.arch import ArchConfig, BlockKey
from nas.latency.calibrate import FREE_PARAMETER_PENALTY_PCT, LOO_CAP_PCT, cold_share
from nas.latency.cold import COLD_MIN_BYTES

if TYPE_CHECKING:  # pragma: no cover
    from nas.latency.table import LatencyTable

__all__ = ["TRANSFER_MODELS", "TransferFit", "net_parts", "fit_transfer", "entry_coefficients", "block_group"]

# Model name -> (grouping of the block sums, extra terms). Groupings: "all" (one sum: the source's calibrated
# prediction, per-call term included), "family" (stem, down, basic, head), "stage" (stem with the first stage,
# the last stage with the head), "weights" (blocks below / above COLD_MIN_BYTES of weights: the cache effect).
# Extra terms: "calls" (blocks - 1, a per-call offset), "mb" (the network's weight MB: memory streaming).
TRANSFER_MODELS: dict[str, tuple[str, tuple[str, ...]]] = {
    "scale": ("all", ()),
    "scale+mb": ("all", ("mb",)),
    "affine": ("sum", ("calls",)),
    "weights": ("weights", ("calls",)),
    "stage": ("stage", ("calls",)),
    "family": ("family", ("calls",)),
    "family+mb": ("family", ("calls", "mb")),
}
FALLBACK = "scale"


@dataclass(frozen=True)
class TransferFit:
    """The chosen correction and every model's figures.

    Attributes:
        model: the chosen model's name (a key of :data:`TRANSFER_MODELS`).
        coef: its coefficients by part name (``g:<group>`` per block group, ``calls``, ``mb``).
        models: every model's ``{"free", "loo_mape_pct", "loo_rms_pct", "loo_within_5_pct", "fit_mape_pct",
            "coef"}`` (models with too few networks or a non-positive group scale are absent).
        loo_errors_pct: the chosen model's signed leave-one-out errors, one per timed network.
    """

    model: str
    coef: dict[str, float]
    models: dict[str, dict[str, Any]]
    loo_errors_pct: list[float]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "coef": self.coef, "models": self.models,
                "loo_errors_pct": [round(e, 3) for e in self.loo_errors_pct]}


def _stage_of(key: BlockKey, stage_res: list[int]) -> str:
    """``s<i>``: the stage whose output resolution the block has; the stem joins the first, the head the last."""
    if key.kind == "stem":
        return "s0"
    if key.kind == "head":
        return f"s{len(stage_res) - 1}"
    return f"s{stage_res.index(key.out_resolution)}" if key.out_resolution in stage_res else "s0"


def block_group(grouping: str, key: BlockKey, stage_res: list[int], wbytes: int) -> str:
    """The group of ``key`` under ``grouping`` (see :data:`TRANSFER_MODELS`)."""
    if grouping == "family":
        return key.kind
    if grouping == "stage":
        return _stage_of(key, stage_res)
    if grouping == "weights":
        return "big" if wbytes >= COLD_MIN_BYTES else "small"
    return grouping  # "all" / "sum": one group


def stage_resolutions(source: "LatencyTable") -> list[int]:
    """Output resolutions of the source's stages (down and basic units), largest first."""
    return sorted({e.key.out_resolution for e in source.entries.values() if e.key.kind in ("down", "basic")},
                  reverse=True)


def net_parts(config: ArchConfig, source: "LatencyTable", stage_res: list[int]) -> dict[str, float]:
    """The parts of ``config``'s source prediction that the models combine.

    Returns:
        ``all`` (the source's calibrated prediction), ``sum`` (blended block sum), ``<grouping>:<group>`` sums
        for every grouping, ``calls`` (blocks - 1) and ``mb`` (float32 weight MB).
    """
    from nas.latency.prediction import predict

    cal = source.calibration or {}
    ids = [b.id for b in config.blocks()]
    mb = sum(source._wbytes[i] for i in ids) / 1e6
    share = cold_share(mb, cal.get("cold_from_mb"), cal.get("cold_full_mb"))
    parts: dict[str, float] = {"all": predict(config, source, timed=False).latency_ms, "calls": float(len(ids) - 1),
                               "mb": mb, "sum": 0.0}
    for b, i in zip(config.blocks(), ids):
        blended = source._ms[i] + share * (source._cold[i] - source._ms[i])
        parts["sum"] += blended
        for grouping in ("family", "stage", "weights"):
            name = f"{grouping}:{block_group(grouping, b, stage_res, source._wbytes[i])}"
            parts[name] = parts.get(name, 0.0) + blended
    return parts


def _columns(model: str, parts: list[dict[str, float]]) -> list[str]:
    grouping, extra = TRANSFER_MODELS[model]
    if grouping in ("all", "sum"):
        groups = [grouping]
    else:
        groups = sorted({k for p in parts for k in p if k.startswith(f"{grouping}:") and p[k] > 0})
    return groups + list(extra)


def _lstsq(cols: list[str], parts: list[dict[str, float]], y: list[float], idx: list[int]) -> dict[str, float]:
    """Least squares on relative errors over networks ``idx``."""
    import numpy as np

    x = np.array([[parts[i].get(c, 0.0) / y[i] for c in cols] for i in idx])
    sol, *_ = np.linalg.lstsq(x, np.ones(len(idx)), rcond=None)
    return {c: float(v) for c, v in zip(cols, sol)}


def _predict(coef: dict[str, float], p: dict[str, float]) -> float:
    return sum(v * p.get(c, 0.0) for c, v in coef.items())


def _score(model: str, parts: list[dict[str, float]], y: list[float]) -> dict[str, Any] | None:
    """One model's fit and leave-one-out figures (None: too few networks, or a group scale <= 0)."""
    import numpy as np

    cols = _columns(model, parts)
    n = len(y)
    if n < len(cols) + 2:  # two networks more than free parameters, for leave-one-out
        return None
    coef = _lstsq(cols, parts, y, list(range(n)))
    if any(v <= 0 for c, v in coef.items() if c not in ("calls", "mb")):
        return None  # a group slower here by a negative factor: the data do not support this split
    loo = []
    for i in range(n):
        c = _lstsq(cols, parts, y, [j for j in range(n) if j != i])
        loo.append(100.0 * (_predict(c, parts[i]) / y[i] - 1.0))
    a = np.abs(loo)
    fit = [abs(_predict(coef, p) / t - 1.0) * 100.0 for p, t in zip(parts, y)]
    return {"free": len(cols), "coef": {k: round(v, 6) for k, v in coef.items()},
            "score_pct": round(float(np.mean(np.minimum(a, LOO_CAP_PCT))), 3),
            "loo_mape_pct": round(float(np.mean(a)), 3), "loo_rms_pct": round(float(np.sqrt(np.mean(a * a))), 3),
            "loo_within_5_pct": round(100.0 * float(np.mean(a <= 5.0)), 1),
            "fit_mape_pct": round(float(np.mean(fit)), 3), "_loo": loo}


def fit_transfer(parts: list[dict[str, float]], measured_ms: list[float]) -> TransferFit:
    """Fit every model of :data:`TRANSFER_MODELS`; keep the lowest leave-one-out error (with the penalty).

    Args:
        parts: :func:`net_parts` of each timed network.
        measured_ms: their end-to-end times here (ms at the new table's reference speed).

    Returns:
        The :class:`TransferFit` (``scale`` when no richer model is supported or better).
    """
    scored = {m: s for m in TRANSFER_MODELS if (s := _score(m, parts, measured_ms)) is not None}
    if FALLBACK not in scored:  # fewer than 3 networks: one scale fitted on all, no leave-one-out
        coef = _lstsq(["all"], parts, measured_ms, list(range(len(measured_ms))))
        return TransferFit(model=FALLBACK, coef=coef, models={}, loo_errors_pct=[])
    best = min(scored, key=lambda m: (scored[m]["score_pct"] + FREE_PARAMETER_PENALTY_PCT * (scored[m]["free"] - 1),
                                      scored[m]["free"]))
    loo = scored[best]["_loo"]
    models = {m: {k: v for k, v in s.items() if k != "_loo"} for m, s in scored.items()}
    return TransferFit(model=best, coef=dict(scored[best]["coef"]), models=models, loo_errors_pct=list(loo))


def entry_coefficients(fit: TransferFit, source: "LatencyTable",
                       stage_res: list[int]) -> tuple[Callable[[BlockKey, int], tuple[float, float]], float]:
    """The fit as per-entry terms: ``f(key, weight_bytes) -> (k, d)`` with ``new_ms = k * source_ms + d``, and
    the per-call term (ms per block - 1) of the new calibration (whose scale is 1)."""
    grouping, _ = TRANSFER_MODELS[fit.model]
    cal = source.calibration or {}
    c = fit.coef
    mb_per_byte = c.get("mb", 0.0) / 1e6
    if grouping == "all":  # a * (scale * blended + per_block * calls): the source's calibration, scaled
        a = c["all"]
        per_call = a * float(cal.get("per_block_ms", 0.0))
        return (lambda key, wb: (a * float(cal.get("scale", 1.0)), mb_per_byte * wb)), per_call
    per_call = c.get("calls", 0.0)
    if grouping == "sum":
        return (lambda key, wb: (c["sum"], mb_per_byte * wb)), per_call

    def terms(key: BlockKey, wb: int) -> tuple[float, float]:
        return c.get(f"{grouping}:{block_group(grouping, key, stage_res, wb)}", 1.0), mb_per_byte * wb

    return terms, per_call
