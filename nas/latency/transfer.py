"""Transferring a table to another machine in minutes: a few whole networks timed here correct every entry.

A full build times every block of the space (11-14 minutes for the default space on a 2-core VM). A transfer
keeps the source table's block entries and times only the reference probe and a few whole networks here
(:func:`transfer_configs`: the paper presets, then draws stratified by MACs and spread over weight size and
depth), as many as fit in a time budget. A correction of the source's predictions is fitted and chosen by
leave-one-out (:mod:`nas.latency.transfer_fit`) and written into a new table with this machine's identity,
its own reference probe samples, the timed networks as its calibration, the source's provenance (identity,
file name and SHA-256) and the transfer's own validation figures (leave-one-out error) in ``transfer``.
:func:`nas.latency.validate_table` works on it like on a built table.
"""

from __future__ import annotations

import hashlib
import math
import random
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from nas.arch import PRESETS, ArchConfig
from nas.backends.identity import identity_diff
from nas.errors import MissingEntriesError, TableError, TableMismatchError, UsageError
from nas.latency.build import Progress
from nas.latency.cold import ColdRun
from nas.latency.entry import Entry
from nas.latency.measure import measure_network
from nas.latency.prediction import check_probe
from nas.latency.probe import portable_probe
from nas.latency.rounding import sig
from nas.latency.table import LatencyTable
from nas.latency.transfer_fit import (TransferFit, entry_coefficients, fit_transfer, net_parts,
                                      stage_resolutions)

if TYPE_CHECKING:  # pragma: no cover
    from nas.backends.base import Backend
    from nas.space import SearchSpace

__all__ = ["TRANSFER_SEED", "TRANSFER_NETS", "TRANSFER_BUDGET_S", "MIN_TRANSFER_NETS", "transfer_configs",
           "time_transfer_networks", "transferred_table", "transfer_table"]

TRANSFER_SEED = 4243  # the transfer's draws differ from validate_table's default seed 0 and the calibration's
TRANSFER_NETS = 40  # at most this many networks (the trade-off curve flattens by then: bench_transfer.py)
# Seconds of the whole transfer (loading, probe export, timing, fit, writing) before no further network is
# started: the 3-minute goal minus room for the last network and the fit.
TRANSFER_BUDGET_S = 160.0
MIN_TRANSFER_NETS = 5  # timed even past the budget: fewer leave no room for leave-one-out of a 2-term model
POOL_PER_NET = 40  # random draws per wanted network from which the stratified ones are picked


def _van_der_corput(n: int) -> list[int]:
    """0..n-1 in base-2 radical-inverse order: every prefix is spread over the range (for time-cut prefixes)."""
    def radical(i: int) -> float:
        r, f = 0.0, 0.5
        while i:
            r, i, f = r + f * (i & 1), i >> 1, f / 2
        return r

    return sorted(range(n), key=radical)


def _features(config: ArchConfig, num_classes: int) -> tuple[float, float, float]:
    """(log MACs, log weight MB, depth): what the selection spreads the networks over."""
    from nas.macs import count_macs

    mc = count_macs(config, num_classes=num_classes)
    return math.log(max(mc.macs, 1)), math.log(max(4 * mc.params / 1e6, 1e-3)), float(config.depth)


def transfer_configs(space: "SearchSpace", *, resolution: int, count: int, seed: int = TRANSFER_SEED,
                     num_classes: int = 1000) -> list[ArchConfig]:
    """The networks a transfer times, in the order it times them (any prefix is a good smaller choice).

    The paper presets in the space first, then one network per MAC stratum (``count`` - presets quantile bins
    of a seeded random pool, visited in radical-inverse order): in each stratum the draw farthest, in weight
    size and depth, from the networks already chosen.

    Args:
        space: the table's space.
        resolution: the table's resolution.
        count: how many networks.
        seed: seed of the random pool.
        num_classes: classifier width (weights of the head).

    Returns:
        ``count`` distinct configs (fewer where the space has fewer).
    """
    chosen: dict[str, ArchConfig] = {}
    for cfg in PRESETS.values():
        c = cfg.with_resolution(resolution)
        if len(chosen) < count and space.contains(c):
            chosen.setdefault(c.hash(), c)
    rng = random.Random(seed)
    pool = {}
    for _ in range(POOL_PER_NET * max(count, 1)):
        c = space.sample(rng, fixed={"resolution": resolution})
        if c.hash() not in chosen:
            pool.setdefault(c.hash(), c)
    cands = sorted(pool.values(), key=lambda c: _features(c, num_classes)[0])
    strata = max(count - len(chosen), 0)
    if not cands or strata == 0:
        return list(chosen.values())
    feats = {c.hash(): _features(c, num_classes) for c in cands}
    spans = [max(f[k] for f in feats.values()) - min(f[k] for f in feats.values()) or 1.0 for k in (1, 2)]
    picked = [_features(c, num_classes) for c in chosen.values()]
    for s in _van_der_corput(strata):
        lo, hi = s * len(cands) // strata, max((s + 1) * len(cands) // strata, s * len(cands) // strata + 1)
        stratum = [c for c in cands[lo:hi] if c.hash() not in chosen]
        if not stratum:
            continue

        def distance(c: ArchConfig) -> float:
            f = feats[c.hash()]
            return min((((f[1] - p[1]) / spans[0]) ** 2 + ((f[2] - p[2]) / spans[1]) ** 2 for p in picked),
                       default=0.0)

        best = max(stratum, key=distance)
        chosen[best.hash()] = best
        picked.append(feats[best.hash()])
    return list(chosen.values())


