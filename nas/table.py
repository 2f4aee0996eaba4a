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
3. *Machine speed drift* is tracked by a fixed reference probe network timed every ``PROBE_INTERVAL_S``
   during the build (and before each network during calibration and validation). Every measurement is
   rescaled to the build's median probe time using the probe's running median around it, so entries
   measured minutes apart, and validations run days later, are on one speed scale. The rescale factor is
   reported as drift beside every error figure.
4. *Calibration*: a few whole networks (the paper presets in the space, then seeded random draws) are
   timed end to end; of "none", "scale" (``a * sum``) and "affine" (``a * sum + b * (blocks - 1)``, the
   per-call overhead and cross-block effects), the model with the lowest leave-one-out error is kept.

The file is JSON: schema, identity, space (hash and its full document), settings, probe, calibration,
validation, then one entry per line. Writes are atomic (temp file + ``os.replace``) after every entry,
so a killed build loses at most the entry in flight and a re-run measures only what is missing.
"""

from __future__ import annotations

import json
import math
import os
import statistics
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
    "kendall_tau",
    "BLOCK_SETTINGS",
    "NETWORK_SETTINGS",
]

SCHEMA = "nas.latency_table/1"
# The keys of a backend identity that must match for measurements to be comparable (resume, validate).
IDENTITY_KEYS = ("device", "backend", "cpu_model", "arch", "runtime", "runtime_version", "provider", "threads",
                 "batch", "gpu_model")
DEFAULT_TABLE = "shufflenetv2_cpu_x86_64_t1_b1_r224.json"  # shipped table of the default space

# Blocks: at least 0.15 s of timed runs (>= 20 runs) each; 0.1-2 ms blocks get 75-400 runs.
BLOCK_SETTINGS = MeasureSettings(warmup=10, min_repeats=20, max_repeats=400, min_time_s=0.15, rounds=5)
# Whole networks (calibration, validation): 3-300 ms each; >= 10 runs and >= 0.5 s.
NETWORK_SETTINGS = MeasureSettings(warmup=5, min_repeats=10, max_repeats=200, min_time_s=0.5, rounds=5, retries=1)
PROBE_SETTINGS = MeasureSettings(warmup=5, min_repeats=20, max_repeats=200, min_time_s=0.1, rounds=2, retries=0)
PROBE_ID = "probe/1: conv3x3s2 3-24, 1x1 24-64, dw3x3 64, 1x1 64-128, dw3x3s2 128, 1x1 128-128 (BN+ReLU each), 3x64x64"
PROBE_SHAPE = (3, 64, 64)
PROBE_INTERVAL_S = 10.0  # the VM's speed drifts over minutes; a 0.1 s probe every 10 s costs 1 %
PROBE_WINDOW_S = 60.0  # running median of probe times within +-60 s: follows drift, averages probe noise
CALIBRATION_SEED = 7919  # calibration draws differ from validate-table's default seed 0
METHOD = (
    "whole units (split+branches+concat+shuffle) each exported alone (torch.onnx dynamo=False) and timed "
    "with the network's runtime settings; median of adaptive repeats over interleaved rounds; clock = "
    "thread CPU time at threads=1 (wall/CUDA events otherwise); noisy entries re-measured then flagged; "
    "every time rescaled to the build's median reference-probe time (running median over +-60 s); sum "
    "calibrated on end-to-end networks (model chosen by leave-one-out error)"
)


# --------------------------------------------------------------------------- the reference probe
def reference_probe() -> "nn.Module":
    """The fixed small network whose time tracks the machine's speed (``PROBE_ID``; never change it
    without bumping the id: stored probe times are only comparable for the same network)."""
    import torch
    from torch import nn

    torch.manual_seed(0)  # weights do not change conv speed, but keep the model byte-identical anyway

    def cbr(cin: int, cout: int, k: int = 1, groups: int = 1, stride: int = 1) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(*cbr(3, 24, 3, 1, 2), *cbr(24, 64), *cbr(64, 64, 3, 64), *cbr(64, 128),
                         *cbr(128, 128, 3, 128, 2), *cbr(128, 128)).eval()


def _running_median(samples: Sequence[Sequence[float]], t: float, window_s: float = PROBE_WINDOW_S) -> float | None:
    """Median probe time (ms) among ``samples`` ([time_s, ms] pairs) within ``window_s`` of ``t``."""
    if not samples:
        return None
    near = [ms for ts, ms in samples if abs(ts - t) <= window_s]
    if not near:  # nothing within the window: the closest sample
        near = [min(samples, key=lambda s: abs(s[0] - t))[1]]
    return statistics.median(near)


class _Probe:
    """Times the reference probe at most every ``interval_s`` and keeps the [time, ms] samples."""

    def __init__(self, backend: "Backend", samples: list[list[float]], *, interval_s: float) -> None:
        self.backend = backend
        self.samples = samples
        self.interval_s = interval_s
        self.model = backend.portable(reference_probe(), input_shape=PROBE_SHAPE)  # export once, time often
        self.last = -math.inf

    def maybe(self, *, force: bool = False) -> None:
        now = time.time()
        if force or now - self.last >= self.interval_s:
            m = self.backend.measure(self.model, input_shape=PROBE_SHAPE, settings=PROBE_SETTINGS)
            self.samples.append([round(now, 3), m.median_ms])
            self.last = now


# --------------------------------------------------------------------------- the file
def _sig(x: float, digits: int = 6) -> float:
    """Round to significant digits: a 0.01 ms block and a 300 ms network keep the same relative precision."""
    return float(f"{x:.{digits}g}")


@dataclass
class Entry:
    """One measured block. ``ms`` is ``raw_ms`` rescaled to the table's reference speed (derived)."""

    key: BlockKey
    raw_ms: float
    spread_pct: float
    n: int
    t: float  # unix time of the measurement (s): places it on the probe timeline
    flagged: bool = False
    attempts: int = 1
    ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        k = self.key
        return {"ms": _sig(self.ms), "raw_ms": _sig(self.raw_ms), "spread_pct": round(self.spread_pct, 2),
                "n": self.n, "t": round(self.t, 3), "flagged": self.flagged, "attempts": self.attempts,
                "key": {"kind": k.kind, "resolution": k.resolution, "in_channels": k.in_channels,
                        "out_channels": k.out_channels, "split_ratio": k.split_ratio, "se": k.se, "kernel": k.kernel,
                        "residual": k.residual, "extra_dw": k.extra_dw}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Entry":
        return cls(key=BlockKey.from_dict(d["key"]), raw_ms=float(d["raw_ms"]), spread_pct=float(d["spread_pct"]),
                   n=int(d["n"]), t=float(d["t"]), flagged=bool(d.get("flagged", False)),
                   attempts=int(d.get("attempts", 1)), ms=float(d.get("ms", d["raw_ms"])))


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
    def refresh(self) -> None:
        """Recompute the reference probe time and every entry's rescaled ``ms``; refit the calibration."""
        samples = self.probe.get("samples", [])
        ref = statistics.median(ms for _, ms in samples) if samples else None
        self.probe["ref_ms"] = ref
        self._ms.clear()
        self._var.clear()
        for eid, e in self.entries.items():
            e.ms = e.raw_ms * _speed_factor(samples, ref, e.t)
            self._ms[eid] = e.ms
            # Standard error of a median ~ 1.253 * sigma / sqrt(n), sigma ~ IQR / 1.349.
            se = 1.253 * (e.spread_pct / 100.0 * e.ms / 1.349) / math.sqrt(max(e.n, 1))
            self._var[eid] = se * se
        if self.calibration and self.calibration.get("nets"):
            try:
                self.calibration = _fit_calibration(self.calibration["nets"], self)
            except MissingEntriesError:  # entries removed by hand: keep the stored fit; load_table reports them
                pass

    # -- file
    def to_dict(self) -> dict[str, Any]:
        return {
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
            "entries": {k: e.to_dict() for k, e in self.entries.items()},
        }

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
            tmp.write_text(_dumps(self.to_dict()))
            os.replace(tmp, p)
        except OSError as e:
            raise TableError(f"{p}: cannot write the table ({e.strerror})") from None
        self.path = p
        return p

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


def _speed_factor(samples: Sequence[Sequence[float]], ref: float | None, t: float) -> float:
    """ref / (probe time around ``t``): multiplies a time measured at ``t`` onto the reference speed."""
    if not ref:
        return 1.0
    around = _running_median(samples, t)
    return ref / around if around else 1.0


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


def _identity_diff(stored: dict[str, Any], now: dict[str, Any]) -> list[str]:
    return [f"{k} {stored.get(k)!r} vs {now.get(k)!r}" for k in IDENTITY_KEYS
            if (k in stored or k in now) and stored.get(k) != now.get(k)]


# --------------------------------------------------------------------------- calibration
def _net_sum(table: LatencyTable, config: ArchConfig) -> tuple[float, int]:
    blocks = config.blocks()
    missing = table.missing(blocks)
    if missing:
        raise MissingEntriesError(f"{table.path or 'table'}: {len(missing)} entries missing for "
                                  f"{config.to_string()} (e.g. {missing[0]})", missing)
    return sum(table._ms[b.id] for b in blocks), len(blocks)


def _fit_calibration(nets: list[dict[str, Any]], table: LatencyTable) -> dict[str, Any]:
    """Fit none / scale / affine models of network time from the block sum; keep the best by leave-one-out.

    Errors are relative (a 5 ms and a 100 ms network weigh the same), as the acceptance figures are.
    """
    import numpy as np

    samples = table.probe.get("samples", [])
    ref = table.probe.get("ref_ms")
    s_ms, n_blk, e_ms = [], [], []
    for net in nets:
        s, n = _net_sum(table, ArchConfig.from_string(net["config"]))
        s_ms.append(s)
        n_blk.append(n - 1)  # a network is one call; its blocks were n calls
        e_ms.append(net["raw_ms"] * _speed_factor(samples, ref, net["t"]))
    S, N, E = np.array(s_ms), np.array(n_blk, dtype=float), np.array(e_ms)

    def fit(model: str, idx: np.ndarray) -> tuple[float, float]:
        if model == "none":
            return 1.0, 0.0
        if model == "scale":
            r = S[idx] / E[idx]
            return float(r.sum() / (r * r).sum()), 0.0
        A = np.stack([S[idx] / E[idx], N[idx] / E[idx]], 1)
        (a, b), *_ = np.linalg.lstsq(A, np.ones(len(idx)), rcond=None)
        return float(a), float(b)

    k = len(E)
    needs = {"none": 1, "scale": 2, "affine": 4}
    result: dict[str, Any] = {"models": {}}
    for model, min_k in needs.items():
        if k < min_k:
            continue
        loo = []
        for i in range(k):
            idx = np.array([j for j in range(k) if j != i]) if k > 1 else np.array([0])
            a, b = fit(model, idx)
            loo.append(abs((a * S[i] + b * N[i]) / E[i] - 1) * 100)
        a, b = fit(model, np.arange(k))
        resid = ((a * S + b * N) / E - 1) * 100
        result["models"][model] = {"scale": round(a, 6), "per_block_ms": round(b, 6),
                                   "loo_mape_pct": round(float(np.mean(loo)), 3),
                                   "loo_rms_pct": round(float(np.sqrt(np.mean(np.square(loo)))), 3),
                                   "fit_mape_pct": round(float(np.mean(np.abs(resid))), 3)}
    # Lowest leave-one-out error; a more complex model must win by 0.1 %-point to be chosen.
    order = [m for m in ("none", "scale", "affine") if m in result["models"]]
    best = order[0]
    for m in order[1:]:
        if result["models"][m]["loo_mape_pct"] < result["models"][best]["loo_mape_pct"] - 0.1:
            best = m
    chosen = result["models"][best]
    result.update(model=best, scale=chosen["scale"], per_block_ms=chosen["per_block_ms"],
                  rel_error=chosen["loo_rms_pct"] / 100.0, nets=nets,
                  note="latency_ms = scale * sum(entry ms) + per_block_ms * (blocks - 1)")
    return result


# --------------------------------------------------------------------------- measuring
def measure_network(config: ArchConfig, backend: "Backend", *, num_classes: int = 1000,
                    settings: MeasureSettings = NETWORK_SETTINGS) -> dict[str, Any]:
    """Time ``build_model(config)`` end to end; returns ``{"config", "raw_ms", "spread_pct", "n", "t",
    "flagged"}`` (``raw_ms`` at the machine's current speed).

    Raises:
        MeasurementError: the backend failed.
    """
    from nas.builder import build_model

    model = build_model(config, num_classes)
    t = time.time()
    m = backend.measure(model, input_shape=(3, config.resolution, config.resolution), settings=settings)
    return {"config": config.to_string(), "raw_ms": _sig(m.median_ms), "spread_pct": round(m.spread_pct, 2),
            "n": m.n, "t": round(t, 3), "flagged": m.flagged}


def _measure_entry(key: BlockKey, backend: "Backend", *, num_classes: int, settings: MeasureSettings) -> Entry:
    from nas.builder import build_block

    t = time.time()
    m: Measurement = backend.measure(build_block(key, num_classes=num_classes),
                                     input_shape=(key.in_channels, key.resolution, key.resolution), settings=settings)
    return Entry(key=key, raw_ms=m.median_ms, spread_pct=m.spread_pct, n=m.n, t=t, flagged=m.flagged,
                 attempts=m.attempts, ms=m.median_ms)


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
                calibration_nets: int = 8, seed: int = CALIBRATION_SEED) -> LatencyTable:
    """Measure every block of ``space`` at ``resolution`` on ``backend``, then calibrate.

    Args:
        space: the search space; its every distinct block is measured.
        backend: where to measure (its threads and batch become the table's identity).
        resolution: input resolution (default: the space's only choice).
        out: table file; written atomically after every entry.
        resume: continue an existing ``out`` with the same identity (else an existing file is an error).
        progress: called as ``progress(phase, done, total, label)``; phases ``blocks``, ``calibration``.
        num_classes: classifier width of the head entries.
        settings, network_settings: protocols for blocks and for whole networks.
        limit: measure at most this many missing entries this run (tests; the table stays incomplete).
        calibration_nets: whole networks timed for the calibration once all entries exist.
        seed: seed of the calibration draws.

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
                             probe={"id": PROBE_ID, "input_shape": list(PROBE_SHAPE), "ref_ms": None, "samples": []},
                             created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), path=out_path)
    table.expected_entries = len(keys)
    table.identity.update({k: v for k, v in identity.items() if k not in IDENTITY_KEYS})  # e.g. newer OS patch
    probe = _Probe(backend, table.probe["samples"], interval_s=PROBE_INTERVAL_S)
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

    for i, key in enumerate(todo):
        if progress:
            progress("blocks", done0 + i, len(keys), key.id)
        probe.maybe()
        table.entries[key.id] = _measure_entry(key, backend, num_classes=num_classes, settings=settings)
        save()
    if progress:
        progress("blocks", done0 + len(todo), len(keys), "")
    if table.complete and not (table.calibration and table.calibration.get("nets")) and calibration_nets > 0:
        table.refresh()
        nets = []
        configs = _calibration_configs(space, resolution, calibration_nets, seed)
        for i, cfg in enumerate(configs):
            if progress:
                progress("calibration", i, len(configs), cfg.to_string())
            probe.maybe(force=True)
            nets.append(measure_network(cfg, backend, num_classes=num_classes, settings=network_settings))
        probe.maybe(force=True)
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
    ms, var = table._ms, table._var
    try:
        total = sum([ms[b.id] for b in blocks])
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
    latency = scale * total + per_block * (n - 1)
    rel = float(cal.get("rel_error", UNCALIBRATED_REL_ERROR))
    noise = scale * scale * sum([var[b.id] for b in blocks])
    flagged = sum(1 for b in blocks if table.entries[b.id].flagged)
    return Prediction(latency_ms=latency, uncertainty_ms=math.sqrt((rel * latency) ** 2 + noise), sum_ms=total,
                      blocks=n, flagged_blocks=flagged)


def _fill(table: LatencyTable, keys: list[BlockKey], backend: "Backend") -> None:
    """Measure ``keys`` into ``table`` now (lazy table), with a probe sample to place them on its speed scale."""
    diff = _identity_diff(table.identity, backend.identity())
    if diff:
        raise TableMismatchError(f"{table.path or 'table'}: cannot fill missing entries on this backend "
                                 f"({'; '.join(diff)})")
    _Probe(backend, table.probe.setdefault("samples", []), interval_s=0).maybe(force=True)
    for key in dict((k.id, k) for k in keys).values():
        table.entries[key.id] = _measure_entry(key, backend, num_classes=table.num_classes, settings=table.settings)
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

    Every network is timed after a probe; measured times are rescaled to the table's reference speed with
    the probe's running median (``drift_pct`` says by how much the machine is slower (+) or faster (-)
    now than during the build). Figures are given rescaled (the headline) and raw.

    Args:
        table: a complete table.
        backend: must have the table's identity (device, runtime, provider, threads, batch).
        samples: number of random networks (>= 2).
        seed: seed of the draws.
        space: the table's space (default: rebuilt from the document stored in the table).
        progress: ``progress("validation", done, total, label)``.
        save: store the figures in the table's ``validation`` field and save it (if it has a path).

    Returns:
        ``{"samples", "seed", "mape_pct", "within_5_pct", "within_10_pct", "kendall_tau", "kendall_tau_macs",
        "max_abs_error_pct", "bias_pct", "drift_pct", "build_drift_pct", "raw": {...}, "nets": [...]}``.

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
    rng = random.Random(seed)
    configs = [space.sample(rng, fixed={"resolution": table.resolution}) for _ in range(samples)]
    val_probe: list[list[float]] = []
    probe = _Probe(backend, val_probe, interval_s=0)
    rows = []
    for i, cfg in enumerate(configs):
        if progress:
            progress("validation", i, len(configs), cfg.to_string())
        probe.maybe(force=True)
        row = measure_network(cfg, backend, num_classes=table.num_classes, settings=table.network_settings)
        p = predict(cfg, table)
        row.update(predicted_ms=_sig(p.latency_ms), uncertainty_ms=_sig(p.uncertainty_ms),
                   macs=count_macs(cfg, num_classes=table.num_classes).macs)
        rows.append(row)
    probe.maybe(force=True)
    if progress:
        progress("validation", len(configs), len(configs), "")
    ref = table.probe.get("ref_ms")
    for row in rows:
        row["ms"] = _sig(row["raw_ms"] * _speed_factor(val_probe, ref, row["t"]))
    pred = [r["predicted_ms"] for r in rows]
    figures: dict[str, Any] = {"samples": samples, "seed": seed,
                               "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                               **_error_figures(pred, [r["ms"] for r in rows])}
    figures["kendall_tau_macs"] = round(kendall_tau([r["macs"] for r in rows], [r["ms"] for r in rows]), 4)
    now_probe = statistics.median(ms for _, ms in val_probe)
    build_probe = [_running_median(table.probe["samples"], t) for t, _ in table.probe["samples"]]
    figures["drift_pct"] = round(100.0 * (now_probe / ref - 1.0), 2) if ref else None
    figures["build_drift_pct"] = (round(100.0 * (max(build_probe) - min(build_probe)) / ref, 2)
                                  if ref and build_probe else None)
    figures["raw"] = _error_figures(pred, [r["raw_ms"] for r in rows])
    figures["raw"]["kendall_tau_macs"] = round(kendall_tau([r["macs"] for r in rows], [r["raw_ms"] for r in rows]), 4)
    figures["note"] = ("headline figures compare predictions with measurements rescaled to the build's speed by "
                       "the reference probe; 'raw' compares with the times as measured; drift_pct = probe now vs "
                       "build (+ = slower now); build_drift_pct = range of the probe's running median during the build")
    figures["nets"] = rows
    if save:
        table.validation = figures
        if table.path is not None:
            table.save()
    return figures
