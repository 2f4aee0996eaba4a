"""The one measurement interface every backend implements: settings, results, and the timing protocol.

A :class:`Backend` times a whole ``nn.Module`` (or serialized ONNX bytes) on one device with one
setting (threads, batch) and returns a :class:`Measurement`. Backends that run locally implement
:meth:`Backend.prepare`, which returns a :class:`Runner`; the base class then provides the
measurement protocol (warm-up, adaptive repeat count, interleaved rounds, median, dispersion,
re-measurement of noisy results) once for all of them. A backend that cannot prepare a runner
locally (the board agent's ``remote`` backend) overrides :meth:`Backend.measure` instead.

The registry that picks a backend is :mod:`nas.backends.registry`; host facts are :mod:`nas.backends.host`.
"""

from __future__ import annotations

import contextlib
import os
import statistics
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, Iterator, Literal, Protocol, Sequence

from nas.errors import MeasurementError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    import torch.nn as nn

__all__ = ["Backend", "DEVICES", "Device", "MeasureSettings", "Measurement", "Runner", "summarize"]

Device = Literal["cpu", "gpu", "arm"]
DEVICES: tuple[str, ...] = ("cpu", "gpu", "arm")


# --------------------------------------------------------------------------- settings and results
@dataclass(frozen=True)
class MeasureSettings:
    """How one model is timed. Recorded verbatim in every latency table.

    The timed run count is adaptive: after warm-up, runs continue until ``min_time_s`` of timed runs
    *and* ``min_repeats`` runs are done (at most ``max_repeats``), split over ``rounds`` rounds.
    With several models (:meth:`Backend.measure_many`) the rounds are interleaved model by model, so
    a slow phase of the machine hits all of them alike.
    """

    warmup: int = 10  # untimed runs first: ORT allocates its arena and cuDNN picks algorithms here
    min_repeats: int = 30  # at least this many timed runs, however slow the model
    max_repeats: int = 400  # at most this many timed runs, however fast the model
    min_time_s: float = 0.25  # timed runs per model continue until this much time (s) has been spent
    rounds: int = 5  # interleaved rounds per model; each round starts with `rewarm` untimed runs
    rewarm: int = 2  # untimed runs after switching models: the first run after a switch has cold caches
    max_spread_pct: float = 8.0  # re-measure a result whose interquartile range exceeds this % of its median
    retries: int = 2  # re-measurements of a noisy result before it is kept and flagged
    pin_cpu: bool = True  # threads == 1 only: pin the process to one core (no migration, stable caches)
    # "thread": CPU time of the measuring thread (threads == 1 on CPU only: excludes preemption by other
    # processes, which otherwise inflates long runs more than short ones); "wall": elapsed time;
    # "auto": thread where it is valid, else wall.
    clock: Literal["auto", "wall", "thread"] = "auto"

    def __post_init__(self) -> None:
        for name in ("warmup", "rewarm", "retries"):
            if getattr(self, name) < 0:
                raise UsageError(f"MeasureSettings.{name}={getattr(self, name)}: must be >= 0", field=name)
        for name in ("min_repeats", "max_repeats", "rounds"):
            if getattr(self, name) < 1:
                raise UsageError(f"MeasureSettings.{name}={getattr(self, name)}: must be >= 1", field=name)
        if self.max_repeats < self.min_repeats:
            raise UsageError(f"MeasureSettings.max_repeats={self.max_repeats}: must be >= min_repeats "
                             f"({self.min_repeats})", field="max_repeats")
        if self.clock not in ("auto", "wall", "thread"):
            raise UsageError(f"MeasureSettings.clock={self.clock!r}: choose auto, wall or thread", field="clock")
        if self.min_time_s < 0 or self.max_spread_pct <= 0:
            raise UsageError("MeasureSettings.min_time_s must be >= 0 and max_spread_pct > 0",
                             field="min_time_s" if self.min_time_s < 0 else "max_spread_pct")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MeasureSettings":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass(frozen=True)
class Measurement:
    """One timed model.

    Attributes:
        median_ms: median of all timed runs, milliseconds per call (one batch).
        spread_pct: interquartile range of the timed runs as a % of the median.
        n: number of timed runs.
        round_medians_ms: median of each interleaved round (drift shows up here, not in ``spread_pct``).
        min_ms, mean_ms: of the timed runs.
        flagged: the spread stayed above ``max_spread_pct`` after all retries.
        attempts: 1 + the number of re-measurements.
    """

    median_ms: float
    spread_pct: float
    n: int
    round_medians_ms: tuple[float, ...] = ()
    min_ms: float = 0.0
    mean_ms: float = 0.0
    flagged: bool = False
    attempts: int = 1

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["round_medians_ms"] = list(self.round_medians_ms)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Measurement":
        known = {f for f in cls.__dataclass_fields__}
        d = {k: v for k, v in d.items() if k in known}
        d["round_medians_ms"] = tuple(d.get("round_medians_ms", ()))
        return cls(**d)


