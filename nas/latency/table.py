"""Latency tables: measure every block of a space on the target, predict whole networks from them.

A table holds one measured latency per :class:`~nas.arch.BlockKey` (stem, each unit variant with its
split and shuffle, head), for one (device, runtime, provider, threads, batch, resolution, space hash,
num_classes) identity. :func:`predict` sums a config's blocks and applies the table's calibration; it
never measures and takes microseconds. How it tracks the whole network (see ``METHOD``):

1. *Whole units* are timed, split, branches, concat and channel shuffle included (per-layer sums drift
   -9..+10 % on this machine; whole units come within a few %). Each unit is exported on its own with
   the same exporter and graph optimisation as a whole network.
2. *CPU time of the measuring thread* is the clock at ``threads=1``: preemption by other processes is not
   counted, so a busy machine inflates a 40 ms network no more than a 0.4 ms block.
3. *Machine speed drift* is tracked by a fixed reference probe network timed in interleaved rounds with
   every block and every whole network, so each measurement carries the probe's time at that moment.
   Times are put on the build's median probe time (``rescale``): ``paired`` (default) uses each
   measurement's own median over rounds of (block / probe) times, which cancels bursts of load from
   other processes as well as slow drift; ``window`` divides by the probe's running median over
   +-``window_s``; ``none`` keeps raw times. Validation rescales its networks the same way, so a table built
   on a fast afternoon validates against a slow morning; the probe's change is reported as drift beside
   every error figure.
4. *Calibration*: a few whole networks (the paper presets in the space, then seeded random draws) are
   timed end to end; of "none", "scale" (``a * sum``) and "affine" (``a * sum + b * (blocks - 1)``, the
   per-call overhead and cross-block effects), the model with the lowest leave-one-out error is kept.

The file is JSON: schema, identity, space (hash and its full document), settings, probe, calibration,
validation, then one entry per line. Writes are atomic (temp file + ``os.replace``) after every entry,
so a killed build loses at most the entry in flight and a re-run measures only what is missing.
"""

from __future__ import annotations

import bisect
import copy
import json
import math
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from nas.arch import ArchConfig, BlockKey
from nas.backends.base import MeasureSettings, Measurement
from nas.errors import MissingEntriesError, TableError, TableMismatchError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    import torch.nn as nn

    from nas.backends.base import Backend
    from nas.space import SearchSpace

__all__ = [
    "LatencyTable",
    "Entry",
    "Prediction",
    "build_table",
    "predict",
    "load_table",
    "default_table_path",
    "validate_table",
    "measure_network",
    "reference_probe",
    "memory_probe",
    "portable_probe",
    "Probe",
    "kendall_tau",
    "BLOCK_SETTINGS",
    "NETWORK_SETTINGS",
]

SCHEMA = "nas.latency_table/1"
from nas.backends.identity import IDENTITY_KEYS, identity_diff  # noqa: E402  (re-exported: old imports)
DEFAULT_TABLE = "shufflenetv2_cpu_x86_64_t1_b1_r224.json"  # shipped table of the default space

# Blocks: >= 0.1 s of timed runs (>= 20 runs) each, and as much for the probe, in 10 interleaved rounds (the
# block/probe ratio is taken per round, so a burst of load from other processes hits both sides of a ratio).
# No retry on a wide spread of raw times (it is flagged): on a busy machine the paired ratio is steadier than
# the raw times and a retry doubled the build time; the verify pass re-measures the repeated units instead.
BLOCK_SETTINGS = MeasureSettings(warmup=10, min_repeats=20, max_repeats=400, min_time_s=0.1, rounds=10, rewarm=1,
                                 max_spread_pct=10.0, retries=0)
# Whole networks (calibration, validation): 3-300 ms each; >= 10 runs and >= 0.5 s.
NETWORK_SETTINGS = MeasureSettings(warmup=5, min_repeats=10, max_repeats=200, min_time_s=0.5, rounds=10, rewarm=1,
                                   max_spread_pct=10.0, retries=1)
PROBE_ID = ("probe/2: sqrt(compute x memory); compute = conv3x3s2 3-24, 1x1 24-64, dw3x3 64, 1x1 64-128, dw3x3s2 128, "
            "1x1 128-128 (BN+ReLU each), 3x64x64; memory = 8 copies of basic_r7_i976_o976_s0.5_k3 (15 MB of weights)")
PROBE_SHAPE = (3, 64, 64)
MEMORY_PROBE_COPIES = 8
MEMORY_PROBE_SHAPE = (976, 7, 7)
PROBE_WINDOW_S = 60.0  # running median of probe times within +-60 s: follows drift, averages probe noise
RESCALE_MODES = ("paired", "window", "none")
# Cold-weights pass: a block whose weights exceed COLD_MIN_BYTES is timed a second way, as COPIES independent
# copies on one input (enough copies for COLD_TARGET_BYTES of weights, at most COLD_MAX_COPIES): each copy's
# weights are evicted by the others', as they are by the rest of a network too big for the last-level cache.
# Alone, a block re-runs with its weights in cache; in a 20 MB network on a 32 MB-L3 VM it streams them from
# memory (measured here: a 976-wide stage-3 unit 0.24 ms alone, 0.30 ms cold; such networks ran 20-40 %
# over the sum of their blocks). Predictions blend the two by the network's weight bytes (see calibration).
COLD_MIN_BYTES = 512 * 1024
COLD_TARGET_BYTES = 32 * 1024 * 1024
COLD_MAX_COPIES = 32
# A cold run costs copies x the block per call (16-60 ms): fewer, shorter rounds than a block's.
COLD_SETTINGS = MeasureSettings(warmup=2, min_repeats=6, max_repeats=100, min_time_s=0.05, rounds=3, rewarm=1,
                                max_spread_pct=10.0, retries=0)
VERIFY_TOLERANCE = 0.04  # a third run when a basic unit's two block/probe ratios differ by > 4 %
CALIBRATION_SEED = 7919  # calibration draws differ from validate-table's default seed 0
METHOD = (
    "whole units (split+branches+concat+shuffle) each exported alone (torch.onnx dynamo=False) and timed "
    "with the network's runtime settings, in interleaved rounds with a fixed reference probe; median of "
    "adaptive repeats; clock = thread CPU time at threads=1 (wall / CUDA events otherwise); entries whose "
    "per-round block/probe ratios spread > max_spread_pct flagged; basic units (repeated within a network) "
    "and flagged entries measured twice, three times if the two disagree by > 4 %, median kept; times rescaled to the build's median probe time (see "
    "probe.rescale); sum calibrated on end-to-end networks (model chosen by leave-one-out error)"
)


# --------------------------------------------------------------------------- the reference probe
def reference_probe() -> "nn.Module":
    """The fixed small network whose time tracks the machine's speed (``PROBE_ID``; never change it
    without bumping the id: stored probe times are only comparable for the same network)."""
    import torch
    from torch import nn

    def cbr(cin: int, cout: int, k: int = 1, groups: int = 1, stride: int = 1) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    # Weights do not change conv speed, but keep the model byte-identical anyway, without touching the
    # caller's global RNG state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(*cbr(3, 24, 3, 1, 2), *cbr(24, 64), *cbr(64, 64, 3, 64), *cbr(64, 128),
                             *cbr(128, 128, 3, 128, 2), *cbr(128, 128)).eval()


