"""The latency table file: entries, identity, load and save.

A table holds one measured latency per :class:`~nas.arch.BlockKey` (stem, each unit variant with its split and
shuffle, head), for one (device, runtime, provider, threads, batch, resolution, space hash, num_classes)
identity (:data:`nas.backends.identity.IDENTITY_KEYS`). Entries are raw times with the reference probe's time
beside them; :meth:`LatencyTable.refresh` puts them on the build's reference speed (:mod:`nas.latency.probe`).
The calibration (:mod:`nas.latency.calibrate`) is stored in the file and used as stored; a table whose
calibration holds networks but no fit (written before the fit was stored, or stopped mid-calibration) is fitted
once when loaded.

The file is JSON: schema, identity, space (hash and its full document), settings, probe, calibration,
validation, then one entry per line. Writes are atomic (:mod:`nas._io`) after every request (a group of
blocks, :mod:`nas.latency.build`), so a killed build loses at most the group in flight and a re-run measures only
what is missing.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from nas._io import atomic_write_text
from nas._lazy import lazy_exports
from nas.arch import BlockKey
from nas.backends.base import MeasureSettings
from nas.errors import MissingEntriesError, TableError, TableMismatchError, UsageError
from nas.latency.calibrate import fit_calibration
from nas.latency.cold import weight_bytes
from nas.latency.entry import Entry
from nas.latency.paths import portable_source
from nas.latency.defaults import BLOCK_SETTINGS, NETWORK_SETTINGS, default_table_path
from nas.latency.probe import PROBE_WINDOW_S, RESCALE_MODES, Timeline, rescaled

if TYPE_CHECKING:  # pragma: no cover
    from nas.space import SearchSpace

__all__ = ["SCHEMA", "METHOD", "Entry", "LatencyTable", "load_table", "resolve_table"]

SCHEMA = "nas.latency_table/1"
METHOD = (
    "whole units (split+branches+concat+shuffle) each exported alone (torch.onnx dynamo=False) and timed "
    "with the network's runtime settings, in interleaved rounds with a fixed reference probe; median of "
    "adaptive repeats; clock = thread CPU time at threads=1 (wall / CUDA events otherwise); entries whose "
    "per-round block/probe ratios spread > max_spread_pct flagged; basic units (repeated within a network) "
    "and flagged entries measured twice, three times if the two disagree by > 4 %, median kept; "
    "times rescaled to the build's median probe time (see "
    "probe.rescale); sum calibrated on end-to-end networks (model chosen by leave-one-out error)"
)



@dataclass
class LatencyTable:
    """A latency table (see the module docstring). Build with :func:`nas.latency.build_table`, read with
    :func:`load_table`.

    Attributes:
        identity: the backend's identity (device, CPU/GPU model, OS/arch, runtime + version, provider,
            threads, batch, torch version).
        space: ``{"name", "hash", "source", "document"}``; the document rebuilds the space.
        resolution: input resolution of the networks the table predicts.
        num_classes: classifier width of the head entries.
        settings / network_settings: protocols for blocks and for whole networks.
        probe: ``{"id", "input_shape", "ref_ms", "samples": [[time_s, ms], ...]}``; probe/3 tables add
            ``version`` 3, ``memory`` (copies, width, resolution) and ``sized_from``
            (:mod:`nas.latency.probe_spec`).
        calibration: the fitted sum-to-network model and the networks it was fitted on (None until complete).
        validation: figures of the last :func:`nas.latency.validate_table` (None until run).
        entries: by :attr:`BlockKey.id`.
        transfer: for a table transferred from another machine (:func:`nas.latency.transfer.transfer_table`),
            the source's provenance and the transfer's figures; None for a built table (and then not written).
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
    transfer: dict[str, Any] | None = None
    _ms: dict[str, float] = field(default_factory=dict, repr=False)
    _var: dict[str, float] = field(default_factory=dict, repr=False)
    _cold: dict[str, float] = field(default_factory=dict, repr=False)  # cold-weights ms (= ms where not measured)
    _wbytes: dict[str, int] = field(default_factory=dict, repr=False)  # float32 weight bytes of each entry
    _flagged: set[str] = field(default_factory=set, repr=False)
    _lines: dict[str, tuple[tuple[Any, ...], str]] = field(default_factory=dict, repr=False)
    _timed: tuple[Any, dict[str, float]] = field(default=(None, {}), repr=False)  # (what it was built from, ms)

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
            raise TableError(f"{where}: no space document stored; pass the table's space explicitly", field="space")
        try:
            sp = space_from_dict(dict(doc), source=f"{where} (stored space)")
        except SpaceError as e:
            raise TableError(f"{where}: stored space is invalid ({e}); pass the table's space explicitly",
                             field="space") from None
        if sp.hash != self.space_hash:
            raise TableError(f"{where}: stored space document does not match its hash; pass the table's space "
                             "explicitly", field="space")
        return sp

    def check_space(self, space: "SearchSpace", *, field: str = "table") -> None:
        """Raise :class:`TableMismatchError` (with ``field``) unless the table was built for ``space``."""
        if space.hash != self.space_hash:
            raise TableMismatchError(
                f"{self.path or 'table'}: measured for space {self.space.get('name', '?')}@{self.space_hash[:12]}, "
                f"not {space.name}@{space.hash[:12]}; build a table for {space.source or 'this space'} with "
                "`nas build-latency-table` (build_table)", field=field)

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
        """Choose how times are put on the reference speed (``window``, ``paired``, ``none``); refreshes the
        entries, and refits the calibration if the mode or window changed (the stored fit was for another one).

        Raises:
            UsageError: unknown mode (``field="rescale"``) or a window <= 0 (``field="window_s"``).
        """
        if mode not in RESCALE_MODES:
            raise UsageError(f"rescale {mode!r}: choose one of {list(RESCALE_MODES)}", field="rescale")
        if window_s is not None and window_s <= 0:
            raise UsageError(f"window_s {window_s}: must be > 0 seconds", field="window_s")
        changed = mode != self.rescale or (window_s is not None and float(window_s) != self.window_s)
        self.probe["rescale"] = mode
        if window_s is not None:
            self.probe["window_s"] = float(window_s)
        self.refresh()
        if changed:
            self.recalibrate()

    def rescaler(self, samples: Sequence[Sequence[float]] | None = None) -> Callable[[float, float | None, float], float]:
        """``f(raw_ms, ratio, t)`` -> ms at the reference speed, using ``samples`` (default: the build's probe
        timeline; validation passes its own)."""
        timeline = Timeline(self.probe.get("samples", []) if samples is None else samples)
        ref, mode, window = self.probe.get("ref_ms"), self.rescale, self.window_s
        return lambda raw, ratio, t: rescaled(raw, ratio, t, timeline=timeline, ref=ref, mode=mode, window_s=window)

    def refresh(self) -> None:
        """Recompute the reference probe time and every entry's rescaled ``ms``.

        The calibration is kept as stored; only one that lists networks but holds no fit yet (a table written
        before fits were stored, or a build stopped while timing them) is fitted here.
        """
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
            self._cold[eid] = f(e.cold.raw_ms, e.cold.ratio, e.cold.t) if e.cold else e.ms
            if eid not in self._wbytes:
                self._wbytes[eid] = weight_bytes(e.key, self.num_classes)
            # Standard error of a median ~ 1.253 * sigma / sqrt(n) (asymptotic efficiency of the median,
            # sqrt(pi / 2)), sigma ~ IQR / 1.349 (the IQR of a normal distribution in sigmas).
            se = 1.253 * (e.spread_pct / 100.0 * e.ms / 1.349) / math.sqrt(max(e.n, 1))
            self._var[eid] = se * se
        if self.calibration and self.calibration.get("nets") and "model" not in self.calibration:
            self.recalibrate()

    def timed_ms(self, config_string: str) -> float | None:
        """The network's own end-to-end time at the reference speed, where the table timed it whole (its
        calibration networks: the paper presets and seeded draws of a build, the networks of a transfer); the
        median where it was timed more than once; None otherwise. Timings the measurement flagged as noisy are
        not used."""
        cal = self.calibration or {}
        nets = cal.get("nets") or []
        stamp = (id(cal), len(nets), self.probe.get("ref_ms"), self.rescale, self.window_s)
        if self._timed[0] != stamp:
            f = self.rescaler()
            runs: dict[str, list[float]] = {}
            for n in nets:
                if not n.get("flagged"):
                    runs.setdefault(n["config"], []).append(f(n["raw_ms"], n.get("ratio"), n["t"]))
            self._timed = (stamp, {c: statistics.median(v) for c, v in runs.items()})
        return self._timed[1].get(config_string)

    def recalibrate(self) -> None:
        """Refit the calibration on the networks it lists, with the entries as they are now (a build does
        this when it ends). A network whose entries were removed by hand keeps the stored fit
        (:func:`load_table` with ``space`` reports the missing entries)."""
        if self.calibration and self.calibration.get("nets"):
            try:
                self.calibration = fit_calibration(self.calibration["nets"], self)
            except MissingEntriesError:
                pass

    # -- file
    def to_dict(self, *, entries: bool = True) -> dict[str, Any]:
        d = {
            "schema": SCHEMA,
            "created": self.created,
            "method": METHOD,
            "identity": self.identity,
            "space": {**self.space, "source": portable_source(str(self.space.get("source", "")))}
            if "source" in self.space else self.space,
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
            **({"transfer": self.transfer} if self.transfer is not None else {}),
        }
        if entries:
            d["entries"] = {k: e.to_dict() for k, e in self.entries.items()}
        return d

    def save(self, path: "str | Path | None" = None) -> Path:
        """Write the table atomically (:func:`nas._io.atomic_write_text`) to ``path`` (default: its own).

        Returns:
            The path written (which becomes the table's).

        Raises:
            UsageError: no path given and the table has none (``field="path"``).
            TableError: the folder cannot be written.
        """
        p = Path(path) if path is not None else self.path
        if p is None:
            raise UsageError("LatencyTable.save: no path given and the table has none", field="path")
        try:
            # No fsync: a build rewrites the file after every entry (about twice a second); the rename alone
            # keeps it whole after a kill, as it always did.
            atomic_write_text(p, self._text(), fsync=False)
        except OSError as e:
            raise TableError(f"{p}: cannot write the table ({e.strerror})") from None
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
                             "`nas build-latency-table` (build_table)", field="table")
        try:
            t = cls(identity=dict(d["identity"]), space=dict(d["space"]), resolution=int(d["resolution"]),
                    num_classes=int(d.get("num_classes", 1000)),
                    settings=MeasureSettings.from_dict(d["settings"]),
                    network_settings=MeasureSettings.from_dict(d.get("network_settings") or {}),
                    probe=dict(d.get("probe") or {}), calibration=d.get("calibration"),
                    validation=d.get("validation"),
                    entries={k: Entry.from_dict(v) for k, v in d["entries"].items()},
                    expected_entries=int(d.get("expected_entries", 0)), created=str(d.get("created", "")),
                    build_seconds=float(d.get("build_seconds", 0.0)), path=path, transfer=d.get("transfer"))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise TableError(f"{where}: malformed latency table ({type(e).__name__}: {e}); rebuild it",
                             field="table") from None
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


