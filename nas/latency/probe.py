"""The reference probe and drift rescaling: how a table's times are put on one machine speed.

A reference network (a compute-bound half and a memory-bound half, their geometric mean; which one a table
uses, probe/2 or probe/3, is :mod:`nas.latency.probe_spec`) is timed in interleaved rounds with every block
and every whole network (:func:`paired`), so each measurement carries the probe's time at that moment. :func:`rescaled` puts a time on the build's median probe
time: ``paired`` (default) uses the measurement's own median over rounds of (block / probe) times, which
cancels bursts of load from other processes as well as slow drift; ``window`` divides by the probe's running
median over +-``window_s`` (:class:`Timeline`); ``none`` keeps raw times.
"""

from __future__ import annotations

import bisect
import math
import statistics
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Sequence

from nas.backends.base import MeasureSettings, Measurement
from nas.latency.probe_spec import (MEMORY_PROBE_COPIES, MEMORY_PROBE_SHAPE, PROBE_ID, PROBE_SHAPE, PROBE_V2,
                                    ProbeSpec, memory_unit)

if TYPE_CHECKING:  # pragma: no cover
    import torch.nn as nn

    from nas.backends.base import Backend

__all__ = ["PROBE_ID", "PROBE_SHAPE", "MEMORY_PROBE_COPIES", "MEMORY_PROBE_SHAPE", "PROBE_WINDOW_S",
           "RESCALE_MODES", "ProbeSpec", "PROBE_V2", "reference_probe", "memory_probe", "Probe", "portable_probe",
           "Timeline", "rescaled", "paired", "paired_many"]

PROBE_WINDOW_S = 60.0  # running median of probe times within +-60 s: follows drift, averages probe noise
RESCALE_MODES = ("paired", "window", "none")


def reference_probe() -> "nn.Module":
    """The fixed small network whose time tracks the machine's speed (``PROBE_ID``; never change it
    without bumping the id: stored probe times are only comparable for the same network)."""
    import torch
    from torch import nn

    from nas.blocks import conv_bn

    # Weights do not change conv speed, but keep the model byte-identical anyway, without touching the
    # caller's global RNG state. (conv_bn's ReLU is in-place: same ONNX graph, same parameters.)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(*conv_bn(3, 24, 3, 2), *conv_bn(24, 64), *conv_bn(64, 64, 3, groups=64),
                             *conv_bn(64, 128), *conv_bn(128, 128, 3, 2, groups=128), *conv_bn(128, 128)).eval()


def memory_probe(spec: ProbeSpec = PROBE_V2) -> "nn.Module":
    """The memory half of the reference ``spec`` (default probe/2, ``PROBE_ID``): copies of a wide stage-3
    unit whose weights overflow the caches, so its time follows the memory system the way big networks do.
    On this project's VM (L3 and memory bandwidth shared with other tenants) end-to-end times of the same 12 networks over 5 minutes
    varied 2.6 % (std); divided by the compute probe 2.1 %, by this one 1.2 %, by the geometric mean of both
    1.5 % (0.90 correlation with this probe, 0.69 with the compute probe). probe/3 sizes the copies to the
    space (:mod:`nas.latency.probe_spec`)."""
    import torch

    from nas.latency.cold import copies_module  # cold imports this module: imported here, when called

    key = memory_unit(spec.memory_width, spec.memory_resolution)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return copies_module(key, spec.memory_copies, 1000)


@dataclass(frozen=True)
class Probe:
    """The reference in the backend's portable form: a compute-bound and a memory-bound model, timed in the
    same interleaved rounds as every block and network; the reference time is their geometric mean."""

    compute: Any
    memory: Any
    memory_shape: tuple[int, ...] = MEMORY_PROBE_SHAPE
    compute_shape: tuple[int, ...] = PROBE_SHAPE


def portable_probe(backend: "Backend", spec: ProbeSpec = PROBE_V2) -> Probe:
    """Export (or prepare) both halves of the reference probe ``spec`` for ``backend`` (once per
    build/validation; default probe/2). A table's own probe is ``spec_of(table.probe)``
    (:func:`nas.latency.probe_spec.spec_of`)."""
    return Probe(compute=backend.portable(reference_probe(), input_shape=spec.compute_shape),
                 memory=backend.portable(memory_probe(spec), input_shape=spec.memory_shape),
                 memory_shape=spec.memory_shape, compute_shape=spec.compute_shape)


class Timeline:
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


def rescaled(raw_ms: float, ratio: float | None, t: float, *, timeline: Timeline, ref: float | None,
              mode: str, window_s: float) -> float:
    """A time measured at ``t`` expressed at the reference speed (probe time ``ref``)."""
    if not ref or mode == "none":
        return raw_ms
    if mode == "paired" and ratio:
        return ratio * ref
    around = timeline.around(t, window_s)
    return raw_ms * ref / around if around else raw_ms


def paired(backend: "Backend", probe: Any, model: Any, input_shape: tuple[int, ...],
           settings: MeasureSettings) -> tuple[Measurement, float, float]:
    """Time ``model`` in interleaved rounds with the probe (a :class:`Probe`, or one portable model).

    Returns:
        (measurement of the model, probe median ms, block/probe ratio = median of the per-round ratios). With a
        :class:`Probe`, the probe's time is the geometric mean of its halves, per round and overall. The
        measurement's ``flagged`` is recomputed from the spread of the per-round ratios (the quantity the
        table uses), not of the raw times, which a busy machine widens on both sides of the ratio alike.
    """
    return paired_many(backend, probe, [model], [input_shape], settings)[0]


def paired_many(backend: "Backend", probe: Any, models: Sequence[Any], input_shapes: Sequence[tuple[int, ...]],
                settings: MeasureSettings) -> list[tuple[Measurement, float, float]]:
    """:func:`paired` for several models in one call: the probe is timed once per round, and each model's
    round ``k`` is divided by the probe's round ``k``. A build sends a group of blocks this way, so the
    probe's cost is shared (issue 15: one probe per tiny block was ~80 % of each request).

    Returns:
        One ``(measurement, probe median ms, ratio)`` per model, in order.
    """
    shapes = [tuple(s) for s in input_shapes]
    if isinstance(probe, Probe):
        mc, mm, *mbs = backend.measure_many([probe.compute, probe.memory, *models],
                                            input_shapes=[probe.compute_shape, probe.memory_shape, *shapes],
                                            settings=settings)
        rounds = tuple(math.sqrt(c * m) for c, m in zip(mc.round_medians_ms, mm.round_medians_ms))
        mp = replace(mc, median_ms=math.sqrt(mc.median_ms * mm.median_ms), round_medians_ms=rounds)
    else:
        mp, *mbs = backend.measure_many([probe, *models], input_shapes=[PROBE_SHAPE, *shapes], settings=settings)
    return [_ratio_of(mb, mp, settings) for mb in mbs]


def _ratio_of(mb: Measurement, mp: Measurement, settings: MeasureSettings) -> tuple[Measurement, float, float]:
    if mb.round_medians_ms and len(mb.round_medians_ms) == len(mp.round_medians_ms):
        ratios = sorted(b / p for b, p in zip(mb.round_medians_ms, mp.round_medians_ms) if p > 0)
        ratio = statistics.median(ratios)
        q1, q3 = ratios[len(ratios) // 4], ratios[(3 * len(ratios)) // 4]
        flagged = len(ratios) >= 4 and 100.0 * (q3 - q1) / ratio > settings.max_spread_pct
    else:  # a backend that reports no rounds
        ratio, flagged = mb.median_ms / mp.median_ms, mb.flagged
    return replace(mb, flagged=flagged), mp.median_ms, ratio