def memory_probe() -> "nn.Module":
    """The memory half of the reference (``PROBE_ID``): copies of a wide stage-3 unit whose weights overflow
    the caches, so its time follows the memory system the way big networks do. On this project's VM (L3
    and memory bandwidth shared with other tenants) end-to-end times of the same 12 networks over 5 minutes
    varied 2.6 % (std); divided by the compute probe 2.1 %, by this one 1.2 %, by the geometric mean of both
    1.5 % (0.90 correlation with this probe, 0.69 with the compute probe)."""
    import torch

    from nas.arch import BlockKey

    key = BlockKey(kind="basic", resolution=MEMORY_PROBE_SHAPE[1], in_channels=MEMORY_PROBE_SHAPE[0],
                   out_channels=MEMORY_PROBE_SHAPE[0], split_ratio=0.5)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return _copies_module(key, MEMORY_PROBE_COPIES, 1000)


@dataclass(frozen=True)
class Probe:
    """The reference in the backend's portable form: a compute-bound and a memory-bound model, timed in the
    same interleaved rounds as every block and network; the reference time is their geometric mean."""

    compute: Any
    memory: Any


def portable_probe(backend: "Backend") -> Probe:
    """Export (or prepare) both halves of the reference probe for ``backend`` (once per build/validation)."""
    return Probe(compute=backend.portable(reference_probe(), input_shape=PROBE_SHAPE),
                 memory=backend.portable(memory_probe(), input_shape=MEMORY_PROBE_SHAPE))


class _Timeline:
    """Probe samples ([time_s, ms]) sorted by time, for running medians in O(log n + window)."""

    def __init__(self, samples: Sequence[Sequence[float]]) -> None:
        pairs = sorted((float(t), float(ms)) for t, ms in samples)
        self.times = [t for t, _ in pairs]
        self.ms = [ms for _, ms in pairs]

    def around(self, t: float, window_s: float) -> float | None:
        """Median probe time within ``window_s`` of ``t`` (the nearest sample if none is that close)."""
        if not self.times:
            return None
        lo, hi = bisect.bisect_left(self.times, t - window_s), bisect.bisect_right(self.times, t + window_s)
        if lo >= hi:
            i = min(max(bisect.bisect_left(self.times, t), 0), len(self.times) - 1)
            j = max(i - 1, 0)
            return self.ms[i] if abs(self.times[i] - t) <= abs(self.times[j] - t) else self.ms[j]
        return statistics.median(self.ms[lo:hi])


def _rescaled(raw_ms: float, ratio: float | None, t: float, *, timeline: _Timeline, ref: float | None,
              mode: str, window_s: float) -> float:
    """A time measured at ``t`` expressed at the reference speed (probe time ``ref``)."""
    if not ref or mode == "none":
        return raw_ms
    if mode == "paired" and ratio:
        return ratio * ref
    around = timeline.around(t, window_s)
    return raw_ms * ref / around if around else raw_ms