def load_table(path: "str | Path | None" = None, *, space: "SearchSpace | None" = None) -> LatencyTable:
    """Read a table file (default: the shipped table, :func:`nas.latency.defaults.default_table_path`).

    Args:
        path: the JSON file, or None for the shipped table.
        space: if given, the table must have been built for it and hold every one of its blocks.

    Returns:
        The table, with entries rescaled and its stored calibration, ready for :func:`nas.latency.predict`.

    Raises:
        TableError: the file is missing, not JSON (corrupt or truncated) or not a latency table
            (``field="table"``).
        TableMismatchError: built for another space.
        MissingEntriesError: ``space`` needs blocks the table lacks.
    """
    p = Path(path) if path is not None else default_table_path()
    if not p.is_file():
        raise TableError(f"{p}: latency table not found; build one with `nas build-latency-table` (build_table)",
                         field="table")
    try:
        doc = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise TableError(f"{p}: not valid JSON ({e.msg} at line {e.lineno}; corrupt or truncated); rebuild it with "
                         "`nas build-latency-table` (build_table)", field="table") from None
    except (OSError, UnicodeDecodeError) as e:
        raise TableError(f"{p}: cannot read ({e})", field="table") from None
    table = LatencyTable.from_dict(doc, path=p)
    if space is not None:
        table.check_space(space)
        missing = table.missing(space.enumerate_blocks(resolution=table.resolution))
        if missing:
            raise MissingEntriesError(
                f"{p}: {len(missing)} of {table.expected_entries or len(missing)} entries missing (e.g. {missing[0]}); "
                "finish it by building it again with resume (build_table(out=..., resume=True))", missing)
    return table


