"""Running a checked request's models with onnxruntime on this machine, under the agent's time cap, and the
agent's identity (what the host's latency table records about the board).

The timing is the onnxruntime CPU backend's own protocol (:class:`~nas.backends.onnxruntime.OnnxRuntimeBackend`:
same session options, clock, interleaved rounds); only a deadline, checked between runs, is added. The agent
runs it in a child process that it kills past the deadline (:mod:`nas.agent.worker`), one measurement at a
time (the server holds a lock).
"""

from __future__ import annotations

import platform
import time
from typing import Any, Sequence

from nas.agent.checks import check_models
from nas.agent.request import MeasureRequest
from nas.agent.protocol import PROTOCOL, AgentLimits
from nas.backends.base import MeasureSettings, Measurement
from nas.backends.host import usable_cpus
from nas.backends.onnxruntime import OnnxRuntimeBackend
from nas.errors import MeasurementError

__all__ = ["CHECK_INTERVAL_S", "agent_identity", "measure_request", "time_models"]

CHECK_INTERVAL_S = 0.1  # the time cap is checked between chunks of runs this long (s)
MIN_PER_RUN_S = 1e-7  # floor of the per-run estimate, so a chunk size is always finite


def agent_identity(*, device: str, threads: int, batch: int, label: str | None = None) -> dict[str, Any]:
    """This machine's backend identity, as a latency table records it, plus what only the agent knows.

    ``OnnxRuntimeBackend.identity()`` (device, CPU model, cores, OS, arch, Python, runtime + version,
    provider, threads, batch) plus ``providers_available``, ``usable_cpus``, ``node`` (host name),
    ``board`` (the agent's ``label``) and ``agent`` (protocol and nas version).

    Args:
        device: the device kind the client asked for (``cpu`` or ``arm``).
        threads, batch: as the client asked (already checked).
        label: the board's name, if the agent was given one.

    Returns:
        The identity dict sent under ``identity``.
    """
    import onnxruntime as ort

    from nas import __version__

    ident = OnnxRuntimeBackend(device=device, threads=threads, batch=batch).identity()  # type: ignore[arg-type]
    ident.update(providers_available=list(ort.get_available_providers()), usable_cpus=usable_cpus(),
                 node=platform.node(), agent={"protocol": PROTOCOL, "nas_version": __version__})
    if label:
        ident["board"] = label
    return ident


class _DeadlineRunner:
    """Wraps an ORT runner; stops with :class:`MeasurementError` once the request's time cap has passed.

    The runs are done in chunks of about ``CHECK_INTERVAL_S``; each run is still timed on its own by the
    wrapped runner, so the recorded times are those of a local measurement.
    """

    def __init__(self, inner: Any, deadline: float, max_seconds: float) -> None:
        self.inner, self.deadline, self.max_seconds = inner, deadline, max_seconds
        self.per_run_s = 0.0

    def run(self, n: int) -> list[float]:
        out: list[float] = []
        while len(out) < n:  # bounded: every pass runs >= 1 model call or raises
            if time.monotonic() > self.deadline:
                raise MeasurementError(f"measurement ran past this agent's max_seconds limit {self.max_seconds:g} s; "
                                       "ask for fewer repeats or a shorter min_time_s", field="max_seconds")
            # One run first (a model may take seconds), then chunks of about CHECK_INTERVAL_S.
            chunk = 1 if self.per_run_s <= 0 else max(1, min(n - len(out), int(CHECK_INTERVAL_S / self.per_run_s)))
            t0 = time.monotonic()
            out.extend(self.inner.run(chunk))
            self.per_run_s = max((time.monotonic() - t0) / chunk, MIN_PER_RUN_S)
        return out

    def close(self) -> None:
        self.inner.close()


class _CappedOrtBackend(OnnxRuntimeBackend):
    """The onnxruntime CPU backend (same session options, protocol and clock) with a wall-time cap."""

    def __init__(self, *, device: Any, threads: int, batch: int, deadline: float, max_seconds: float) -> None:
        super().__init__(device=device, threads=threads, batch=batch)
        self.deadline, self.max_seconds = deadline, max_seconds

    def prepare(self, model: Any, *, input_shape: tuple[int, ...], settings: MeasureSettings) -> Any:
        if time.monotonic() > self.deadline:
            raise MeasurementError(f"measurement ran past this agent's max_seconds limit {self.max_seconds:g} s",
                                   field="max_seconds")
        return _DeadlineRunner(super().prepare(model, input_shape=input_shape, settings=settings), self.deadline,
                               self.max_seconds)


def time_models(models: Sequence[bytes], *, input_shapes: Sequence[Sequence[int]], settings: MeasureSettings,
                threads: int, device: str, max_seconds: float) -> list[Measurement]:
    """Time checked models on this machine with the onnxruntime CPU backend's protocol (several models in
    interleaved rounds, as ``measure_many``), stopped between runs once ``max_seconds`` have passed.

    This is what the measuring process (:mod:`nas.agent.worker`) runs; it checks nothing.

    Raises:
        MeasurementError: onnxruntime could not load or run a model, or the time cap was reached (field
            ``max_seconds``).
    """
    shapes = [tuple(int(x) for x in s) for s in input_shapes]
    backend = _CappedOrtBackend(device=device, threads=threads, batch=shapes[0][0],
                                deadline=time.monotonic() + max_seconds, max_seconds=max_seconds)
    return backend.measure_many([bytes(m) for m in models], input_shapes=shapes, settings=settings)


def measure_request(models: Sequence[bytes], request: MeasureRequest, *, limits: AgentLimits) -> list[Measurement]:
    """Check and time models in this process (the agent itself times them in a killable child,
    :class:`nas.agent.worker.Worker`; this is the same without the child, for tests and tools).

    Args:
        models: the request's ONNX models, in body order.
        request: the checked request (:func:`nas.agent.checks.parse_request`).
        limits: the agent's caps (``max_seconds`` is the time cap, ``max_request_bytes`` sets the element cap).

    Returns:
        One :class:`Measurement` per model.

    Raises:
        AgentError: a model fails :func:`nas.agent.checks.check_models`.
        MeasurementError: onnxruntime could not load or run a model, or the time cap was reached (field
            ``max_seconds``).
    """
    check_models(models, request, limits=limits)
    return time_models(models, input_shapes=request.input_shapes, settings=request.settings, threads=request.threads,
                       device=request.device, max_seconds=limits.max_seconds)
