"""The backend registry: names to factories, and :func:`get_backend`, which picks one for a device.

Built-in backends live in their own modules and register themselves when imported; :data:`_BUILTIN_MODULES`
only lets :func:`get_backend` import one on first use, so nothing heavy is imported before. Adding a backend
never touches the others::

    from nas.backends import register
    register("tensorrt", lambda *, device, threads, batch, remote, token: TensorRTBackend(...))
"""

from __future__ import annotations

import importlib
import platform
from typing import Protocol

from nas.backends.base import DEVICES, Backend, Device
from nas.backends.host import is_arm_host
from nas.errors import BackendUnavailableError, UsageError

__all__ = ["BackendFactory", "available_backends", "get_backend", "register"]


class BackendFactory(Protocol):
    def __call__(self, *, device: Device, threads: int, batch: int, remote: str | None,
                 token: str | None) -> Backend: ...


_REGISTRY: dict[str, BackendFactory] = {}

_BUILTIN_MODULES: dict[str, str] = {
    "onnxruntime": "nas.backends.onnxruntime",
    "torch-cuda": "nas.backends.cuda",
    "onnxruntime-cuda": "nas.backends.cuda",
    "remote": "nas.backends.remote",
}


def register(name: str, factory: BackendFactory) -> None:
    """Add a backend under ``name``.

    Args:
        name: the ``runtime`` name :func:`get_backend` will accept.
        factory: called with ``device, threads, batch, remote, token`` (keywords) to create the backend.

    Raises:
        ValueError: ``name`` is already registered (a registry refuses duplicates instead of replacing).
    """
    if name in _REGISTRY:
        raise ValueError(f"backend {name!r} is already registered")
    _REGISTRY[name] = factory


def _lookup(name: str) -> BackendFactory:
    if name not in _REGISTRY and name in _BUILTIN_MODULES:
        try:
            importlib.import_module(_BUILTIN_MODULES[name])
        except ModuleNotFoundError as e:
            if e.name == _BUILTIN_MODULES[name]:
                raise BackendUnavailableError(f"backend {name!r}: module {_BUILTIN_MODULES[name]} is not installed",
                                              field="runtime") from None
            raise BackendUnavailableError(f"backend {name!r}: needs Python package {e.name!r}; "
                                          f"install it with pip", field="runtime") from None
    if name not in _REGISTRY:
        raise BackendUnavailableError(f"runtime {name!r}: unknown backend; choose one of "
                                      f"{sorted(set(_REGISTRY) | set(_BUILTIN_MODULES))}", field="runtime")
    return _REGISTRY[name]


def available_backends() -> list[str]:
    """Names that :func:`get_backend` accepts as ``runtime`` (registered or built in).

    Returns:
        Sorted names; creating one may still raise :class:`BackendUnavailableError` on a machine without its
        device (CUDA) or runtime, and ``remote`` needs a board agent's address.
    """
    return sorted(set(_REGISTRY) | set(_BUILTIN_MODULES))


def _runtime_name(device: Device, *, remote: str | None, runtime: str | None) -> str:
    """Which registered backend measures on ``device`` (see :func:`get_backend`)."""
    if remote is not None:
        if runtime not in (None, "remote"):
            raise UsageError(f"runtime {runtime}: a board agent (remote) measures with its own onnxruntime; "
                             "give either a runtime or a remote agent, not both", field="runtime")
        return "remote"
    if runtime is not None:
        return runtime
    if device == "gpu":
        return "torch-cuda"
    if device == "arm" and not is_arm_host():
        raise BackendUnavailableError(
            f"device arm: this host is {platform.machine()}, not ARM; run on the board or measure through a "
            "board agent (remote HOST:PORT of `nas agent` on the board)", field="device")
    return "onnxruntime"


def get_backend(device: Device, *, threads: int = 1, batch: int = 1, remote: str | None = None,
                token: str | None = None, runtime: str | None = None) -> Backend:
    """Return the backend that measures on ``device``.

    Args:
        device: ``cpu`` (onnxruntime CPU EP), ``gpu`` (PyTorch CUDA with cuDNN benchmark; or
            ``runtime="onnxruntime-cuda"``), ``arm`` (onnxruntime CPU EP on an aarch64 host, or a
            board agent at ``remote``).
        threads: intra-op threads (the paper measured ARM single-threaded).
        batch: batch size prepended to ``(C, H, W)`` input shapes.
        remote: ``host:port`` of a board agent; measurement then happens there.
        token: the board agent's shared secret.
        runtime: a registered backend name, overriding the device's default.

    Returns:
        A ready :class:`Backend`.

    Raises:
        BackendUnavailableError: the device is not here (no CUDA, not an ARM host and no ``remote``), or an
            unknown ``runtime`` (field ``runtime``).
        UsageError: bad ``device``, ``threads`` or ``batch`` (the field names it), or ``runtime`` with ``remote``.
    """
    if device not in DEVICES:
        raise UsageError(f"device {device!r}: choose one of {list(DEVICES)}", field="device")
    name = _runtime_name(device, remote=remote, runtime=runtime)
    return _lookup(name)(device=device, threads=threads, batch=batch, remote=remote, token=token)