def resolve_table(path: "str | Path | None" = None, *, space: "SearchSpace | None" = None,
                  use_default: bool = True, required: bool = False) -> LatencyTable | None:
    """The table to predict with: ``path`` if given, else the shipped table where it applies.

    Args:
        path: an explicit table file (always loaded; errors are raised).
        space: the space the table must match (see :func:`load_table`).
        use_default: whether the shipped table applies (False for a custom space: it was built for the
            default space only).
        required: load the shipped table even if it is not there (so its absence is a :class:`TableError`).

    Returns:
        The table, or None where no table applies (no ``path``; the shipped table does not apply or is absent
        and not ``required``).

    Raises:
        TableError, TableMismatchError, MissingEntriesError: as :func:`load_table`.
    """
    if path is not None:
        return load_table(path, space=space)
    if use_default and (required or default_table_path().is_file()):
        return load_table(None, space=space)
    return None


# Names that lived here before the package was split (``from nas.latency.table import build_table`` still works).
_MOVED = {
    "build_table": "nas.latency.build", "predict": "nas.latency.prediction", "Prediction": "nas.latency.prediction",
    "validate_table": "nas.latency.validate", "kendall_tau": "nas.latency.validate",
    "measure_network": "nas.latency.measure", "default_table_path": "nas.latency.defaults",
    "BLOCK_SETTINGS": "nas.latency.defaults", "NETWORK_SETTINGS": "nas.latency.defaults",
    "COLD_SETTINGS": "nas.latency.defaults", "DEFAULT_TABLE": "nas.latency.defaults",
    "reference_probe": "nas.latency.probe", "memory_probe": "nas.latency.probe", "portable_probe": "nas.latency.probe",
    "Probe": "nas.latency.probe", "PROBE_ID": "nas.latency.probe", "PROBE_SHAPE": "nas.latency.probe",
    "MEMORY_PROBE_COPIES": "nas.latency.probe", "MEMORY_PROBE_SHAPE": "nas.latency.probe",
    "cold_copies": "nas.latency.cold", "replicate_onnx": "nas.latency.cold", "weight_bytes": "nas.latency.cold",
    "COLD_TARGET_BYTES": "nas.latency.cold", "COLD_MIN_BYTES": "nas.latency.cold",
    "cold_share": "nas.latency.calibrate", "IDENTITY_KEYS": "nas.backends.identity",
}


__getattr__, _ = lazy_exports(__name__, _MOVED)
