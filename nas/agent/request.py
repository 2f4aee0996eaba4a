"""What an incoming measurement request's JSON metadata may ask for, against the agent's limits and this
machine (models, shapes, settings, device, threads). The models themselves are checked by
:mod:`nas.agent.checks`.

Parsing only: nothing of the request is executed here. The server (:mod:`nas.agent.server`) answers 400 with
the message of any :class:`~nas.errors.AgentError` raised here.
"""

from __future__ import annotations

import math
import platform
from dataclasses import dataclass
from typing import Any

from nas.agent.protocol import BYTES, DEVICE, INPUT_SHAPE, MEASURE_HEADER, MODELS, SETTINGS, THREADS, AgentLimits
from nas.backends.base import MeasureSettings
from nas.backends.host import is_arm, usable_cpus
from nas.errors import AgentError, NasError

__all__ = ["MAX_INPUT_ELEMENTS", "MAX_MODELS", "MAX_RETRIES", "MAX_ROUNDS", "MeasureRequest", "check_device_threads",
           "parse_request"]

MAX_RETRIES = 5  # MeasureSettings.retries cap: each retry re-runs every timed round
MAX_ROUNDS = 100  # MeasureSettings.rounds cap: the table asks for 5; more only adds per-round overhead
MAX_MODELS = 32  # AgentLimits.max_models's default (a build sends the probe's 2 halves + a group of blocks)
MAX_INPUT_ELEMENTS = 1 << 26  # 64 M floats = 256 MiB of input: far beyond any image batch, short of exhausting a board
MAX_DIM = 65536  # largest accepted input dimension (batch, channels or pixels)

@dataclass(frozen=True)
class MeasureRequest:
    """A checked measurement request (everything but the model bytes).

    Attributes:
        input_shapes: one full ``(N, C, H, W)`` shape per model.
        sizes: each model's length in bytes, in body order.
    """

    input_shapes: tuple[tuple[int, int, int, int], ...]
    sizes: tuple[int, ...]
    settings: MeasureSettings
    threads: int
    device: str

    def split(self, body: bytes) -> list[bytes]:
        """The body cut into one ONNX model per entry of ``sizes``."""
        out, at = [], 0
        for n in self.sizes:
            out.append(body[at:at + n])
            at += n
        return out


def _setting_types() -> dict[str, tuple[type, ...]]:
    """JSON types accepted for each :class:`MeasureSettings` field, from the type of its default (so a
    field added there is accepted here without a second list to keep in step)."""
    out: dict[str, tuple[type, ...]] = {}
    for name, f in MeasureSettings.__dataclass_fields__.items():
        d = f.default
        out[name] = (bool,) if isinstance(d, bool) else (int, float) if isinstance(d, float) else (type(d),)
    return out


def check_device_threads(device: Any, threads: Any, batch: Any = 1, *, measuring: bool = True
                         ) -> tuple[str, int, int]:
    """Check a request's device, threads and batch against this machine.

    Args:
        device, threads, batch: as the client sent them (any JSON type).
        measuring: False for identity requests, which are answered for any device (the host refuses a
            non-ARM agent with its own message).

    Returns:
        ``(device, threads, batch)``.

    Raises:
        AgentError: not ``cpu``/``arm``, ``arm`` on a non-ARM machine, or threads/batch not an integer >= 1
            or more threads than usable cores (the field names it).
    """
    if device not in ("cpu", "arm"):
        raise AgentError(f"device={device!r}: the agent measures with onnxruntime's CPU provider; use cpu or arm",
                         field="device")
    arch = platform.machine().lower()
    if measuring and device == "arm" and not is_arm(arch):
        raise AgentError(f"device='arm': this agent runs on {arch}, not ARM; ask for device 'cpu' to measure here",
                         field="device")
    for name, v in (("threads", threads), ("batch", batch)):
        if type(v) is not int or v < 1:  # noqa: E721 - bool is an int subclass and must not pass
            raise AgentError(f"{name}={v!r}: must be an integer >= 1", field=name)
    cpus = usable_cpus()
    if threads > cpus:
        raise AgentError(f"threads={threads}: this machine has {cpus} usable cores", field="threads")
    return device, threads, batch


def _check_shape(shape: Any, where: str) -> tuple[int, int, int, int]:
    if (not isinstance(shape, list) or len(shape) != 4
            or not all(type(s) is int and 1 <= s <= MAX_DIM for s in shape)):  # noqa: E721
        raise AgentError(f"{where}.{INPUT_SHAPE}={shape!r}: expected [N, C, H, W], each an integer in 1..{MAX_DIM}",
                         field=INPUT_SHAPE)
    elements = shape[0] * shape[1] * shape[2] * shape[3]
    if elements > MAX_INPUT_ELEMENTS:
        raise AgentError(f"{where}.{INPUT_SHAPE}={shape}: {elements} elements, the agent accepts at most "
                         f"{MAX_INPUT_ELEMENTS}", field=INPUT_SHAPE)
    return shape[0], shape[1], shape[2], shape[3]


