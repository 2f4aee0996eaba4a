"""Measurement backends: one interface (:class:`Backend`), a registry, and the built-in runtimes.

``get_backend("cpu", threads=1, batch=1)`` returns the onnxruntime CPU backend; ``"gpu"`` PyTorch on
CUDA (cuDNN benchmark, CUDA events); ``"arm"`` onnxruntime on an aarch64 host or a board agent
(``remote="host:port"``). Runtimes are imported only when a backend is created.
"""

from __future__ import annotations

from nas.backends.base import (
    Backend,
    BackendFactory,
    Device,
    MeasureSettings,
    Measurement,
    Runner,
    available_backends,
    get_backend,
    host_identity,
    register,
    summarize,
)

__all__ = [
    "Backend",
    "BackendFactory",
    "Device",
    "MeasureSettings",
    "Measurement",
    "Runner",
    "available_backends",
    "get_backend",
    "host_identity",
    "register",
    "summarize",
]
