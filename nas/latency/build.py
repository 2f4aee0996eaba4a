"""Building a table: the passes over a space's blocks on one backend, resumable at every entry.

How a table tracks whole networks (stored in every table as :data:`nas.latency.table.METHOD`):

1. *Whole units* are timed, split, branches, concat and channel shuffle included (per-layer sums drift
   -9..+10 % on this machine; whole units come within a few %). Each unit is exported on its own with the same
   exporter and graph optimisation as a whole network.
2. *CPU time of the measuring thread* is the clock at ``threads=1``: preemption by other processes is not
   counted, so a busy machine inflates a 40 ms network no more than a 0.4 ms block.
3. *Machine speed drift* is tracked by the reference probe timed in interleaved rounds with every block and
   network (:mod:`nas.latency.probe`); new tables use probe/3, its memory half sized to the space's largest
   network and the board's last-level cache (:mod:`nas.latency.probe_spec`), a resumed table keeps its own.
4. *Calibration* on a few whole networks timed end to end (:mod:`nas.latency.calibrate`).

The passes, in order: ``blocks`` (every missing entry), ``verify`` and ``verify-3rd`` (repeated units and
flagged entries again), ``cold`` (:mod:`nas.latency.cold`), ``calibration``. Each saves the table after every
request (a group of blocks, :meth:`_Build.groups`) and skips what the file already holds, so a killed build
resumes where it stopped.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from nas.arch import BlockKey
from nas.backends.base import MeasureSettings
from nas.backends.identity import IDENTITY_KEYS, identity_diff
from nas.errors import AgentError, MeasurementError, TableError, TableMismatchError, UsageError
from nas.latency.calibrate import calibration_configs
from nas.latency.cold import cold_copies, measure_cold, weight_bytes
from nas.latency.defaults import (BLOCK_SETTINGS, BLOCKS_PER_REQUEST, CALIBRATION_SEED, COLD_SETTINGS,
                                  GROUP_MAX_BYTES, NETWORK_SETTINGS, VERIFY_TOLERANCE)
from nas.latency.measure import measure_entries, measure_network
from nas.latency.paths import portable_source
from nas.latency.probe import PROBE_WINDOW_S, RESCALE_MODES, portable_probe
from nas.latency.probe_spec import ProbeSpec, probe_spec_for, spec_of
from nas.latency.rounding import sig
from nas.latency.table import LatencyTable, load_table

if TYPE_CHECKING:  # pragma: no cover
    from nas.backends.base import Backend
    from nas.space import SearchSpace

__all__ = ["Progress", "build_table"]

Progress = Callable[[str, int, int, str], None]  # (phase, done, total, label)


def _resolution(space: "SearchSpace", resolution: int | None) -> int:
    if resolution is None:
        if len(space.resolution) != 1:
            raise UsageError(f"resolution: the space has several {list(space.resolution)}; pick one",
                             field="resolution")
        return space.resolution[0]
    if resolution not in space.resolution:
        raise UsageError(f"resolution {resolution}: not one of the space's choices {list(space.resolution)}",
                         field="resolution")
    return resolution


def _resumed(out: Path, space: "SearchSpace", identity: dict[str, Any], *, resume: bool, resolution: int,
             num_classes: int, settings: MeasureSettings, network_settings: MeasureSettings) -> LatencyTable:
    """The existing table at ``out``, if it was measured the way this build would measure."""
    if not resume:
        raise TableError(f"{out}: exists; resume it (resume=True), or write to another file", field="out")
    table = load_table(out)
    table.check_space(space, field="out")
    diff = identity_diff(table.identity, identity)
    if table.resolution != resolution:
        diff.append(f"resolution {table.resolution} vs {resolution}")
    if table.num_classes != num_classes:
        diff.append(f"num_classes {table.num_classes} vs {num_classes}")
    if table.settings != settings or table.network_settings != network_settings:
        diff.append("measurement settings")
    if diff:
        raise TableMismatchError(f"{out}: exists with other settings ({'; '.join(diff)}); write to another file "
                                 "or delete it", field="out")
    return table


def _new_table(space: "SearchSpace", identity: dict[str, Any], *, out: Path | None, resolution: int,
               num_classes: int, settings: MeasureSettings, network_settings: MeasureSettings,
               rescale: str) -> LatencyTable:
    # New tables use probe/3, sized to the space and, where the backend reports it, the board's cache
    # (a board agent's identity carries the board's llc_bytes: the probe is built here but runs there).
    spec = probe_spec_for(space, resolution=resolution, num_classes=num_classes,
                          llc_bytes=identity.get("llc_bytes"))
    return LatencyTable(identity=identity, resolution=resolution, num_classes=num_classes, settings=settings,
                        network_settings=network_settings,
                        space={"name": space.name, "hash": space.hash, "source": portable_source(space.source),
                               "document": space.to_dict()},
                        probe={**spec.record(), "ref_ms": None, "rescale": rescale, "window_s": PROBE_WINDOW_S,
                               "samples": []},
                        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), path=out)


def _table_probe(table: LatencyTable, out: Path | None) -> ProbeSpec:
    """The probe the table records (a resumed probe/2 table keeps probe/2); refused if this version cannot
    rebuild it (older probes' times are not comparable with new ones)."""
    spec = spec_of(table.probe)
    if spec is None:
        raise TableMismatchError(f"{out}: measured with another reference probe ({table.probe.get('id')!r}); "
                                 "write to another file or delete it", field="out")
    return spec


@dataclass
class _Build:
    """One run of a build: the table, where it is measured, and the bookkeeping shared by the passes."""

    table: LatencyTable
    space: "SearchSpace"
    backend: "Backend"
    keys: list[BlockKey]
    out: Path | None
    progress: Progress | None
    probe: Any = None
    last: float = field(default_factory=time.time)
    per_request: int = BLOCKS_PER_REQUEST

    def save(self) -> None:
        now = time.time()
        self.table.build_seconds += now - self.last  # summed over resumed runs
        self.last = now
        if self.out is not None:
            self.table.save(self.out)

    def report(self, phase: str, done: int, total: int, label: str = "") -> None:
        if self.progress:
            self.progress(phase, done, total, label)

    def sample(self, t: float, probe_ms: float) -> None:
        self.table.probe["samples"].append([round(t, 3), sig(probe_ms)])

    def groups(self, keys: list[BlockKey], cache: Path | None) -> Iterator[tuple[list[BlockKey], list[Any]]]:
        """Consecutive groups of ``keys`` measured one request each, as ``(group, entries)``: at most
        ``per_request`` blocks and ``GROUP_MAX_BYTES`` of weights. Where the backend has a time limit per
        request (a board agent's ``max_seconds``), a group that took over half of it shrinks the next ones, and
        a group refused for running past it is halved and sent again."""
        cap_s = float((getattr(self.backend, "limits", None) or {}).get("max_seconds") or 0.0)
        max_models = getattr(self.backend, "max_models", None)  # a board agent's; 2 of them are the probe's
        if max_models:
            self.per_request = max(1, min(self.per_request, int(max_models) - 2))
        i = 0
        while i < len(keys):
            group, size = [keys[i]], weight_bytes(keys[i], self.table.num_classes)
            while i + len(group) < len(keys) and len(group) < self.per_request:
                wb = weight_bytes(keys[i + len(group)], self.table.num_classes)
                if size + wb > GROUP_MAX_BYTES:
                    break
                group.append(keys[i + len(group)])
                size += wb
            t0 = time.perf_counter()
            try:
                entries = measure_entries(group, self.backend, self.probe, num_classes=self.table.num_classes,
                                          settings=self.table.settings, cache=cache)
            except (AgentError, MeasurementError) as e:
                if len(group) == 1 or "max_seconds" not in f"{getattr(e, 'field', '')} {e}":
                    raise
                self.per_request = len(group) // 2
                continue
            wall = time.perf_counter() - t0
            if cap_s and wall > 0.5 * cap_s:
                self.per_request = max(1, min(self.per_request, int(0.5 * cap_s / (wall / len(group)))))
            yield group, entries
            i += len(group)


def _blocks_pass(b: _Build, *, limit: int | None, cache: Path | None) -> None:
    """Every block the table lacks (at most ``limit`` this run), in groups (:meth:`_Build.groups`)."""
    t = b.table
    todo = [k for k in b.keys if k.id not in t.entries]
    done = len(b.keys) - len(todo)
    if limit is not None:
        todo = todo[: max(0, limit)]
    b.report("blocks", done, len(b.keys), todo[0].id if todo else "")
    for group, entries in b.groups(todo, cache):
        for e in entries:
            t.entries[e.key.id] = e
        b.sample(entries[0].t, entries[0].probe_ms)
        b.save()
        done += len(group)
        b.report("blocks", done, len(b.keys), group[-1].id)


def _verify_pass(b: _Build, *, cache: Path | None) -> None:
    """A basic unit repeats up to depth - 1 times in a network, so one entry measured during a burst of load
    would be counted many times. Each is measured a second time, minutes after the first, and so is every
    flagged entry (noisy block/probe ratio); where the two ratios differ by more than VERIFY_TOLERANCE, a third
    time. The entry is the median of its runs (a clean run clears the flag). Resumable: entries carry their
    runs."""
    t = b.table
    for phase, want in (("verify", 2), ("verify-3rd", 3)):
        again = [k for k in b.keys if (k.kind == "basic" or t.entries[k.id].flagged)
                 and len(t.entries[k.id].runs()) < want
                 and (want == 2 or t.entries[k.id].disagreement() > VERIFY_TOLERANCE)]
        done = 0
        if again:
            b.report(phase, 0, len(again), again[0].id)
        for group, entries in b.groups(again, cache):
            for e in entries:
                t.entries[e.key.id].add_run(e)
            b.sample(entries[0].t, entries[0].probe_ms)
            b.save()
            done += len(group)
            b.report(phase, done, len(again), group[-1].id)
        if again:
            b.report(phase, len(again), len(again), "")


def _cold_pass(b: _Build) -> None:
    """Every block with big weights timed as copies (:mod:`nas.latency.cold`); resumable: entries carry it."""
    t = b.table
    again = [k for k in b.keys if t.entries[k.id].cold is None and cold_copies(k, t.num_classes) > 0]
    for i, key in enumerate(again):
        b.report("cold", i, len(again), key.id)
        c = measure_cold(key, b.backend, b.probe, num_classes=t.num_classes, settings=COLD_SETTINGS)
        t.entries[key.id].cold = c
        if c is not None:
            b.sample(c.t, c.probe_ms)
        b.save()
    if again:
        b.report("cold", len(again), len(again), "")


def _calibration_pass(b: _Build, *, count: int, seed: int) -> None:
    """Whole networks timed end to end; resumable: networks already listed in the calibration are not timed
    again."""
    t = b.table
    configs = calibration_configs(b.space, t.resolution, count, seed)
    nets = list((t.calibration or {}).get("nets", []))
    done = {n["config"] for n in nets}
    todo = [c for c in configs if c.to_string() not in done]
    for i, cfg in enumerate(todo):
        b.report("calibration", len(configs) - len(todo) + i, len(configs), cfg.to_string())
        row = measure_network(cfg, b.backend, num_classes=t.num_classes, settings=t.network_settings, probe=b.probe)
        nets.append(row)
        b.sample(row["t"], row["probe_ms"])  # already rounded by measure_network: rounding again changes nothing
        t.calibration = {"nets": nets}
        b.save()
    b.report("calibration", len(configs), len(configs), "")
    t.calibration = {"nets": nets}


def build_table(space: "SearchSpace", backend: "Backend", *, resolution: int | None = None,
                out: "str | Path | None" = None, resume: bool = True, progress: Progress | None = None,
                num_classes: int = 1000, settings: MeasureSettings | None = None,
                network_settings: MeasureSettings | None = None, limit: int | None = None,
                calibration_nets: int = 30, seed: int = CALIBRATION_SEED, rescale: str = "paired",
                verify: bool = True, cold: bool = True,
                blocks_per_request: int = BLOCKS_PER_REQUEST) -> LatencyTable:
    """Measure every block of ``space`` at ``resolution`` on ``backend``, then calibrate.

    Args:
        space: the search space; its every distinct block is measured.
        backend: where to measure (its threads and batch become the table's identity).
        resolution: input resolution (default: the space's only choice).
        out: table file; written atomically after every request (a group of blocks).
        resume: continue an existing ``out`` with the same identity (else an existing file is an error).
        progress: called as ``progress(phase, done, total, label)``; phases ``blocks``, ``verify``,
            ``verify-3rd``, ``cold``, ``calibration``.
        num_classes: classifier width of the head entries.
        settings, network_settings: protocols for blocks and for whole networks (default
            :data:`~nas.latency.defaults.BLOCK_SETTINGS`, :data:`~nas.latency.defaults.NETWORK_SETTINGS`).
        limit: measure at most this many missing entries this run (tests; the table stays incomplete).
        calibration_nets: whole networks timed for the calibration once all entries exist.
        seed: seed of the calibration draws.
        rescale: how times are put on the build's reference speed (``window``, ``paired``, ``none``).
        verify: measure every basic unit (repeated within networks) and every flagged entry a second time,
            and a third where the first two disagree by more than ``VERIFY_TOLERANCE``; the entry is the
            median of its runs.
        blocks_per_request: blocks timed together with one probe per call (:meth:`_Build.groups`).
        cold: time every block whose weights exceed ``COLD_MIN_BYTES`` a second way, as copies that evict
            each other's weights (:mod:`nas.latency.cold`); the calibration decides from which network weight
            size on predictions use it.

    Returns:
        The table (complete and calibrated unless ``limit`` stopped it early).

    Raises:
        TableMismatchError: ``out`` exists with another identity, space, resolution or settings (``field="out"``).
        TableError: ``out`` exists and ``resume`` is False, or is corrupt.
        UsageError: ``resolution`` is not one of the space's choices, or ``rescale`` is unknown.
        MeasurementError, BackendUnavailableError: from the backend.
    """
    start = time.time()
    resolution = _resolution(space, resolution)
    settings = settings or BLOCK_SETTINGS
    network_settings = network_settings or NETWORK_SETTINGS
    identity = backend.identity()
    out_path = Path(out) if out is not None else None
    if out_path is not None:  # temp files of builds killed mid-write (the table itself is always whole)
        for stale in out_path.parent.glob(f".{out_path.name}.*.tmp"):
            stale.unlink(missing_ok=True)
    shape = dict(resolution=resolution, num_classes=num_classes, settings=settings, network_settings=network_settings)
    if out_path is not None and out_path.exists():
        table = _resumed(out_path, space, identity, resume=resume, **shape)
    else:
        table = _new_table(space, identity, out=out_path, rescale=rescale, **shape)
    keys = space.enumerate_blocks(resolution=resolution)
    table.expected_entries = len(keys)
    table.identity.update({k: v for k, v in identity.items() if k not in IDENTITY_KEYS})  # e.g. newer OS patch
    spec = _table_probe(table, out_path)
    if rescale not in RESCALE_MODES:
        raise UsageError(f"rescale {rescale!r}: choose one of {list(RESCALE_MODES)}", field="rescale")
    table.probe["rescale"] = rescale
    b = _Build(table=table, space=space, backend=backend, keys=keys, out=out_path, progress=progress,
               probe=portable_probe(backend, spec), last=start, per_request=max(1, int(blocks_per_request)))
    # Exported basic units wait here for the verify pass (~200 MB for the default space; deleted at the end).
    cache_dir = tempfile.TemporaryDirectory(prefix="nas-table-") if verify else None
    cache = Path(cache_dir.name) if cache_dir is not None else None
    _blocks_pass(b, limit=limit, cache=cache)
    if table.complete and verify:
        _verify_pass(b, cache=cache)
    if cache_dir is not None:
        cache_dir.cleanup()
    if table.complete and cold:
        _cold_pass(b)
    if table.complete and calibration_nets > 0:
        _calibration_pass(b, count=calibration_nets, seed=seed)
    table.refresh()
    table.recalibrate()  # the one place a fit is made on purpose: the entries are new
    b.save()
    return table