def _check_models(models: Any, content_length: int | None,
                  max_models: int = MAX_MODELS) -> tuple[list[tuple[int, int, int, int]], list[int]]:
    """The models' input shapes and byte sizes; the sizes must add up to the body's declared length."""
    if not isinstance(models, list) or not 1 <= len(models) <= max_models:
        raise AgentError(f"{MODELS}: expected a list of 1..{max_models} {{{INPUT_SHAPE}, {BYTES}}} objects",
                         field=MODELS)
    shapes, sizes = [], []
    for i, m in enumerate(models):
        if not isinstance(m, dict) or type(m.get(BYTES)) is not int or m[BYTES] < 1:  # noqa: E721
            raise AgentError(f"{MODELS}[{i}]: expected {{\"{INPUT_SHAPE}\": [N, C, H, W], \"{BYTES}\": n >= 1}}",
                             field=MODELS)
        shapes.append(_check_shape(m.get(INPUT_SHAPE), f"{MODELS}[{i}]"))
        sizes.append(m[BYTES])
    if content_length is not None and sum(sizes) != content_length:
        raise AgentError(f"{MODELS}: sizes add up to {sum(sizes)} bytes, Content-Length is {content_length}",
                         field=MODELS)
    return shapes, sizes


def _check_settings(raw: Any, limits: AgentLimits) -> MeasureSettings:
    """The request's :class:`MeasureSettings`: known fields of the right JSON types, within the agent's caps."""
    if not isinstance(raw, dict):
        raise AgentError(f"{SETTINGS}: expected a JSON object of MeasureSettings fields", field=SETTINGS)
    known = _setting_types()
    for k, v in raw.items():
        types = known.get(k)
        if types is None:
            raise AgentError(f"{SETTINGS}.{k}: unknown field (is the host's nas newer? update nas on the board); "
                             f"known: {sorted(known)}", field=SETTINGS)
        if not isinstance(v, types) or (bool not in types and isinstance(v, bool)):
            raise AgentError(f"{SETTINGS}.{k}={v!r}: expected {' or '.join(t.__name__ for t in types)}",
                             field=SETTINGS)
        if isinstance(v, float) and not math.isfinite(v):  # NaN would pass every "<= cap" comparison
            raise AgentError(f"{SETTINGS}.{k}={v!r}: must be a finite number", field=SETTINGS)
    try:
        settings = MeasureSettings.from_dict(raw)
    except NasError as e:
        raise AgentError(str(e), field=SETTINGS) from None
    caps = {"max_repeats": limits.max_repeats, "min_repeats": limits.max_repeats, "warmup": limits.max_repeats,
            "rewarm": limits.max_repeats, "retries": MAX_RETRIES, "rounds": MAX_ROUNDS}
    for name, cap in caps.items():
        if getattr(settings, name) > cap:
            which = " (the agent's max_repeats limit)" if cap == limits.max_repeats else ""
            raise AgentError(f"{SETTINGS}.{name}={getattr(settings, name)}: beyond this agent's cap of {cap}{which}",
                             field=SETTINGS)
    if settings.min_time_s > limits.max_seconds:
        raise AgentError(f"{SETTINGS}.min_time_s={settings.min_time_s}: beyond this agent's max_seconds limit "
                         f"{limits.max_seconds:g}", field=SETTINGS)
    return settings


def parse_request(meta: Any, *, limits: AgentLimits, content_length: int | None = None) -> MeasureRequest:
    """Check the JSON metadata of a measurement request against the agent's limits.

    Args:
        meta: the decoded :data:`~nas.agent.protocol.MEASURE_HEADER` header.
        limits: the agent's caps.
        content_length: the body's declared length; the models' sizes must add up to it.

    Returns:
        The checked :class:`MeasureRequest`.

    Raises:
        AgentError: a field is missing, of the wrong type, or beyond a limit (the message and ``field`` name it).
    """
    if not isinstance(meta, dict):
        raise AgentError(f"{MEASURE_HEADER}: expected a JSON object")
    shapes, sizes = _check_models(meta.get(MODELS), content_length, limits.max_models)
    device, threads, _ = check_device_threads(meta.get(DEVICE, "cpu"), meta.get(THREADS, 1))
    settings = _check_settings(meta.get(SETTINGS) or {}, limits)
    return MeasureRequest(input_shapes=tuple(shapes), sizes=tuple(sizes), settings=settings, threads=threads,
                          device=device)
