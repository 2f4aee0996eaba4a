"""Timing one block or one whole network, paired with the reference probe (:func:`nas.latency.probe.paired`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from nas.arch import ArchConfig, BlockKey
from nas.backends.base import MeasureSettings
from nas.latency.defaults import NETWORK_SETTINGS
from nas.latency.entry import Entry
from nas.latency.probe import paired, paired_many, portable_probe
from nas.latency.rounding import sig

if TYPE_CHECKING:  # pragma: no cover
    from nas.backends.base import Backend

__all__ = ["measure_network", "measure_entry", "measure_entries"]


def measure_network(config: ArchConfig, backend: "Backend", *, num_classes: int = 1000,
                    settings: MeasureSettings = NETWORK_SETTINGS, probe: Any = None) -> dict[str, Any]:
    """Time ``build_model(config)`` end to end, interleaved with the reference probe.

    Args:
        config: the network.
        backend: where to time it.
        num_classes: classifier width.
        settings: the protocol (default: the tables' network settings).
        probe: the probe in the backend's portable form (default: probe/2, exported now). To compare with a
            table, pass the table's own: ``portable_probe(backend, check_probe(table))``; a ratio to one probe
            times another probe's ``ref_ms`` is not a latency.

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
    m, probe_ms, ratio = paired(backend, probe, model, (3, config.resolution, config.resolution), settings)
    return {"config": config.to_string(), "raw_ms": sig(m.median_ms), "probe_ms": sig(probe_ms),
            "ratio": sig(ratio), "spread_pct": round(m.spread_pct, 2), "n": m.n, "t": round(t, 3),
            "flagged": m.flagged}


def measure_entry(key: BlockKey, backend: "Backend", probe: Any, *, num_classes: int,
                  settings: MeasureSettings, cache: Path | None = None) -> Entry:
    """Time one block paired with the probe (:func:`measure_entries` of one block)."""
    return measure_entries([key], backend, probe, num_classes=num_classes, settings=settings, cache=cache)[0]


def measure_entries(keys: Sequence[BlockKey], backend: "Backend", probe: Any, *, num_classes: int,
                    settings: MeasureSettings, cache: Path | None = None) -> list[Entry]:
    """Time a group of blocks in one call, each paired with the same probe rounds
    (:func:`nas.latency.probe.paired_many`). With ``cache``, a basic unit's exported form is kept there for
    the verify pass (exporting is a fifth of the time per entry)."""
    from nas.builder import build_block

    models, shapes = [], []
    for key in keys:
        shapes.append((key.in_channels, key.resolution, key.resolution))
        cached = cache / f"{key.id}.onnx" if cache is not None and key.kind == "basic" else None
        if cached is not None and cached.exists():
            model: Any = cached.read_bytes()
        else:
            model = build_block(key, num_classes=num_classes)
            if cached is not None:
                model = backend.portable(model, input_shape=shapes[-1])
                if isinstance(model, (bytes, bytearray)):
                    cached.write_bytes(model)
        models.append(model)
    t = time.time()
    out = []
    for key, (m, probe_ms, ratio) in zip(keys, paired_many(backend, probe, models, shapes, settings)):
        out.append(Entry(key=key, raw_ms=m.median_ms, spread_pct=m.spread_pct, n=m.n, t=t, probe_ms=probe_ms,
                         ratio=ratio, flagged=m.flagged, attempts=m.attempts, ms=m.median_ms))
    return out