def time_transfer_networks(source: LatencyTable, backend: "Backend", configs: Sequence[ArchConfig], *,
                           budget_s: float | None = None, start: float | None = None,
                           progress: Progress | None = None) -> list[dict[str, Any]]:
    """Time ``configs`` in order here, each end to end with the reference probe, until the budget is spent.

    Args:
        source: the source table (its classifier width and network protocol are used).
        backend: this machine's backend.
        configs: the networks, in :func:`transfer_configs` order.
        budget_s: stop starting networks once the elapsed time plus one network's mean time would pass this
            (None: time them all); at least :data:`MIN_TRANSFER_NETS` are timed.
        start: ``time.time()`` the budget counts from (default: now).
        progress: ``progress("transfer", done, total, label)``.

    Returns:
        Rows of :func:`nas.latency.measure.measure_network`, in timing order.

    Raises:
        MeasurementError: the backend failed.
    """
    start = time.time() if start is None else start
    probe = portable_probe(backend, check_probe(source))  # the source's probe: its entries are ratios to it
    rows: list[dict[str, Any]] = []
    spent: list[float] = []
    for i, cfg in enumerate(configs):
        elapsed = time.time() - start
        if budget_s is not None and i >= MIN_TRANSFER_NETS and elapsed + statistics.fmean(spent) > budget_s:
            break
        if progress:
            progress("transfer", i, len(configs), cfg.to_string())
        t = time.time()
        rows.append(measure_network(cfg, backend, num_classes=source.num_classes,
                                    settings=source.network_settings, probe=probe))
        spent.append(time.time() - t)
    if progress:
        progress("transfer", len(rows), len(rows), "")
    return rows


def _file_sha256(path: Path | None) -> str | None:
    if path is None or not Path(path).is_file():
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _new_entries(source: LatencyTable, fit: TransferFit, ref_ms: float, t: float) -> tuple[dict[str, Entry], float]:
    """The source's entries corrected by ``fit``, as single runs at this machine's reference speed ``ref_ms``."""
    terms, per_call = entry_coefficients(fit, source, stage_resolutions(source))
    out = {}
    for eid, e in source.entries.items():
        k, d = terms(e.key, source._wbytes[eid])
        ms = sig(k * source._ms[eid] + d)
        cold = None
        if e.cold is not None:
            cms = sig(k * source._cold[eid] + d)
            cold = ColdRun(t=round(t, 3), raw_ms=cms, probe_ms=sig(ref_ms), ratio=sig(cms / ref_ms),
                           spread_pct=e.cold.spread_pct, n=e.cold.n, copies=e.cold.copies)
        out[eid] = Entry(key=e.key, raw_ms=ms, spread_pct=e.spread_pct, n=e.n, t=round(t, 3), probe_ms=sig(ref_ms),
                         ratio=sig(ms / ref_ms), flagged=e.flagged, attempts=1, ms=ms, cold=cold)
    return out, per_call


