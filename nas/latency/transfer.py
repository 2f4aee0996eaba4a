"""Transferring a table to another machine in minutes: a few whole networks timed here correct every entry.

A full build times every block of the space (9-14 minutes for the default space on a 2-core VM). A transfer
keeps the source table's block entries and times only the reference probe, a few whole networks here
(:func:`transfer_configs`: the paper presets, then draws stratified by MACs and spread over weight size and
depth) and a few blocks (:func:`nas.latency.transfer_blocks.block_sample`), as many as fit in a time budget.
The blocks correct every entry by a regression on block shape (:mod:`nas.latency.transfer_blocks`); a
correction of the (corrected) source's predictions is fitted on the networks and chosen by leave-one-out
(:mod:`nas.latency.transfer_fit`), the block step kept only where it lowers that error, and all is written
into a new table with this machine's identity,
its own reference probe samples, the timed networks as its calibration, the source's provenance (identity,
file name and SHA-256) and the transfer's own validation figures (leave-one-out error) in ``transfer``.
:func:`nas.latency.validate_table` works on it like on a built table.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from nas._io import atomic_write_json
from nas.arch import PRESETS, ArchConfig, BlockKey
from nas.backends.identity import identity_diff
from nas.errors import MissingEntriesError, TableError, TableMismatchError, UsageError
from nas.latency.build import Progress
from nas.latency.cold import ColdRun
from nas.latency.defaults import BLOCKS_PER_REQUEST
from nas.latency.entry import Entry
from nas.latency.measure import measure_entries, measure_network
from nas.latency.prediction import check_probe
from nas.latency.probe import portable_probe
from nas.latency.rounding import sig
from nas.latency.table import LatencyTable
from nas.latency.transfer_blocks import (TRANSFER_BLOCKS, block_correction, block_entries, block_records,
                                        block_sample, block_times, corrected_source)
from nas.latency.transfer_fit import (TransferFit, entry_coefficients, fit_transfer, net_parts,
                                      stage_resolutions)

if TYPE_CHECKING:  # pragma: no cover
    from nas.backends.base import Backend
    from nas.space import SearchSpace

__all__ = ["TRANSFER_SEED", "TRANSFER_NETS", "TRANSFER_BUDGET_S", "MIN_TRANSFER_NETS", "NETWORK_SHARE",
           "transfer_configs", "time_transfer_networks", "time_transfer_blocks", "transferred_table", "transfer_table"]

TRANSFER_SEED = 4243  # the transfer's draws differ from validate_table's default seed 0 and the calibration's
TRANSFER_NETS = 40  # at most this many networks (the trade-off curve flattens by then: bench_transfer.py)
# Seconds of the whole transfer (loading, probe export, timing, fit, writing) before no further network is
# started: the 3-minute goal minus room for the last network and the fit.
TRANSFER_BUDGET_S = 160.0
MIN_TRANSFER_NETS = 5  # timed even past the budget: fewer leave no room for leave-one-out of a 2-term model
# The networks may take this share of the budget; the blocks (timed after them) the rest. Session 11 (quiet
# family-25 EPYC): 40 networks took 74 s, 96 blocks about 40 s.
NETWORK_SHARE = 0.6
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
                           progress: Progress | None = None, prior: Sequence[dict[str, Any]] = (),
                           on_done: Callable[[list[dict[str, Any]]], None] | None = None,
                           probe: Any = None) -> list[dict[str, Any]]:
    """Time ``configs`` in order here, each end to end with the reference probe, until the budget is spent.

    Args:
        source: the source table (its classifier width and network protocol are used).
        backend: this machine's backend.
        configs: the networks, in :func:`transfer_configs` order.
        budget_s: stop starting networks once the elapsed time plus one network's mean time would pass this
            (None: time them all); at least :data:`MIN_TRANSFER_NETS` are timed.
        start: ``time.time()`` the budget counts from (default: now).
        progress: ``progress("transfer", done, total, label)``.
        prior: rows timed before (a resumed transfer): kept, their networks not timed again.
        on_done: called with all rows so far after each network (to save them).
        probe: the source's probe in the backend's portable form (default: exported now).

    Returns:
        Rows of :func:`nas.latency.measure.measure_network`, in timing order (``prior`` first).

    Raises:
        MeasurementError: the backend failed.
    """
    start = time.time() if start is None else start
    if probe is None:  # the source's probe: its entries are ratios to it
        probe = portable_probe(backend, check_probe(source))
    rows: list[dict[str, Any]] = list(prior)
    done = {r["config"] for r in rows}
    units = [(cfg, cfg.to_string()) for cfg in configs if cfg.to_string() not in done]

    def one(cfg: ArchConfig) -> list[dict[str, Any]]:
        return [measure_network(cfg, backend, num_classes=source.num_classes, settings=source.network_settings,
                                probe=probe)]

    return _in_budget(units, one, rows, stage="transfer", total=len(configs), budget_s=budget_s, start=start,
                      progress=progress, on_done=on_done, at_least=MIN_TRANSFER_NETS)


def time_transfer_blocks(source: LatencyTable, backend: "Backend", keys: Sequence[BlockKey], *,
                         budget_s: float | None = None, start: float | None = None,
                         progress: Progress | None = None, prior: Sequence[Entry] = (),
                         on_done: Callable[[list[Entry]], None] | None = None, probe: Any = None) -> list[Entry]:
    """Time ``keys`` here in requests of :data:`~nas.latency.defaults.BLOCKS_PER_REQUEST` blocks, each with the
    source's reference probe in the same rounds (as a build times them), until the budget is spent.

    Args:
        source: the source table (its probe, classifier width and block protocol are used).
        backend: this machine's backend.
        keys: the blocks, in :func:`~nas.latency.transfer_blocks.block_sample` order.
        budget_s: no request is started once the elapsed time plus one request's mean time would pass this.
        start: ``time.time()`` the budget counts from (default: now).
        progress: ``progress("blocks", done, total, label)``.
        prior: blocks timed before (a resumed transfer): kept, not timed again.
        on_done: called with all entries so far after each request (to save them).
        probe: the source's probe in the backend's portable form (default: exported now).

    Returns:
        The measured entries (raw times and ratios to the probe), in timing order (``prior`` first).

    Raises:
        MeasurementError: the backend failed.
    """
    start = time.time() if start is None else start
    if probe is None:
        probe = portable_probe(backend, check_probe(source))
    done = {e.key.id for e in prior}
    todo = [k for k in keys if k.id not in done]
    units = [(todo[i:i + BLOCKS_PER_REQUEST], todo[i].id) for i in range(0, len(todo), BLOCKS_PER_REQUEST)]

    def one(group: Sequence[BlockKey]) -> list[Entry]:
        return measure_entries(list(group), backend, probe, num_classes=source.num_classes, settings=source.settings)

    return _in_budget(units, one, list(prior), stage="blocks", total=len(keys), budget_s=budget_s, start=start,
                      progress=progress, on_done=on_done)


def _in_budget(units: Sequence[tuple[Any, str]], measure: Callable[[Any], list[Any]], out: list[Any], *, stage: str,
               total: int, budget_s: float | None, start: float, progress: Progress | None,
               on_done: Callable[[list[Any]], None] | None, at_least: int = 0) -> list[Any]:
    """``out`` extended by ``measure(unit)`` for each ``(unit, label)`` in turn, until the elapsed time since
    ``start`` plus one unit's mean time would pass ``budget_s`` (once ``out`` holds ``at_least`` results);
    ``on_done(out)`` after each unit."""
    spent: list[float] = []
    for unit, label in units:
        if (budget_s is not None and len(out) >= at_least
                and time.time() - start + (statistics.fmean(spent) if spent else 0.0) > budget_s):
            break
        if progress:
            progress(stage, len(out), total, label)
        t = time.time()
        out += measure(unit)
        spent.append(time.time() - t)
        if on_done:
            on_done(out)
    if progress:
        progress(stage, len(out), len(out), "")
    return out


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
                      blocks: Sequence[Entry] = (), seconds: float = 0.0, seed: int = TRANSFER_SEED) -> LatencyTable:
    """The new table: ``source``'s entries corrected by the fit on ``rows`` (networks timed here) and, where it
    lowers the networks' leave-one-out error, by ``blocks`` (blocks timed here) first.

    Args:
        source: a complete source table.
        identity: this machine's backend identity.
        rows: the timed networks (:func:`time_transfer_networks`), at least 2.
        blocks: the timed blocks (:func:`time_transfer_blocks`); fewer than
            :data:`~nas.latency.transfer_blocks.MIN_REGRESSION_BLOCKS` are not used.
        seconds: how long the transfer took (recorded as the table's ``build_seconds``).
        seed: the seed the networks and blocks were drawn with (recorded).

    Returns:
        The table (not saved), its ``transfer`` field holding the provenance, the leave-one-out figures and
        the block step's (``blocks``).

    Raises:
        UsageError: fewer than 2 rows (``field="rows"``).
    """
    if len(rows) < 2:
        raise UsageError(f"rows: {len(rows)} timed network(s); a transfer needs at least 2", field="rows")
    ref_ms = statistics.median([r["probe_ms"] for r in rows] + [e.probe_ms for e in blocks])
    stage_res = stage_resolutions(source)
    measured_ms = [r["ratio"] * ref_ms for r in rows]
    bases = {"source": source}
    correction = block_correction(source, block_times(blocks, ref_ms))
    if correction is not None:
        bases["blocks"] = corrected_source(source, correction)
    fits = {name: fit_transfer([net_parts(ArchConfig.from_string(r["config"]), base, stage_res) for r in rows],
                               measured_ms) for name, base in bases.items()}
    loo = {name: f.models.get(f.model, {}).get("score_pct", math.inf) for name, f in fits.items()}
    used = min(fits, key=lambda n: (loo[n], n != "source"))  # a tie keeps the plain source
    base, fit = bases[used], fits[used]
    entries, per_call = _new_entries(base, fit, ref_ms, statistics.median(r["t"] for r in rows))
    chosen = fit.models.get(fit.model, {})
    cal = source.calibration or {}
    calibration = {"model": f"transfer:{fit.model}", "scale": 1.0, "per_block_ms": round(per_call, 6),
                   "cold_from_mb": cal.get("cold_from_mb"), "cold_full_mb": cal.get("cold_full_mb"),
                   "rel_error": float(chosen.get("loo_rms_pct", 5.0)) / 100.0,
                   "loo_mape_pct": chosen.get("loo_mape_pct"), "models": {}, "outliers": [], "nets": rows,
                   "note": "transferred: entries = k * source entry + d per block group (see transfer)"}
    # The block step's record: whether it was used, the networks' leave-one-out score with and without it,
    # the regression's own k-fold error, and the timed blocks ([id, t, raw_ms, probe_ms, ratio]).
    block_doc = {"timed": len(blocks), "used": used == "blocks",
                 "network_score_pct": {n: (round(v, 3) if math.isfinite(v) else None) for n, v in loo.items()},
                 **(correction.figures if correction is not None else {}),
                 "entries": block_records(blocks)}
    transfer = {"source": {"file": source.path.name if source.path else None, "sha256": _file_sha256(source.path),
                           "identity": source.identity, "created": source.created,
                           "calibration_model": cal.get("model"), "probe_ref_ms": source.probe.get("ref_ms")},
                "networks": len(rows), "seed": seed, "seconds": round(seconds, 1), **fit.to_dict(),
                "loo_mape_pct": chosen.get("loo_mape_pct"), "loo_within_5_pct": chosen.get("loo_within_5_pct"),
                "blocks": block_doc, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    probe = {**{k: v for k, v in source.probe.items() if k not in ("samples", "ref_ms")}, "ref_ms": None,
             "samples": sorted([[r["t"], r["probe_ms"]] for r in rows] + [[round(e.t, 3), sig(e.probe_ms)]
                                                                         for e in blocks])}
    table = LatencyTable(identity=dict(identity), space=dict(source.space), resolution=source.resolution,
                         num_classes=source.num_classes, settings=source.settings,
                         network_settings=source.network_settings, probe=probe, calibration=calibration,
                         entries=entries, expected_entries=source.expected_entries,
                         created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), build_seconds=seconds, transfer=transfer)
    table.refresh()
    return table


def _partial(path: Path | None, source: LatencyTable, identity: dict[str, Any], seed: int) -> dict[str, Any]:
    """What an interrupted transfer to ``path`` left in ``<path>.partial`` (nothing when there is no such file).

    Raises:
        UsageError: the file is of another source, seed or machine (``field="out"``).
    """
    if path is None or not path.exists():
        return {"rows": [], "blocks": [], "elapsed_s": 0.0}
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        doc = {}
    same = (doc.get("source_sha256") == _file_sha256(source.path) and doc.get("seed") == seed
            and not identity_diff(doc.get("identity") or {}, identity))
    if not same:
        raise UsageError(f"{path}: an interrupted transfer of another source table, seed or machine; delete it or "
                         "write this transfer to another file", field="out")
    return doc


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
                   n_blocks: int = TRANSFER_BLOCKS, seed: int = TRANSFER_SEED,
                   budget_s: float | None = TRANSFER_BUDGET_S,
                   out: "str | Path | None" = None, overwrite: bool = False,
                   progress: Progress | None = None) -> LatencyTable:
    """Transfer ``source`` to the machine ``backend`` measures on (see the module docstring).

    Args:
        source: a complete table built on another machine (same device kind, threads and batch).
        backend: this machine's backend.
        n_networks: at most this many whole networks are timed (>= 2), in :data:`NETWORK_SHARE` of the budget.
        n_blocks: at most this many blocks are timed after them, in the rest of the budget (0: none).
        seed: seed of the network draws.
        budget_s: time budget of the whole transfer in seconds (None: time all ``n_networks``).
        out: where to write the new table (None: not written). The networks and blocks timed so far are kept in
            ``<out>.partial`` after each one; an interrupted transfer to the same ``out`` resumes from it (same
            source, seed and machine) and the file is removed once the table is written.
        overwrite: replace an existing ``out``.
        progress: ``progress("transfer", done, total, label)``.

    Returns:
        The new table.

    Raises:
        UsageError: ``n_networks`` < 2 (``field="n_networks"``), ``n_blocks`` < 0 (``field="n_blocks"``), a
            ``<out>.partial`` of another source, seed or machine (``field="out"``).
        TableError: ``out`` exists and not ``overwrite`` (``field="out"``).
        TableMismatchError: source measured with an older probe, or for another device/threads/batch.
        MissingEntriesError: the source is incomplete.
        MeasurementError: the backend failed.
    """
    start = time.time()
    if n_networks < 2:
        raise UsageError(f"n_networks {n_networks}: a transfer needs at least 2 networks", field="n_networks")
    if n_blocks < 0:
        raise UsageError(f"n_blocks {n_blocks}: must be >= 0 (0 times no blocks)", field="n_blocks")
    out_path = Path(out) if out is not None else None
    if out_path is not None and out_path.exists() and not overwrite:
        raise TableError(f"{out_path}: exists; write the transferred table to another file or overwrite it",
                         field="out")
    space = _check_source(source, backend)
    identity = backend.identity()
    partial_path = out_path.with_name(out_path.name + ".partial") if out_path is not None else None
    prior = _partial(partial_path, source, identity, seed)
    start -= float(prior["elapsed_s"])  # a resumed transfer's budget counts the time already spent
    state = {"rows": list(prior["rows"]), "blocks": block_entries(prior["blocks"], source)}

    def save(**done: Any) -> None:  # after each network and each block request: a kill loses one at most
        state.update(done)
        if partial_path is not None:
            atomic_write_json(partial_path, {"source_sha256": _file_sha256(source.path), "seed": seed,
                                             "identity": identity, "elapsed_s": round(time.time() - start, 1),
                                             "rows": state["rows"], "blocks": block_records(state["blocks"])})

    configs = transfer_configs(space, resolution=source.resolution, count=n_networks, seed=seed,
                               num_classes=source.num_classes)
    probe = portable_probe(backend, check_probe(source))  # exported once, for the networks and the blocks
    rows = time_transfer_networks(source, backend, configs, start=start, progress=progress, prior=state["rows"],
                                  budget_s=None if budget_s is None else NETWORK_SHARE * budget_s,
                                  on_done=lambda r: save(rows=r), probe=probe)
    keys = block_sample(source, space, n_blocks, seed) if n_blocks > 0 else []
    blocks = time_transfer_blocks(source, backend, keys, budget_s=budget_s, start=start, progress=progress,
                                  prior=state["blocks"], on_done=lambda b: save(blocks=b), probe=probe)
    table = transferred_table(source, identity, rows, blocks=blocks, seconds=time.time() - start, seed=seed)
    if out_path is not None:
        table.save(out_path)
        partial_path.unlink(missing_ok=True)  # type: ignore[union-attr]
    return table
