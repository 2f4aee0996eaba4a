"""Predicting a network's latency from a table, and filling a lazy table's missing entries on demand."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nas.arch import ArchConfig, BlockKey
from nas.backends.identity import identity_diff
from nas.errors import MissingEntriesError, TableMismatchError
from nas.latency.calibrate import cold_share
from nas.latency.measure import measure_entry
from nas.latency.probe import portable_probe
from nas.latency.probe_spec import ProbeSpec, spec_of
from nas.latency.rounding import sig
from nas.latency.table import LatencyTable

if TYPE_CHECKING:  # pragma: no cover
    from nas.backends.base import Backend

__all__ = ["Prediction", "predict", "check_probe", "UNCALIBRATED_REL_ERROR"]


@dataclass(frozen=True)
class Prediction:
    """A predicted whole-network latency.

    Attributes:
        latency_ms: the prediction at the table's reference speed: the network's own end-to-end timing where
            the table timed it whole (``timed``), else the calibrated sum of its blocks (``model_ms``).
        uncertainty_ms: one standard deviation: calibration error (leave-one-out RMS) and entry noise.
        sum_ms: the plain sum of the block entries.
        blocks: number of blocks summed.
        flagged_blocks: how many of them kept a noisy measurement.
        model_ms: the calibrated block sum (equal to ``latency_ms`` unless ``timed``).
        timed: the table timed this exact network whole (:meth:`LatencyTable.timed_ms`).
    """

    latency_ms: float
    uncertainty_ms: float
    sum_ms: float
    blocks: int
    flagged_blocks: int = 0
    model_ms: float = 0.0
    timed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"latency_ms": self.latency_ms, "uncertainty_ms": self.uncertainty_ms, "sum_ms": self.sum_ms,
                "blocks": self.blocks, "flagged_blocks": self.flagged_blocks, "model_ms": self.model_ms,
                "timed": self.timed}


UNCALIBRATED_REL_ERROR = 0.05  # assumed 1-sigma error of an uncalibrated sum (issue: whole units within ~5 %)


def predict(config: ArchConfig, table: LatencyTable, *, backend: "Backend | None" = None,
            timed: bool = True) -> Prediction:
    """Predict ``config``'s latency from ``table`` (a few dict lookups; no torch, no measuring).

    A network the table timed whole (a paper preset, any calibration or transfer network) is predicted by that
    timing: timed in the same rounds as its blocks, 0.5x ran 4-7 points below the bigger presets relative to
    their blocks' sums (benchmarks/bench_block_sum.py), so with the calibration's one scale the block model was
    5-6 % high for 0.5x in both the shipped table and a build on a quiet EPYC (Session 11), an error no
    calibration model with one or two terms removed; the timing of the network itself has no such error.

    Args:
        config: the network; its resolution must be the table's.
        table: a loaded table.
        backend: if given, missing entries are measured on it (a *lazy* table; the backend must match the
            table's identity) and the table is saved; otherwise missing entries are an error.
        timed: use the table's own timing of this exact network where it has one (False: the block model
            always, e.g. to fit a model of the entries).

    Returns:
        The :class:`Prediction`.

    Raises:
        TableMismatchError: the config's resolution is not the table's (``field="config"``).
        MissingEntriesError: entries are missing (the error lists them in ``.missing``).
    """
    if config.resolution != table.resolution:
        raise TableMismatchError(f"{table.path or 'table'}: measured at {table.resolution}px, config is at "
                                 f"{config.resolution}px; build a table at resolution {config.resolution}",
                                 field="config")
    blocks = config.blocks()
    ids = [b.id for b in blocks]  # BlockKey.id formats a string: once per block
    ms, var = table._ms, table._var
    try:
        total = sum([ms[i] for i in ids])
    except KeyError:
        missing = list(dict.fromkeys(table.missing(blocks)))
        if backend is None:
            raise MissingEntriesError(
                f"{table.path or 'table'}: {len(missing)} block(s) of this config are not in the table "
                f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); finish it "
                "(build_table with resume=True), pass a backend to measure them, or use a table built for this space",
                missing) from None
        _fill(table, [b for b in blocks if b.id in set(missing)], backend)
        return predict(config, table)
    n = len(blocks)
    cal = table.calibration or {}
    scale, per_block = float(cal.get("scale", 1.0)), float(cal.get("per_block_ms", 0.0))
    blended = total
    if cal.get("cold_from_mb") is not None:
        share = cold_share(sum([table._wbytes[i] for i in ids]) / 1e6, cal["cold_from_mb"], cal.get("cold_full_mb"))
        if share > 0.0:
            cold = table._cold
            blended = total + share * (sum([cold[i] for i in ids]) - total)
    model = scale * blended + per_block * (n - 1)
    rel = float(cal.get("rel_error", UNCALIBRATED_REL_ERROR))
    flagged = sum(1 for i in ids if i in table._flagged) if table._flagged else 0
    whole = table.timed_ms(config.to_string()) if timed and cal.get("nets") else None
    if whole is not None:  # one timing's error is at most what the leave-one-out error of the model holds
        return Prediction(latency_ms=whole, uncertainty_ms=rel * whole, sum_ms=total, blocks=n,
                          flagged_blocks=flagged, model_ms=model, timed=True)
    noise = scale * scale * sum([var[i] for i in ids])
    return Prediction(latency_ms=model, uncertainty_ms=math.sqrt((rel * model) ** 2 + noise), sum_ms=total,
                      blocks=n, flagged_blocks=flagged, model_ms=model)


def check_probe(table: LatencyTable) -> ProbeSpec:
    """The reference probe ``table`` was measured with (probe/2 or probe/3, rebuilt from its record): new
    measurements are only comparable with a table's entries if both used the same one.

    Raises:
        TableMismatchError: an older probe, or a record this version cannot rebuild (``field="table"``).
    """
    spec = spec_of(table.probe)
    if spec is None:
        raise TableMismatchError(f"{table.path or 'table'}: measured with an older reference probe "
                                 f"({str(table.probe.get('id'))[:8]}); rebuild it from scratch to validate or extend "
                                 "it", field="table")
    return spec


def _fill(table: LatencyTable, keys: list[BlockKey], backend: "Backend") -> None:
    """Measure ``keys`` into ``table`` now (lazy table), paired with the probe like a build."""

    diff = identity_diff(table.identity, backend.identity())
    if diff:
        raise TableMismatchError(f"{table.path or 'table'}: cannot fill missing entries on this backend "
                                 f"({'; '.join(diff)})", field="backend")
    probe = portable_probe(backend, check_probe(table))
    for key in dict((k.id, k) for k in keys).values():
        e = measure_entry(key, backend, probe, num_classes=table.num_classes, settings=table.settings)
        table.entries[key.id] = e
        table.probe.setdefault("samples", []).append([round(e.t, 3), sig(e.probe_ms)])
    table.refresh()  # the new entries' ms; the calibration stays as stored (refit: table.recalibrate())
    if table.path is not None:
        table.save()