def _quantile(sorted_xs: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of an already sorted sequence."""
    if not sorted_xs:
        return float("nan")
    pos = (len(sorted_xs) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def summarize(rounds_ms: Sequence[Sequence[float]], *, flagged: bool = False, attempts: int = 1) -> Measurement:
    """Turn per-round lists of run times (ms) into a :class:`Measurement`."""
    samples = sorted(x for r in rounds_ms for x in r)
    if not samples:
        raise MeasurementError("no timed runs to summarize")
    med = _quantile(samples, 0.5)
    iqr = _quantile(samples, 0.75) - _quantile(samples, 0.25)
    return Measurement(
        median_ms=med,
        spread_pct=100.0 * iqr / med if med > 0 else 0.0,
        n=len(samples),
        round_medians_ms=tuple(statistics.median(r) for r in rounds_ms if len(r)),
        min_ms=samples[0],
        mean_ms=sum(samples) / len(samples),
        flagged=flagged,
        attempts=attempts,
    )


# --------------------------------------------------------------------------- the interface
class Runner(Protocol):
    """A model made ready to run on a backend (session created, input allocated)."""

    def run(self, n: int) -> list[float]:
        """Run the model ``n`` times back to back; return each run's time in milliseconds."""
        ...

    def close(self) -> None:
        ...


class Backend(ABC):
    """Times models on one device with fixed threads and batch.

    Attributes:
        name: registry name (``onnxruntime``, ``torch-cuda``, ...).
        device: ``cpu``, ``gpu`` or ``arm``.
        threads: intra-op threads (CPU backends); part of a latency table's identity.
        batch: batch size prepended to 3-d input shapes; part of a latency table's identity.
    """

    name: str = "abstract"

    def __init__(self, *, device: Device, threads: int, batch: int) -> None:
        if device not in DEVICES:
            raise UsageError(f"device {device!r}: choose one of {list(DEVICES)}", field="device")
        if threads < 1:
            raise UsageError(f"threads {threads}: must be >= 1", field="threads")
        if batch < 1:
            raise UsageError(f"batch {batch}: must be >= 1", field="batch")
        self.device = device
        self.threads = threads
        self.batch = batch

    # -- what every backend must say about itself
    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """Everything that makes a measurement on this backend comparable: device kind, CPU/GPU model,
        OS/arch, runtime and version, execution provider, threads, batch, torch version."""

    # -- local backends implement this; the base class does the protocol
    def prepare(self, model: "nn.Module | bytes", *, input_shape: tuple[int, ...],
                settings: MeasureSettings) -> Runner:
        """Make ``model`` ready to run with an input of ``input_shape`` (full NCHW shape), timing runs
        with the clock :meth:`clock_for` picks.

        Raises:
            MeasurementError: the model cannot be exported or loaded by this runtime.
        """
        raise NotImplementedError(f"backend {self.name!r} measures through measure(), not prepare()")

    def portable(self, model: "nn.Module | bytes", *, input_shape: Sequence[int]) -> "nn.Module | bytes":
        """The form of ``model`` this backend measures repeatedly without redoing work (ONNX bytes for
        onnxruntime: export once, measure many times). The default is the model itself."""
        return model

    def clock_for(self, settings: MeasureSettings) -> Literal["wall", "thread"]:
        """The clock actually used: thread CPU time only when one thread does all the work on a CPU."""
        if settings.clock == "auto":
            return "thread" if (self.threads == 1 and self.device != "gpu") else "wall"
        if settings.clock == "thread" and (self.threads != 1 or self.device == "gpu"):
            raise UsageError("clock='thread' needs threads=1 on a CPU device; use 'wall'", field="clock")
        return settings.clock

    def full_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """``(C, H, W)`` gets this backend's batch prepended; a 4-d shape is taken as is."""
        shape = tuple(int(s) for s in input_shape)
        if len(shape) == 3:
            return (self.batch, *shape)
        if len(shape) == 4:
            return shape
        raise UsageError(f"input_shape={shape}: expected (C, H, W) or (N, C, H, W)", field="input_shape")

    def measure(self, model: "nn.Module | bytes", *, input_shape: Sequence[int],
                settings: MeasureSettings | None = None) -> Measurement:
        """Time one model (``nn.Module`` in eval mode, or ONNX bytes).

        Args:
            model: the network or block; modules are exported/compiled by the backend.
            input_shape: ``(C, H, W)`` (the backend's batch is prepended) or ``(N, C, H, W)``.
            settings: the protocol; defaults to :class:`MeasureSettings()`.

        Returns:
            A :class:`Measurement` with the median time per call in ms.

        Raises:
            MeasurementError: the model could not be run.
        """
        return self.measure_many([model], input_shapes=[input_shape], settings=settings)[0]

    def measure_many(self, models: Sequence["nn.Module | bytes"], *, input_shapes: Sequence[Sequence[int]],
                     settings: MeasureSettings | None = None) -> list[Measurement]:
        """Time several models with interleaved rounds (model 1, model 2, ..., model 1, ...).

        Interleaving makes the models' ratios robust to the machine's speed drifting during the
        measurement; the table builder times every block next to a fixed reference probe this way.
        A result whose spread exceeds ``settings.max_spread_pct`` is re-measured (with the others)
        up to ``settings.retries`` times and flagged if it stays noisy; the least noisy attempt of
        each model is kept.

        Raises:
            MeasurementError: a model could not be run.
        """
        settings = settings or MeasureSettings()
        if len(models) != len(input_shapes):
            raise UsageError("measure_many: one input shape per model is required", field="input_shapes")
        if type(self).prepare is Backend.prepare:  # remote-style backend: no local runner
            return [self.measure(m, input_shape=s, settings=settings) for m, s in zip(models, input_shapes)]
        runners = [self.prepare(m, input_shape=self.full_shape(s), settings=settings)
                   for m, s in zip(models, input_shapes)]
        try:
            with self._pinned(settings):
                return _interleaved(runners, settings)
        finally:
            for r in runners:
                with contextlib.suppress(Exception):
                    r.close()

    @contextlib.contextmanager
    def _pinned(self, settings: MeasureSettings) -> Iterator[None]:
        """Pin this process to one core while timing single-threaded CPU work; restore afterwards."""
        if not (settings.pin_cpu and self.threads == 1 and self.device != "gpu"
                and hasattr(os, "sched_setaffinity")):
            yield
            return
        before = os.sched_getaffinity(0)
        # The highest-numbered allowed core: core 0 usually takes most interrupts on a VM.
        target = {max(before)}
        try:
            os.sched_setaffinity(0, target)
        except OSError:  # not permitted (container policy): measure unpinned
            yield
            return
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, before)

    def close(self) -> None:
        """Release device resources (optional)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} device={self.device} threads={self.threads} batch={self.batch}>"


def _interleaved(runners: Sequence[Runner], s: MeasureSettings) -> list[Measurement]:
    """The measurement protocol over prepared runners (see :class:`MeasureSettings`).

    Every attempt times all models in the same interleaved rounds, so round ``k`` of one model is always
    next in time to round ``k`` of the others (callers pair them, e.g. block / probe). Of the attempts, the
    one whose noisiest model is least noisy is kept.
    """
    est_ms = []
    for r in runners:
        warm = r.run(max(s.warmup, 1))
        # Later warm-up runs are the better estimate of the steady state.
        est_ms.append(max(statistics.median(warm[len(warm) // 2:]), 1e-4))
    per_model = [
        int(min(s.max_repeats, max(s.min_repeats, s.rounds, round(1000.0 * s.min_time_s / e)))) for e in est_ms
    ]
    best: list[Measurement] | None = None
    for attempt in range(1, s.retries + 2):  # bounded: 1 + retries attempts
        rounds: list[list[list[float]]] = [[] for _ in runners]
        for k in range(s.rounds):
            for i, r in enumerate(runners):
                n = max(1, per_model[i] // s.rounds + (1 if k < per_model[i] % s.rounds else 0))
                if s.rewarm and len(runners) > 1:
                    r.run(s.rewarm)
                rounds[i].append(r.run(n))
        result = [summarize(rs, attempts=attempt) for rs in rounds]
        if best is None or max(m.spread_pct for m in result) <= max(m.spread_pct for m in best):
            best = result
        if all(m.spread_pct <= s.max_spread_pct for m in result):
            break
    assert best is not None
    return [replace(m, flagged=m.spread_pct > s.max_spread_pct, attempts=attempt) for m in best]