def _paired(backend: "Backend", probe: Any, model: Any, input_shape: tuple[int, ...],
            settings: MeasureSettings) -> tuple[Measurement, float, float]:
    """Time ``model`` in interleaved rounds with the probe (a :class:`Probe`, or one portable model).

    Returns:
        (measurement of the model, probe median ms, block/probe ratio = median of the per-round ratios). With a
        :class:`Probe`, the probe's time is the geometric mean of its halves, per round and overall. The
        measurement's ``flagged`` is recomputed from the spread of the per-round ratios (the quantity the
        table uses), not of the raw times, which a busy machine widens on both sides of the ratio alike.
    """
    if isinstance(probe, Probe):
        mc, mm, mb = backend.measure_many([probe.compute, probe.memory, model],
                                          input_shapes=[PROBE_SHAPE, MEMORY_PROBE_SHAPE, input_shape],
                                          settings=settings)
        rounds = tuple(math.sqrt(c * m) for c, m in zip(mc.round_medians_ms, mm.round_medians_ms))
        mp = replace(mc, median_ms=math.sqrt(mc.median_ms * mm.median_ms), round_medians_ms=rounds)
    else:
        mp, mb = backend.measure_many([probe, model], input_shapes=[PROBE_SHAPE, input_shape], settings=settings)
    if mb.round_medians_ms and len(mb.round_medians_ms) == len(mp.round_medians_ms):
        ratios = sorted(b / p for b, p in zip(mb.round_medians_ms, mp.round_medians_ms) if p > 0)
        ratio = statistics.median(ratios)
        q1, q3 = ratios[len(ratios) // 4], ratios[(3 * len(ratios)) // 4]
        flagged = len(ratios) >= 4 and 100.0 * (q3 - q1) / ratio > settings.max_spread_pct
    else:  # a backend that reports no rounds
        ratio, flagged = mb.median_ms / mp.median_ms, mb.flagged
    return replace(mb, flagged=flagged), mp.median_ms, ratio


# --------------------------------------------------------------------------- the file
def _sig(x: float, digits: int = 6) -> float:
    """Round to significant digits: a 0.01 ms block and a 300 ms network keep the same relative precision."""
    return float(f"{x:.{digits}g}")


@dataclass
class Entry:
    """One measured block. ``ms`` is ``raw_ms`` rescaled to the table's reference speed (derived, see
    ``LatencyTable.rescale``)."""

    key: BlockKey
    raw_ms: float
    spread_pct: float
    n: int
    t: float  # unix time of the measurement (s): places it on the probe timeline
    probe_ms: float = 0.0  # the reference probe's median in the same interleaved rounds
    ratio: float = 0.0  # median over rounds of block / probe round medians
    flagged: bool = False
    attempts: int = 1
    ms: float = 0.0
    # Later measurements of the same block (verify pass), each [t, raw_ms, probe_ms, ratio, spread_pct, n].
    more: list[list[float]] = field(default_factory=list)
    # Cold-weights measurement (see COLD_MIN_BYTES): [t, raw_ms, probe_ms, ratio, spread_pct, n, copies], the
    # times and ratio per copy; None where the block's weights are small (cold = warm) or not measured yet.
    cold: list[float] | None = None

    def runs(self) -> list[tuple[float, float, float, float]]:
        """Every measurement as (t, raw_ms, probe_ms, ratio), the first one first."""
        return [(self.t, self.raw_ms, self.probe_ms, self.ratio)] + [(r[0], r[1], r[2], r[3]) for r in self.more]

    def add_run(self, other: "Entry") -> None:
        self.more.append([round(other.t, 3), _sig(other.raw_ms), _sig(other.probe_ms), _sig(other.ratio),
                          round(other.spread_pct, 2), other.n])
        self.flagged = self.flagged and other.flagged  # a clean re-measurement clears the flag

    def disagreement(self) -> float:
        """Relative range of the runs' block/probe ratios (0 with one run)."""
        ratios = [r[3] for r in self.runs() if r[3] > 0]
        return (max(ratios) - min(ratios)) / statistics.median(ratios) if len(ratios) > 1 else 0.0

    def to_dict(self) -> dict[str, Any]:
        k = self.key
        return {"ms": _sig(self.ms), "raw_ms": _sig(self.raw_ms), "probe_ms": _sig(self.probe_ms),
                "ratio": _sig(self.ratio), "spread_pct": round(self.spread_pct, 2),
                "n": self.n, "t": round(self.t, 3), "flagged": self.flagged, "attempts": self.attempts,
                **({"more": self.more} if self.more else {}),
                **({"cold": self.cold} if self.cold else {}),
                "key": {"kind": k.kind, "resolution": k.resolution, "in_channels": k.in_channels,
                        "out_channels": k.out_channels, "split_ratio": k.split_ratio, "se": k.se, "kernel": k.kernel,
                        "residual": k.residual, "extra_dw": k.extra_dw}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Entry":
        return cls(key=BlockKey.from_dict(d["key"]), raw_ms=float(d["raw_ms"]), spread_pct=float(d["spread_pct"]),
                   n=int(d["n"]), t=float(d["t"]), probe_ms=float(d.get("probe_ms", 0.0)),
                   ratio=float(d.get("ratio", 0.0)), flagged=bool(d.get("flagged", False)),
                   attempts=int(d.get("attempts", 1)), ms=float(d.get("ms", d["raw_ms"])),
                   more=[list(map(float, r)) for r in d.get("more", [])],
                   cold=list(map(float, d["cold"])) if d.get("cold") else None)


@dataclass
class LatencyTable:
    """A latency table (see the module docstring). Build with :func:`build_table`, read with :func:`load_table`.

    Attributes:
        identity: the backend's identity (device, CPU/GPU model, OS/arch, runtime + version, provider,
            threads, batch, torch version).
        space: ``{"name", "hash", "source", "document"}``; the document rebuilds the space.
        resolution: input resolution of the networks the table predicts.
        num_classes: classifier width of the head entries.
        settings / network_settings: protocols for blocks and for whole networks.
        probe: ``{"id", "input_shape", "ref_ms", "samples": [[time_s, ms], ...]}``.
        calibration: the fitted sum-to-network model and the networks it was fitted on (None until complete).
        validation: figures of the last ``nas validate-table`` (None until run).
        entries: by :attr:`BlockKey.id`.
    """

    identity: dict[str, Any]
    space: dict[str, Any]
    resolution: int
    num_classes: int = 1000
    settings: MeasureSettings = BLOCK_SETTINGS
    network_settings: MeasureSettings = NETWORK_SETTINGS
    probe: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None
    validation: dict[str, Any] | None = None
    entries: dict[str, Entry] = field(default_factory=dict)
    expected_entries: int = 0
    created: str = ""
    build_seconds: float = 0.0
    path: Path | None = None
    _ms: dict[str, float] = field(default_factory=dict, repr=False)
    _var: dict[str, float] = field(default_factory=dict, repr=False)
    _cold: dict[str, float] = field(default_factory=dict, repr=False)  # cold-weights ms (= ms where not measured)
    _wbytes: dict[str, int] = field(default_factory=dict, repr=False)  # float32 weight bytes of each entry
    _flagged: set[str] = field(default_factory=set, repr=False)
    _lines: dict[str, tuple[tuple[Any, ...], str]] = field(default_factory=dict, repr=False)

    # -- identity
    @property
    def space_hash(self) -> str:
        return str(self.space.get("hash", ""))

    @property
    def threads(self) -> int:
        return int(self.identity.get("threads", 1))

    @property
    def batch(self) -> int:
        return int(self.identity.get("batch", 1))

    @property
    def device(self) -> str:
        return str(self.identity.get("device", "?"))

    @property
    def complete(self) -> bool:
        return self.expected_entries > 0 and len(self.entries) >= self.expected_entries

    def describe(self) -> str:
        """One line: device, model, runtime, threads, batch, resolution, space."""
        i = self.identity
        hw = i.get("gpu_model") or i.get("cpu_model", "?")
        return (f"{i.get('device', '?')} ({hw}, {i.get('arch', '?')}), {i.get('runtime', '?')} "
                f"{i.get('runtime_version', '?')} {i.get('provider', '')}, threads={self.threads}, batch={self.batch}, "
                f"{self.resolution}px, space {self.space.get('name', '?')}@{self.space_hash[:12]}")

    def space_object(self) -> "SearchSpace":
        """Rebuild the search space from the document stored in the table.

        Raises:
            TableError: the stored document is missing or does not hash to the stored hash.
        """
        from nas.errors import SpaceError
        from nas.space import space_from_dict

        doc = self.space.get("document")
        where = str(self.path or "table")
        if not isinstance(doc, dict):
            raise TableError(f"{where}: no space document stored; pass --space FILE")
        try:
            sp = space_from_dict(dict(doc), source=f"{where} (stored space)")
        except SpaceError as e:
            raise TableError(f"{where}: stored space is invalid ({e}); pass --space FILE") from None
        if sp.hash != self.space_hash:
            raise TableError(f"{where}: stored space document does not match its hash; pass --space FILE")
        return sp

    def check_space(self, space: "SearchSpace") -> None:
        """Raise :class:`TableMismatchError` unless the table was built for ``space``."""
        if space.hash != self.space_hash:
            raise TableMismatchError(
                f"{self.path or 'table'}: measured for space {self.space.get('name', '?')}@{self.space_hash[:12]}, "
                f"not {space.name}@{space.hash[:12]}; rebuild it with `nas build-latency-table --space "
                f"{space.source or 'FILE'}`")

    def missing(self, keys: Iterable[BlockKey]) -> list[str]:
        """Ids of ``keys`` that have no entry."""
        return [k.id for k in keys if k.id not in self.entries]

    # -- derived values (precomputed once so predict is a few dict lookups)
    @property
    def rescale(self) -> str:
        return str(self.probe.get("rescale", "paired"))

    @property
    def window_s(self) -> float:
        return float(self.probe.get("window_s", PROBE_WINDOW_S))

    def set_rescale(self, mode: str, *, window_s: float | None = None) -> None:
        """Choose how times are put on the reference speed (``window``, ``paired``, ``none``); refreshes.

        Raises:
            UsageError: unknown mode or a window <= 0.
        """
        if mode not in RESCALE_MODES:
            raise UsageError(f"--rescale {mode!r}: choose one of {list(RESCALE_MODES)}")
        if window_s is not None and window_s <= 0:
            raise UsageError(f"--window {window_s}: must be > 0 seconds")
        self.probe["rescale"] = mode
        if window_s is not None:
            self.probe["window_s"] = float(window_s)
        self.refresh()

    def rescaler(self, samples: Sequence[Sequence[float]] | None = None) -> Callable[[float, float | None, float], float]:
        """``f(raw_ms, ratio, t)`` -> ms at the reference speed, using ``samples`` (default: the build's probe
        timeline; validation passes its own)."""
        timeline = _Timeline(self.probe.get("samples", []) if samples is None else samples)
        ref, mode, window = self.probe.get("ref_ms"), self.rescale, self.window_s
        return lambda raw, ratio, t: _rescaled(raw, ratio, t, timeline=timeline, ref=ref, mode=mode, window_s=window)

    def refresh(self) -> None:
        """Recompute the reference probe time and every entry's rescaled ``ms``; refit the calibration."""
        samples = self.probe.get("samples", [])
        self.probe["ref_ms"] = statistics.median(ms for _, ms in samples) if samples else None
        f = self.rescaler()
        self._ms.clear()
        self._var.clear()
        self._cold.clear()
        self._flagged = {eid for eid, e in self.entries.items() if e.flagged}
        for eid, e in self.entries.items():
            # Several runs (verify pass): the median of their rescaled times (mean of two).
            e.ms = statistics.median(f(raw, ratio, t) for t, raw, _, ratio in e.runs())
            self._ms[eid] = e.ms
            self._cold[eid] = f(e.cold[1], e.cold[3], e.cold[0]) if e.cold else e.ms
            if eid not in self._wbytes:
                self._wbytes[eid] = weight_bytes(e.key, self.num_classes)
            # Standard error of a median ~ 1.253 * sigma / sqrt(n), sigma ~ IQR / 1.349.
            se = 1.253 * (e.spread_pct / 100.0 * e.ms / 1.349) / math.sqrt(max(e.n, 1))
            self._var[eid] = se * se
        if self.calibration and self.calibration.get("nets"):
            try:
                self.calibration = _fit_calibration(self.calibration["nets"], self)
            except MissingEntriesError:  # entries removed by hand: keep the stored fit; load_table reports them
                pass

    # -- file
    def to_dict(self, *, entries: bool = True) -> dict[str, Any]:
        d = {
            "schema": SCHEMA,
            "created": self.created,
            "method": METHOD,
            "identity": self.identity,
            "space": self.space,
            "resolution": self.resolution,
            "num_classes": self.num_classes,
            "threads": self.threads,
            "batch": self.batch,
            "settings": self.settings.to_dict(),
            "network_settings": self.network_settings.to_dict(),
            "build_seconds": round(self.build_seconds, 1),
            "expected_entries": self.expected_entries,
            "measured_entries": len(self.entries),
            "flagged_entries": sum(e.flagged for e in self.entries.values()),
            "probe": self.probe,
            "calibration": self.calibration,
            "validation": self.validation,
        }
        if entries:
            d["entries"] = {k: e.to_dict() for k, e in self.entries.items()}
        return d

    def save(self, path: "str | Path | None" = None) -> Path:
        """Write the table atomically (temp file in the same folder, then ``os.replace``).

        Raises:
            TableError: the folder cannot be written.
        """
        p = Path(path) if path is not None else self.path
        if p is None:
            raise UsageError("LatencyTable.save: no path given and the table has none")
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(self._text())
            os.replace(tmp, p)
        except OSError as e:
            raise TableError(f"{p}: cannot write the table ({e.strerror})") from None
        finally:
            if tmp.exists():  # interrupted between write and replace: the previous file is intact
                tmp.unlink()
        self.path = p
        return p

    def _text(self) -> str:
        """The file's text. Entry lines are cached: a build saves after every entry, and re-serialising a
        thousand unchanged entries each time would cost a minute over a full build."""
        doc = self.to_dict(entries=False)
        lines = []
        for eid, e in self.entries.items():
            stamp = (e.ms, len(e.more), e.flagged, e.cold is not None)
            cached = self._lines.get(eid)
            if cached is None or cached[0] != stamp:
                cached = (stamp, f"    {json.dumps(eid)}: {json.dumps(e.to_dict(), separators=(', ', ': '))}")
                self._lines[eid] = cached
            lines.append(cached[1])
        head = _dumps(doc).rstrip()
        assert head.endswith("}")
        body = ",\n".join(lines)
        return head[:-1].rstrip() + ',\n  "entries": {' + (f"\n{body}\n  " if lines else "") + "}\n}\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, path: Path | None = None) -> "LatencyTable":
        where = str(path or "table")
        if not isinstance(d, dict) or d.get("schema") != SCHEMA:
            got = d.get("schema") if isinstance(d, dict) else type(d).__name__
            raise TableError(f"{where}: not a latency table of schema {SCHEMA!r} (found {got!r}); rebuild it with "
                             "`nas build-latency-table`")
        try:
            t = cls(identity=dict(d["identity"]), space=dict(d["space"]), resolution=int(d["resolution"]),
                    num_classes=int(d.get("num_classes", 1000)),
                    settings=MeasureSettings.from_dict(d["settings"]),
                    network_settings=MeasureSettings.from_dict(d.get("network_settings") or {}),
                    probe=dict(d.get("probe") or {}), calibration=d.get("calibration"),
                    validation=d.get("validation"),
                    entries={k: Entry.from_dict(v) for k, v in d["entries"].items()},
                    expected_entries=int(d.get("expected_entries", 0)), created=str(d.get("created", "")),
                    build_seconds=float(d.get("build_seconds", 0.0)), path=path)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise TableError(f"{where}: malformed latency table ({type(e).__name__}: {e}); rebuild it") from None
        t.probe.setdefault("samples", [])
        t.refresh()
        return t


def _dumps(d: dict[str, Any]) -> str:
    """JSON with metadata indented and each entry, probe sample and per-network row on one line."""

    def inline(v: Any) -> str:
        return json.dumps(v, separators=(", ", ": "))

    def dump(v: Any, depth: int) -> str:
        pad, inner = "  " * depth, "  " * (depth + 1)
        if isinstance(v, dict) and v and depth < 2:
            items = [f"{inner}{json.dumps(k)}: {dump(x, depth + 1)}" for k, x in v.items()]
            return "{\n" + ",\n".join(items) + "\n" + pad + "}"
        if isinstance(v, list) and v and depth < 3 and all(isinstance(x, (dict, list)) for x in v):
            return "[\n" + ",\n".join(inner + inline(x) for x in v) + "\n" + pad + "]"
        if isinstance(v, dict) and v and depth == 2 and any(isinstance(x, list) and len(x) > 8 for x in v.values()):
            items = [f"{inner}{json.dumps(k)}: {dump(x, depth + 1)}" for k, x in v.items()]
            return "{\n" + ",\n".join(items) + "\n" + pad + "}"
        return inline(v)

    return dump(d, 0) + "\n"


_identity_diff = identity_diff


# --------------------------------------------------------------------------- calibration
def _net_sum(table: LatencyTable, config: ArchConfig) -> tuple[float, float, float, int]:
    """(sum of warm entries, sum of cold-weights entries, weight MB, blocks) of ``config``."""
    blocks = config.blocks()
    missing = table.missing(blocks)
    if missing:
        raise MissingEntriesError(f"{table.path or 'table'}: {len(missing)} entries missing for "
                                  f"{config.to_string()} (e.g. {missing[0]})", missing)
    ids = [b.id for b in blocks]
    return (sum(table._ms[i] for i in ids), sum(table._cold[i] for i in ids),
            sum(table._wbytes[i] for i in ids) / 1e6, len(blocks))


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


def _fit_calibration(nets: list[dict[str, Any]], table: LatencyTable) -> dict[str, Any]:
    """Fit each model of :data:`CALIBRATION_MODELS` for each cold blend of :data:`COLD_GRID_MB`; keep the one
    with the lowest leave-one-out error.

    Errors are relative (a 5 ms and a 100 ms network weigh the same), as the acceptance figures are. A model
    with more free parameters must beat a simpler one by 0.3 %-points of leave-one-out error to be chosen (the
    cold blend counts as one). Outlying networks (see below) are listed in ``outliers`` and left out of the
    fit; every network counts in the score (capped at ``LOO_CAP_PCT``), so that a blend which explains a
    network is preferred to one that sets it aside.
    """
    import numpy as np

    f = table.rescaler()
    raw = []
    for net in nets:
        cfg = ArchConfig.from_string(net["config"])
        warm, cold, mb, n = _net_sum(table, cfg)
        raw.append((warm, cold, mb, n - 1, f(net["raw_ms"], net.get("ratio"), net["t"])))
    R = np.array(raw, dtype=float)
    E_all = R[:, 4]
    k_all = len(R)

    def evaluate(S_all: np.ndarray) -> dict[str, Any]:
        N_all = R[:, 3]
        # A network timed during a burst of load that its paired probe did not see is an outlier; find them with
        # a one-parameter robust fit (median per-block offset) and a median-absolute-deviation threshold, so they
        # neither steer the fit nor the model choice. At most a quarter of the networks are set aside.
        resid = (S_all + np.median((E_all - S_all) / np.maximum(N_all, 1)) * N_all) / E_all - 1
        dev = np.abs(resid - np.median(resid))
        limit = max(3.5 * 1.4826 * float(np.median(dev)), 0.03)
        order = np.argsort(-dev)
        outliers = sorted(int(i) for i in order[: k_all // 4] if dev[i] > limit) if k_all >= 6 else []
        keep = np.array([i for i in range(k_all) if i not in outliers], dtype=int)
        feats = {"S": S_all[keep], "N": N_all[keep]}
        E = E_all[keep]
        k = len(E)

        def fit(names: tuple[str, ...], fixed_s: bool, idx: np.ndarray) -> dict[str, float]:
            coef = {"S": 1.0, "N": 0.0}
            if names:
                y = (E[idx] - (feats["S"][idx] if fixed_s else 0.0)) / E[idx]
                X = np.stack([feats[c][idx] / E[idx] for c in names], 1)
                sol, *_ = np.linalg.lstsq(X, y, rcond=None)
                coef.update({c: float(v) for c, v in zip(names, sol)})
            return coef

        models: dict[str, dict[str, Any]] = {}
        for name, (names, fixed_s) in CALIBRATION_MODELS.items():
            if names and k < len(names) + 2:  # two networks more than free parameters, for leave-one-out
                continue  # ("none" fits nothing, so it is always there: its leave-one-out error is its error)
            loo = []
            for i in range(k):
                idx = np.array([j for j in range(k) if j != i])
                c = fit(names, fixed_s, idx)
                loo.append(abs((c["S"] * feats["S"][i] + c["N"] * feats["N"][i]) / E[i] - 1) * 100)
            coef = fit(names, fixed_s, np.arange(k))
            full = (coef["S"] * S_all + coef["N"] * N_all) / E_all - 1
            out_err = [min(abs(full[i]) * 100, LOO_CAP_PCT) for i in outliers]
            score = float(np.mean([min(x, LOO_CAP_PCT) for x in loo] + out_err))
            resid_k = (coef["S"] * feats["S"] + coef["N"] * feats["N"]) / E - 1
            models[name] = {"scale": round(coef["S"], 6), "per_block_ms": round(coef["N"], 6),
                            "free": len(names), "score_pct": round(score, 3),
                            "loo_mape_pct": round(float(np.mean(loo)), 3),
                            "loo_rms_pct": round(float(np.sqrt(np.mean(np.square(loo)))), 3),
                            "fit_mape_pct": round(float(np.mean(np.abs(resid_k)) * 100), 3)}
        return {"models": models, "outliers": outliers}

    options = []
    for lo, hi in COLD_GRID_MB:
        S_all = R[:, 0] + np.array([cold_share(mb, lo, hi) for mb in R[:, 2]]) * (R[:, 1] - R[:, 0])
        ev = evaluate(S_all)
        for name, m in ev["models"].items():
            free = m["free"] + (0 if lo is None else 1)
            options.append((m["score_pct"] + 0.3 * free, free, name, lo, hi, m, ev))
    options.sort(key=lambda o: (o[0], o[1]))
    _, _, best, lo, hi, chosen, ev = options[0]
    warm_only = next(o for o in options if o[3] is None and o[2] == best)
    return {"models": ev["models"], "model": best, "scale": chosen["scale"], "per_block_ms": chosen["per_block_ms"],
            "cold_from_mb": lo, "cold_full_mb": hi, "rel_error": chosen["loo_rms_pct"] / 100.0,
            "loo_mape_pct": chosen["loo_mape_pct"], "warm_only_loo_mape_pct": warm_only[5]["loo_mape_pct"],
            "outliers": [nets[i]["config"] for i in ev["outliers"]], "nets": nets,
            "note": ("latency_ms = scale * (warm + share * (cold - warm)) + per_block_ms * (blocks - 1); share = "
                     "0 below cold_from_mb of weights, 1 above cold_full_mb, linear between")}


# --------------------------------------------------------------------------- measuring
def measure_network(config: ArchConfig, backend: "Backend", *, num_classes: int = 1000,
                    settings: MeasureSettings = NETWORK_SETTINGS, probe: Any = None) -> dict[str, Any]:
    """Time ``build_model(config)`` end to end, interleaved with the reference probe.

    Args:
        config: the network.
        backend: where to time it.
        num_classes: classifier width.
        settings: the protocol (default: the tables' network settings).
        probe: the probe in the backend's portable form (default: exported now).

    Returns:
        ``{"config", "raw_ms", "probe_ms", "ratio", "spread_pct", "n", "t", "flagged"}``; ``raw_ms`` is at the
        machine's current speed, ``ratio`` = network / probe time.

    Raises:
        MeasurementError: the backend failed.
    """
    from nas.builder import build_model

    if probe is None:
        probe = portable_probe(backend)
    model = build_model(config, num_classes)
    t = time.time()
    m, probe_ms, ratio = _paired(backend, probe, model, (3, config.resolution, config.resolution), settings)
    return {"config": config.to_string(), "raw_ms": _sig(m.median_ms), "probe_ms": _sig(probe_ms),
            "ratio": _sig(ratio), "spread_pct": round(m.spread_pct, 2), "n": m.n, "t": round(t, 3),
            "flagged": m.flagged}


def _measure_entry(key: BlockKey, backend: "Backend", probe: Any, *, num_classes: int,
                   settings: MeasureSettings, cache: Path | None = None) -> Entry:
    """Time one block paired with the probe. With ``cache``, a basic unit's exported form is kept there for
    the verify pass (exporting is a fifth of the time per entry)."""
    from nas.builder import build_block

    shape = (key.in_channels, key.resolution, key.resolution)
    cached = cache / f"{key.id}.onnx" if cache is not None and key.kind == "basic" else None
    if cached is not None and cached.exists():
        model: Any = cached.read_bytes()
    else:
        model = build_block(key, num_classes=num_classes)
        if cached is not None:
            model = backend.portable(model, input_shape=shape)
            if isinstance(model, (bytes, bytearray)):
                cached.write_bytes(model)
    t = time.time()
    m, probe_ms, ratio = _paired(backend, probe, model, shape, settings)
    return Entry(key=key, raw_ms=m.median_ms, spread_pct=m.spread_pct, n=m.n, t=t, probe_ms=probe_ms, ratio=ratio,
                 flagged=m.flagged, attempts=m.attempts, ms=m.median_ms)


def weight_bytes(key: BlockKey, num_classes: int = 1000) -> int:
    """float32 bytes of a block's parameters (what a network streams from memory once per inference)."""
    from nas.macs import block_macs

    return 4 * int(block_macs(key, num_classes=num_classes).params)


def cold_copies(key: BlockKey, num_classes: int = 1000) -> int:
    """How many copies the cold-weights pass times ``key`` as (0: its weights are small, cold = warm)."""
    wb = weight_bytes(key, num_classes)
    if wb < COLD_MIN_BYTES:
        return 0
    return int(min(COLD_MAX_COPIES, max(2, math.ceil(COLD_TARGET_BYTES / wb))))


def _copies_module(key: BlockKey, copies: int, num_classes: int) -> Any:
    """``copies`` independent instances of ``key``'s block on the same input; one element of each output is
    kept (so no copy is pruned and no large output is copied back)."""
    import torch
    from torch import nn

    from nas.builder import build_block

    class Copies(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.copies = nn.ModuleList(build_block(key, num_classes=num_classes) for _ in range(copies))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([c(x).reshape(-1)[:1] for c in self.copies])

    return Copies().eval()


def replicate_onnx(onnx_bytes: bytes, copies: int) -> bytes:
    """An ONNX model running ``copies`` independent copies of a one-input, one-output model on its input.

    Each copy has its own initializers (scaled by 1 + 1e-3 * i, so that no runtime can share them); one
    element of each copy's output is kept (Flatten + Slice + Concat), so nothing is pruned and nothing large
    is copied back. Done on the graph, not by exporting ``copies`` modules: ~50x faster for big blocks.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    src = onnx.load_from_string(onnx_bytes)
    g = src.graph
    init_names = {i.name for i in g.initializer}
    inp = next(i.name for i in g.input if i.name not in init_names)
    out = g.output[0].name
    nodes, inits = [], []
    starts, ends, axes = "_cold_starts", "_cold_ends", "_cold_axes"
    for name, v in ((starts, 0), (ends, 1), (axes, 1)):
        inits.append(numpy_helper.from_array(np.array([v], dtype=np.int64), name))
    pieces = []
    for c in range(copies):
        def rn(n: str, c: int = c) -> str:
            return n if n in ("", inp) else f"c{c}/{n}"

        for node in g.node:
            n = onnx.NodeProto()
            n.CopyFrom(node)
            n.name = f"c{c}/{node.name}"
            n.input[:] = [rn(x) for x in node.input]
            n.output[:] = [rn(x) for x in node.output]
            nodes.append(n)
        for init in g.initializer:
            arr = numpy_helper.to_array(init)
            if arr.dtype.kind == "f" and arr.size > 1:
                arr = (arr * (1.0 + 1e-3 * c)).astype(arr.dtype)
            inits.append(numpy_helper.from_array(arr, rn(init.name)))
        nodes.append(helper.make_node("Flatten", [rn(out)], [f"c{c}/_flat"], axis=0))
        nodes.append(helper.make_node("Slice", [f"c{c}/_flat", starts, ends, axes], [f"c{c}/_one"]))
        pieces.append(f"c{c}/_one")
    nodes.append(helper.make_node("Concat", pieces, ["cold_out"], axis=1))
    graph = helper.make_graph(nodes, "cold_copies", [i for i in g.input if i.name == inp],
                              [helper.make_tensor_value_info("cold_out", TensorProto.FLOAT, [1, copies])], inits)
    model = helper.make_model(graph, opset_imports=src.opset_import)
    model.ir_version = src.ir_version
    return model.SerializeToString()


def _measure_cold(key: BlockKey, backend: "Backend", probe: Any, *, num_classes: int,
                  settings: MeasureSettings) -> list[float] | None:
    """The cold-weights run of ``key`` (see COLD_MIN_BYTES), per copy; None for small blocks."""
    from nas.builder import build_block

    k = cold_copies(key, num_classes)
    if k == 0:
        return None
    shape = (key.in_channels, key.resolution, key.resolution)
    one = backend.portable(build_block(key, num_classes=num_classes).eval(), input_shape=shape)
    model = replicate_onnx(one, k) if isinstance(one, (bytes, bytearray)) else _copies_module(key, k, num_classes)
    t = time.time()
    m, probe_ms, ratio = _paired(backend, probe, model, shape, settings)
    return [round(t, 3), _sig(m.median_ms / k), _sig(probe_ms), _sig(ratio / k), round(m.spread_pct, 2), m.n, k]


def _calibration_configs(space: "SearchSpace", resolution: int, count: int, seed: int) -> list[ArchConfig]:
    """The paper presets that lie in the space, then seeded random draws, ``count`` distinct configs."""
    import random

    from nas.arch import PRESETS

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


Progress = Callable[[str, int, int, str], None]  # (phase, done, total, label)


def build_table(space: "SearchSpace", backend: "Backend", *, resolution: int | None = None,
                out: "str | Path | None" = None, resume: bool = True, progress: Progress | None = None,
                num_classes: int = 1000, settings: MeasureSettings | None = None,
                network_settings: MeasureSettings | None = None, limit: int | None = None,
                calibration_nets: int = 30, seed: int = CALIBRATION_SEED, rescale: str = "paired",
                verify: bool = True, cold: bool = True) -> LatencyTable:
    """Measure every block of ``space`` at ``resolution`` on ``backend``, then calibrate.

    Args:
        space: the search space; its every distinct block is measured.
        backend: where to measure (its threads and batch become the table's identity).
        resolution: input resolution (default: the space's only choice).
        out: table file; written atomically after every entry.
        resume: continue an existing ``out`` with the same identity (else an existing file is an error).
        progress: called as ``progress(phase, done, total, label)``; phases ``blocks``, ``verify``,
            ``verify-3rd``, ``cold``, ``calibration``.
        num_classes: classifier width of the head entries.
        settings, network_settings: protocols for blocks and for whole networks.
        limit: measure at most this many missing entries this run (tests; the table stays incomplete).
        calibration_nets: whole networks timed for the calibration once all entries exist.
        seed: seed of the calibration draws.
        rescale: how times are put on the build's reference speed (``window``, ``paired``, ``none``).
        verify: measure every basic unit (repeated within networks) and every flagged entry a second time,
            and a third where the first two disagree by more than ``VERIFY_TOLERANCE``; the entry is the
            median of its runs.
        cold: time every block whose weights exceed ``COLD_MIN_BYTES`` a second way, as copies that evict
            each other's weights (see ``COLD_MIN_BYTES``); the calibration decides from which network weight
            size on predictions use it.

    Returns:
        The table (complete and calibrated unless ``limit`` stopped it early).

    Raises:
        TableMismatchError: ``out`` exists with another identity, space, resolution or settings.
        TableError: ``out`` exists and ``resume`` is False, or is corrupt.
        UsageError: ``resolution`` is not one of the space's choices.
        MeasurementError, BackendUnavailableError: from the backend.
    """
    start = time.time()
    if resolution is None:
        if len(space.resolution) != 1:
            raise UsageError(f"--resolution: the space has several {list(space.resolution)}; pick one")
        resolution = space.resolution[0]
    if resolution not in space.resolution:
        raise UsageError(f"--resolution {resolution}: not one of the space's choices {list(space.resolution)}")
    settings = settings or BLOCK_SETTINGS
    network_settings = network_settings or NETWORK_SETTINGS
    identity = backend.identity()
    keys = space.enumerate_blocks(resolution=resolution)
    out_path = Path(out) if out is not None else None
    if out_path is not None:  # temp files of builds killed mid-write (the table itself is always whole)
        for stale in out_path.parent.glob(f".{out_path.name}.*.tmp"):
            stale.unlink(missing_ok=True)
    table: LatencyTable | None = None
    if out_path is not None and out_path.exists():
        if not resume:
            raise TableError(f"{out_path}: exists; pass --resume to finish it, or choose another --out")
        table = load_table(out_path)
        table.check_space(space)
        diff = _identity_diff(table.identity, identity)
        if table.resolution != resolution:
            diff.append(f"resolution {table.resolution} vs {resolution}")
        if table.num_classes != num_classes:
            diff.append(f"num_classes {table.num_classes} vs {num_classes}")
        if table.settings != settings or table.network_settings != network_settings:
            diff.append("measurement settings")
        if diff:
            raise TableMismatchError(f"{out_path}: exists with other settings ({'; '.join(diff)}); choose another "
                                     "--out or delete it")
    if table is None:
        table = LatencyTable(identity=identity, resolution=resolution, num_classes=num_classes, settings=settings,
                             network_settings=network_settings,
                             space={"name": space.name, "hash": space.hash, "source": space.source,
                                    "document": space.to_dict()},
                             probe={"id": PROBE_ID, "input_shape": list(PROBE_SHAPE), "ref_ms": None,
                                    "rescale": rescale, "window_s": PROBE_WINDOW_S, "samples": []},
                             created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), path=out_path)
    table.expected_entries = len(keys)
    table.identity.update({k: v for k, v in identity.items() if k not in IDENTITY_KEYS})  # e.g. newer OS patch
    if table.probe.get("id") != PROBE_ID:
        raise TableMismatchError(f"{out_path}: measured with another reference probe ({table.probe.get('id')!r}); "
                                 "choose another --out or delete it")
    if rescale not in RESCALE_MODES:
        raise UsageError(f"--rescale {rescale!r}: choose one of {list(RESCALE_MODES)}")
    table.probe["rescale"] = rescale
    samples = table.probe["samples"]
    probe = portable_probe(backend)  # exported once, timed with every block
    todo = [k for k in keys if k.id not in table.entries]
    if limit is not None:
        todo = todo[: max(0, limit)]
    done0 = len(keys) - len([k for k in keys if k.id not in table.entries])

    last = start

    def save() -> None:
        nonlocal last
        now = time.time()
        table.build_seconds += now - last  # summed over resumed runs
        last = now
        if out_path is not None:
            table.save(out_path)

    # Exported basic units wait here for the verify pass (~200 MB for the default space; deleted at the end).
    cache_dir = tempfile.TemporaryDirectory(prefix="nas-table-") if verify else None
    cache = Path(cache_dir.name) if cache_dir is not None else None
    for i, key in enumerate(todo):
        if progress:
            progress("blocks", done0 + i, len(keys), key.id)
        e = _measure_entry(key, backend, probe, num_classes=num_classes, settings=settings, cache=cache)
        table.entries[key.id] = e
        samples.append([round(e.t, 3), _sig(e.probe_ms)])
        save()
    if progress:
        progress("blocks", done0 + len(todo), len(keys), "")
    if table.complete and verify:
        # Verify pass: a basic unit repeats up to depth - 1 times in a network, so one entry measured during
        # a burst of load would be counted many times. Each is measured a second time, minutes after the
        # first, and so is every flagged entry (noisy block/probe ratio); where the two ratios differ by more
        # than VERIFY_TOLERANCE, a third time. The entry is the median of its runs (a clean run clears the
        # flag). Resumable: entries carry their runs.
        for round_, want in (("verify", 2), ("verify-3rd", 3)):
            again = [k for k in keys if (k.kind == "basic" or table.entries[k.id].flagged)
                     and len(table.entries[k.id].runs()) < want
                     and (want == 2 or table.entries[k.id].disagreement() > VERIFY_TOLERANCE)]
            for i, key in enumerate(again):
                if progress:
                    progress(round_, i, len(again), key.id)
                e = _measure_entry(key, backend, probe, num_classes=num_classes, settings=settings, cache=cache)
                table.entries[key.id].add_run(e)
                samples.append([round(e.t, 3), _sig(e.probe_ms)])
                save()
            if progress and again:
                progress(round_, len(again), len(again), "")
    if cache_dir is not None:
        cache_dir.cleanup()
    if table.complete and cold:
        # Cold-weights pass (see COLD_MIN_BYTES); resumable: entries carry their cold run.
        again = [k for k in keys if table.entries[k.id].cold is None and cold_copies(k, num_classes) > 0]
        for i, key in enumerate(again):
            if progress:
                progress("cold", i, len(again), key.id)
            c = _measure_cold(key, backend, probe, num_classes=num_classes, settings=COLD_SETTINGS)
            table.entries[key.id].cold = c
            if c is not None:
                samples.append([c[0], c[2]])
            save()
        if progress and again:
            progress("cold", len(again), len(again), "")
    if table.complete and calibration_nets > 0:
        # Resumable too: networks already timed (listed in calibration.nets) are not timed again.
        configs = _calibration_configs(space, resolution, calibration_nets, seed)
        nets = list((table.calibration or {}).get("nets", []))
        done = {n["config"] for n in nets}
        todo_nets = [c for c in configs if c.to_string() not in done]
        for i, cfg in enumerate(todo_nets):
            if progress:
                progress("calibration", len(configs) - len(todo_nets) + i, len(configs), cfg.to_string())
            row = measure_network(cfg, backend, num_classes=num_classes, settings=network_settings, probe=probe)
            nets.append(row)
            samples.append([row["t"], row["probe_ms"]])
            table.calibration = {"nets": nets}
            save()
        if progress:
            progress("calibration", len(configs), len(configs), "")
        table.calibration = {"nets": nets}
    table.refresh()
    save()
    return table


# --------------------------------------------------------------------------- predicting
@dataclass(frozen=True)
class Prediction:
    """A predicted whole-network latency.

    Attributes:
        latency_ms: calibrated prediction at the table's reference speed.
        uncertainty_ms: one standard deviation: calibration error (leave-one-out RMS) and entry noise.
        sum_ms: the plain sum of the block entries.
        blocks: number of blocks summed.
        flagged_blocks: how many of them kept a noisy measurement.
    """

    latency_ms: float
    uncertainty_ms: float
    sum_ms: float
    blocks: int
    flagged_blocks: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"latency_ms": self.latency_ms, "uncertainty_ms": self.uncertainty_ms, "sum_ms": self.sum_ms,
                "blocks": self.blocks, "flagged_blocks": self.flagged_blocks}


UNCALIBRATED_REL_ERROR = 0.05  # assumed 1-sigma error of an uncalibrated sum (issue: whole units within ~5 %)


def predict(config: ArchConfig, table: LatencyTable, *, backend: "Backend | None" = None) -> Prediction:
    """Predict ``config``'s latency from ``table`` (a few dict lookups; no torch, no measuring).

    Args:
        config: the network; its resolution must be the table's.
        table: a loaded table.
        backend: if given, missing entries are measured on it (a *lazy* table; the backend must match the
            table's identity) and the table is saved; otherwise missing entries are an error.

    Returns:
        The :class:`Prediction`.

    Raises:
        TableMismatchError: the config's resolution is not the table's.
        MissingEntriesError: entries are missing (the error lists them in ``.missing``).
    """
    if config.resolution != table.resolution:
        raise TableMismatchError(f"{table.path or 'table'}: measured at {table.resolution}px, config is at "
                                 f"{config.resolution}px; build a table with --resolution {config.resolution}")
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
                f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); finish it with "
                "`nas build-latency-table --resume` or use a table built for this space", missing) from None
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
    latency = scale * blended + per_block * (n - 1)
    rel = float(cal.get("rel_error", UNCALIBRATED_REL_ERROR))
    noise = scale * scale * sum([var[i] for i in ids])
    flagged = sum(1 for i in ids if i in table._flagged) if table._flagged else 0
    return Prediction(latency_ms=latency, uncertainty_ms=math.sqrt((rel * latency) ** 2 + noise), sum_ms=total,
                      blocks=n, flagged_blocks=flagged)


def _check_probe(table: LatencyTable) -> None:
    """New measurements are only comparable with a table's entries if both used the same reference probe."""
    if table.probe.get("id") != PROBE_ID:
        raise TableMismatchError(f"{table.path or 'table'}: measured with an older reference probe "
                                 f"({str(table.probe.get('id'))[:8]}); rebuild it with `nas build-latency-table "
                                 "--overwrite` to validate or extend it")


def _fill(table: LatencyTable, keys: list[BlockKey], backend: "Backend") -> None:
    """Measure ``keys`` into ``table`` now (lazy table), paired with the probe like a build."""
    diff = _identity_diff(table.identity, backend.identity())
    if diff:
        raise TableMismatchError(f"{table.path or 'table'}: cannot fill missing entries on this backend "
                                 f"({'; '.join(diff)})")
    _check_probe(table)
    probe = portable_probe(backend)
    for key in dict((k.id, k) for k in keys).values():
        e = _measure_entry(key, backend, probe, num_classes=table.num_classes, settings=table.settings)
        table.entries[key.id] = e
        table.probe.setdefault("samples", []).append([round(e.t, 3), _sig(e.probe_ms)])
    table.refresh()
    if table.path is not None:
        table.save()


# --------------------------------------------------------------------------- loading
def default_table_path() -> Path:
    """The shipped table of the default space (``latency_tables/`` in the repo, ``nas.latency_tables`` installed)."""
    return Path(str(resources.files("nas.latency_tables").joinpath(DEFAULT_TABLE)))


def load_table(path: "str | Path | None" = None, *, space: "SearchSpace | None" = None) -> LatencyTable:
    """Read a table file (default: :func:`default_table_path`).

    Args:
        path: the JSON file.
        space: if given, the table must have been built for it and hold every one of its blocks.

    Returns:
        The table, with entries rescaled and calibration applied, ready for :func:`predict`.

    Raises:
        TableError: the file is missing, not JSON (corrupt or truncated) or not a latency table.
        TableMismatchError: built for another space.
        MissingEntriesError: ``space`` needs blocks the table lacks.
    """
    p = Path(path) if path is not None else default_table_path()
    if not p.is_file():
        raise TableError(f"{p}: latency table not found; build one with `nas build-latency-table --device cpu "
                         f"--out {p}`")
    try:
        doc = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise TableError(f"{p}: not valid JSON ({e.msg} at line {e.lineno}; corrupt or truncated); rebuild it with "
                         "`nas build-latency-table`") from None
    except (OSError, UnicodeDecodeError) as e:
        raise TableError(f"{p}: cannot read ({e})") from None
    table = LatencyTable.from_dict(doc, path=p)
    if space is not None:
        table.check_space(space)
        missing = table.missing(space.enumerate_blocks(resolution=table.resolution))
        if missing:
            raise MissingEntriesError(
                f"{p}: {len(missing)} of {table.expected_entries or len(missing)} entries missing (e.g. {missing[0]}); "
                "finish it with `nas build-latency-table --resume --out " + str(p) + "`", missing)
    return table


# --------------------------------------------------------------------------- validating
def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b rank correlation (ties in either sequence handled), O(n^2): n is a few hundred at most."""
    n = len(x)
    if n != len(y):
        raise UsageError("kendall_tau: sequences differ in length")
    conc = disc = tx = ty = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                tx += 1
            elif dy == 0:
                ty += 1
            elif (dx > 0) == (dy > 0):
                conc += 1
            else:
                disc += 1
    denom = math.sqrt((conc + disc + tx) * (conc + disc + ty))
    return (conc - disc) / denom if denom else float("nan")


def _error_figures(pred: Sequence[float], meas: Sequence[float]) -> dict[str, float]:
    errs = [100.0 * (p / m - 1.0) for p, m in zip(pred, meas)]
    a = [abs(e) for e in errs]
    return {"mape_pct": round(statistics.fmean(a), 3), "within_5_pct": round(100.0 * sum(e <= 5 for e in a) / len(a), 1),
            "within_10_pct": round(100.0 * sum(e <= 10 for e in a) / len(a), 1),
            "max_abs_error_pct": round(max(a), 2), "bias_pct": round(statistics.fmean(errs), 3),
            "kendall_tau": round(kendall_tau(pred, meas), 4)}


def validate_table(table: LatencyTable, backend: "Backend", *, samples: int = 50, seed: int = 0,
                   space: "SearchSpace | None" = None, progress: Progress | None = None,
                   save: bool = True) -> dict[str, Any]:
    """Draw ``samples`` configs from the table's space, time each end to end on ``backend`` and compare.

    Every network is timed in interleaved rounds with the reference probe, and its time is put on the
    table's reference speed the way the table's entries are (``rescale``); ``drift_pct`` says how much
    slower (+) or faster (-) the machine is now than during the build. The headline figures use the table's
    rescale mode; ``modes`` repeats them for every mode (``none`` = raw times, calibration refitted).

    Args:
        table: a complete table.
        backend: must have the table's identity (device, runtime, provider, threads, batch).
        samples: number of random networks (>= 2).
        seed: seed of the draws.
        space: the table's space (default: rebuilt from the document stored in the table).
        progress: ``progress("validation", done, total, label)``.
        save: store the figures in the table's ``validation`` field and save it (if it has a path).

    Returns:
        ``{"samples", "seed", "rescale", "mape_pct", "within_5_pct", "within_10_pct", "kendall_tau",
        "kendall_tau_macs", "max_abs_error_pct", "bias_pct", "drift_pct", "build_drift_pct", "modes": {...},
        "nets": [...]}``.

    Raises:
        TableMismatchError: the backend or space differs from the table's.
        MissingEntriesError: the table is incomplete.
        UsageError: ``samples`` < 2.
    """
    import random

    from nas.macs import count_macs

    if samples < 2:
        raise UsageError(f"--samples {samples}: need at least 2 networks to rank")
    diff = _identity_diff(table.identity, backend.identity())
    if diff:
        raise TableMismatchError(f"{table.path or 'table'}: measured on another setup ({'; '.join(diff)}); validate it "
                                 "where it was built, with the same --threads/--batch")
    space = space or table.space_object()
    table.check_space(space)
    missing = table.missing(space.enumerate_blocks(resolution=table.resolution))
    if missing:
        raise MissingEntriesError(f"{table.path or 'table'}: {len(missing)} entries missing (e.g. {missing[0]}); "
                                  "finish it with `nas build-latency-table --resume`", missing)
    _check_probe(table)
    rng = random.Random(seed)
    configs = [space.sample(rng, fixed={"resolution": table.resolution}) for _ in range(samples)]
    probe = portable_probe(backend)
    rows = []
    for i, cfg in enumerate(configs):
        if progress:
            progress("validation", i, len(configs), cfg.to_string())
        row = measure_network(cfg, backend, num_classes=table.num_classes, settings=table.network_settings,
                              probe=probe)
        row["macs"] = count_macs(cfg, num_classes=table.num_classes).macs
        rows.append(row)
    if progress:
        progress("validation", len(configs), len(configs), "")
    val_samples = [[r["t"], r["probe_ms"]] for r in rows]
    macs = [r["macs"] for r in rows]
    modes: dict[str, dict[str, Any]] = {}
    for mode in RESCALE_MODES:  # the table's own mode is the headline; the others show what rescaling does
        tm = copy.deepcopy(table)
        tm.path = None
        tm.set_rescale(mode)
        f = tm.rescaler(val_samples)
        pred = [predict(c, tm) for c in configs]
        meas = [f(r["raw_ms"], r["ratio"], r["t"]) for r in rows]
        modes[mode] = {**_error_figures([p.latency_ms for p in pred], meas),
                       "kendall_tau_macs": round(kendall_tau(macs, meas), 4)}
        if mode == table.rescale:
            for r, p, m in zip(rows, pred, meas):
                r.update(predicted_ms=_sig(p.latency_ms), uncertainty_ms=_sig(p.uncertainty_ms), ms=_sig(m))
    ref = table.probe.get("ref_ms")
    tl = _Timeline(table.probe.get("samples", []))
    build_speed = [tl.around(t, table.window_s) or 0.0 for t in tl.times]
    now_probe = statistics.median(r["probe_ms"] for r in rows)
    figures: dict[str, Any] = {
        "samples": samples, "seed": seed, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rescale": table.rescale,
        **modes[table.rescale],
        "drift_pct": round(100.0 * (now_probe / ref - 1.0), 2) if ref else None,
        "build_drift_pct": round(100.0 * (max(build_speed) - min(build_speed)) / ref, 2) if ref and build_speed else None,
        "modes": modes,
        "note": ("headline figures use the table's rescale mode: measurements and entries on the build's reference "
                 "speed; modes.none compares raw times; drift_pct = reference probe now vs during the build (+ = "
                 "slower now); build_drift_pct = range of the probe's running median during the build"),
        "nets": rows,
    }
    if save:
        table.validation = figures
        if table.path is not None:
            table.save()
    return figures
