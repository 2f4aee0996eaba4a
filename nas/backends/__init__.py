"""Measurement backends: one interface (:class:`Backend`), a registry, and the built-in runtimes.

``get_backend("cpu", threads=1, batch=1)`` returns the onnxruntime CPU backend; ``"gpu"`` PyTorch on
CUDA (cuDNN benchmark, CUDA events); ``"arm"`` onnxruntime on an aarch64 host or a board agent
(``remote="host:port"``). Runtimes are imported only when a backend is created.

Modules: :mod:`~nas.backends.base` (the interface, settings, results, timing protocol),
:mod:`~nas.backends.registry` (names to factories), :mod:`~nas.backends.host` (the machine's facts),
:mod:`~nas.backends.identity` (which identities are comparable), and one module per runtime:
:mod:`~nas.backends.onnxruntime`, :mod:`~nas.backends.cuda`, :mod:`~nas.backends.remote` (the board agent's client).
"""

from __future__ import annotations

from nas.backends.base import Backend, Device, MeasureSettings, Measurement, Runner, summarize
from nas.backends.host import host_identity
from nas.backends.registry import BackendFactory, available_backends, get_backend, register

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