def transferred_table(source: LatencyTable, identity: dict[str, Any], rows: list[dict[str, Any]], *,
                      seconds: float = 0.0, seed: int = TRANSFER_SEED) -> LatencyTable:
    """The new table: ``source``'s entries corrected by the fit on ``rows`` (networks timed here).

    Args:
        source: a complete source table.
        identity: this machine's backend identity.
        rows: the timed networks (:func:`time_transfer_networks`), at least 2.
        seconds: how long the transfer took (recorded as the table's ``build_seconds``).
        seed: the seed the networks were drawn with (recorded).

    Returns:
        The table (not saved), its ``transfer`` field holding the provenance and the leave-one-out figures.

    Raises:
        UsageError: fewer than 2 rows (``field="rows"``).
    """
    if len(rows) < 2:
        raise UsageError(f"rows: {len(rows)} timed network(s); a transfer needs at least 2", field="rows")
    ref_ms = statistics.median(r["probe_ms"] for r in rows)
    stage_res = stage_resolutions(source)
    parts = [net_parts(ArchConfig.from_string(r["config"]), source, stage_res) for r in rows]
    fit = fit_transfer(parts, [r["ratio"] * ref_ms for r in rows])
    entries, per_call = _new_entries(source, fit, ref_ms, statistics.median(r["t"] for r in rows))
    chosen = fit.models.get(fit.model, {})
    cal = source.calibration or {}
    calibration = {"model": f"transfer:{fit.model}", "scale": 1.0, "per_block_ms": round(per_call, 6),
                   "cold_from_mb": cal.get("cold_from_mb"), "cold_full_mb": cal.get("cold_full_mb"),
                   "rel_error": float(chosen.get("loo_rms_pct", 5.0)) / 100.0,
                   "loo_mape_pct": chosen.get("loo_mape_pct"), "models": {}, "outliers": [], "nets": rows,
                   "note": "transferred: entries = k * source entry + d per block group (see transfer)"}
    transfer = {"source": {"file": source.path.name if source.path else None, "sha256": _file_sha256(source.path),
                           "identity": source.identity, "created": source.created,
                           "calibration_model": cal.get("model"), "probe_ref_ms": source.probe.get("ref_ms")},
                "networks": len(rows), "seed": seed, "seconds": round(seconds, 1), **fit.to_dict(),
                "loo_mape_pct": chosen.get("loo_mape_pct"), "loo_within_5_pct": chosen.get("loo_within_5_pct"),
                "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    probe = {**{k: v for k, v in source.probe.items() if k not in ("samples", "ref_ms")}, "ref_ms": None,
             "samples": [[r["t"], r["probe_ms"]] for r in rows]}
    table = LatencyTable(identity=dict(identity), space=dict(source.space), resolution=source.resolution,
                         num_classes=source.num_classes, settings=source.settings,
                         network_settings=source.network_settings, probe=probe, calibration=calibration,
                         entries=entries, expected_entries=source.expected_entries,
                         created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), build_seconds=seconds, transfer=transfer)
    table.refresh()
    return table


def _check_source(source: LatencyTable, backend: "Backend") -> "SearchSpace":
    """The source's space, once the source is complete, of today's probe, and the backend's threads and batch."""
    check_probe(source)
    space = source.space_object()
    missing = source.missing(space.enumerate_blocks(resolution=source.resolution))
    if missing:
        raise MissingEntriesError(f"{source.path or 'table'}: {len(missing)} entries missing (e.g. {missing[0]}); "
                                  "finish it before transferring it", missing, field="source")
    diff = identity_diff(source.identity, backend.identity(), keys=("device", "threads", "batch"))
    if diff:
        raise TableMismatchError(f"{source.path or 'table'}: the backend differs in {'; '.join(diff)}; transfer to "
                                 "the same device kind, threads and batch", field="backend")
    return space


def transfer_table(source: LatencyTable, backend: "Backend", *, n_networks: int = TRANSFER_NETS,
                   seed: int = TRANSFER_SEED, budget_s: float | None = TRANSFER_BUDGET_S,
                   out: "str | Path | None" = None, overwrite: bool = False,
                   progress: Progress | None = None) -> LatencyTable:
    """Transfer ``source`` to the machine ``backend`` measures on (see the module docstring).

    Args:
        source: a complete table built on another machine (same device kind, threads and batch).
        backend: this machine's backend.
        n_networks: at most this many whole networks are timed (>= 2).
        seed: seed of the network draws.
        budget_s: time budget of the whole transfer in seconds (None: time all ``n_networks``).
        out: where to write the new table (None: not written).
        overwrite: replace an existing ``out``.
        progress: ``progress("transfer", done, total, label)``.

    Returns:
        The new table.

    Raises:
        UsageError: ``n_networks`` < 2 (``field="n_networks"``).
        TableError: ``out`` exists and not ``overwrite`` (``field="out"``).
        TableMismatchError: source measured with an older probe, or for another device/threads/batch.
        MissingEntriesError: the source is incomplete.
        MeasurementError: the backend failed.
    """
    start = time.time()
    if n_networks < 2:
        raise UsageError(f"n_networks {n_networks}: a transfer needs at least 2 networks", field="n_networks")
    out_path = Path(out) if out is not None else None
    if out_path is not None and out_path.exists() and not overwrite:
        raise TableError(f"{out_path}: exists; write the transferred table to another file or overwrite it",
                         field="out")
    space = _check_source(source, backend)
    configs = transfer_configs(space, resolution=source.resolution, count=n_networks, seed=seed,
                               num_classes=source.num_classes)
    rows = time_transfer_networks(source, backend, configs, budget_s=budget_s, start=start, progress=progress)
    table = transferred_table(source, backend.identity(), rows, seconds=time.time() - start, seed=seed)
    if out_path is not None:
        table.save(out_path)
    return table
