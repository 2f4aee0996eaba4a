"""The agent's wire format, shared by the server (:mod:`nas.agent.server`) and its client
(:mod:`nas.backends.remote`): paths, header and JSON field names, the limits' names, where the token lives.

Transport: HTTP/1.0 from the standard library. JSON for metadata and answers, the raw ONNX bytes as the
request body. Every request carries ``Authorization: Bearer <token>``.

* ``GET /v1/identity?device=arm&threads=1&batch=1`` -> ``{"identity", "limits", "stats", "protocol"}``
* ``POST /v1/measure`` with header ``X-Nas-Measure: {"models": [{"input_shape": [N, C, H, W], "bytes": n}, ...],
  "settings": {...}, "threads": 1, "device": "arm"}`` and the models' ONNX bytes, concatenated in that order, as
  the body -> ``{"measurements": [{...}, ...], "seconds", "waited_s"}``.
* errors: ``{"error": "<one line>"}`` with 400 (bad request, refused model), 401 (token), 408 (body too slow),
  411/413 (size), 422 (the model did not run, or ran past the time cap), 503 (busy: retry later).

This module imports nothing of ``nas`` but :mod:`nas.errors` (through :class:`AgentLimits`), so the client
never loads the server.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from nas.errors import UsageError

__all__ = [
    "AgentLimits",
    "DEFAULT_PORT",
    "IDENTITY_PATH",
    "MEASURE_HEADER",
    "MEASURE_PATH",
    "PROTOCOL",
    "TOKEN_ENV",
    "default_token_path",
    "identity_query",
    "measure_meta",
]

PROTOCOL = 1  # bumped when a request or answer changes incompatibly; reported in every identity answer
DEFAULT_PORT = 8765
IDENTITY_PATH = "/v1/identity"
MEASURE_PATH = "/v1/measure"
MEASURE_HEADER = "X-Nas-Measure"  # the measurement request's JSON metadata (the body is the models' bytes)
TOKEN_ENV = "NAS_AGENT_TOKEN"  # the host reads the agent's token from here when none is given

# Fields of the measurement request (in MEASURE_HEADER) and of the answers.
MODELS, INPUT_SHAPE, BYTES, SETTINGS, THREADS, DEVICE = "models", "input_shape", "bytes", "settings", "threads", "device"
MEASUREMENTS, SECONDS, WAITED_S = "measurements", "seconds", "waited_s"
IDENTITY, LIMITS, STATS, ERROR = "identity", "limits", "stats", "error"
STAT_MEASUREMENTS = "measurements"  # in ``stats``: measurement requests answered since the agent started
# Keys of ``limits`` in the identity answer: the fields of AgentLimits (tests/test_agent.py checks they agree).
LIMIT_REQUEST_BYTES, LIMIT_REPEATS, LIMIT_SECONDS = "max_request_bytes", "max_repeats", "max_seconds"
LIMIT_MEMORY_BYTES, LIMIT_HEADER_SECONDS = "max_memory_bytes", "header_seconds"
LIMIT_MODELS = "max_models"
OLD_AGENT_MAX_MODELS = 8  # agents that do not report max_models took at most 8 models a request
MIN_MEMORY_BYTES = 16 * 2**20  # below this onnxruntime cannot create a session for the smallest model


@dataclass(frozen=True)
class AgentLimits:
    """What one request may ask of the agent (sent to the client under ``limits``, field for field).

    Attributes:
        max_request_bytes: largest accepted body (the ONNX models), checked from ``Content-Length``
            before the body is read.
        max_repeats: cap on ``settings.max_repeats`` (timed runs per attempt) and ``settings.warmup``.
        max_seconds: cap on one measurement's wall time (session creation, warm-up, every attempt: the
            measuring process is killed past it), on how long a request waits for the measurement lock before
            it is answered 503 (busy), and on how long its body may take to arrive.
        max_memory_bytes: address space the measuring process may add to its size once onnxruntime is
            imported (``RLIMIT_AS``); a model needing more is answered 422.
        header_seconds: time a connection has to send its request line and headers (a client that trickles
            them is dropped, so slow connections cannot hold the agent's few connection slots).
        max_models: models in one request (a build sends the probe's two halves and a group of blocks).

    Raises:
        UsageError: a limit below its minimum (the field names it).
    """

    max_request_bytes: int = 128 * 1024 * 1024  # a cold-weights entry: 32 MiB block + 15 MiB probe
    max_repeats: int = 1000  # the table's block protocol asks for <= 400
    max_seconds: float = 120.0  # a whole 224 px network on a Pi 4 takes a few seconds with the table's protocol
    # 2 GiB of address space beyond the measuring process's idle ~200 MiB. Measured here: both probe halves
    # with a 224 px 2x-SE ShuffleNet (a 46 MiB request) grow it by 155 MiB; a full 128 MiB request needs
    # about 3x that, and the tensor-element cap (128 Mi elements) is 512 MiB as float32: 2 GiB covers both.
    max_memory_bytes: int = 2 * 2**30
    header_seconds: float = 5.0  # a request's headers are ~1 kB: they arrive in milliseconds even over SSH
    max_models: int = 32  # a build's group: 2 probe halves + up to 16 blocks (max_request_bytes bounds the bytes)

    def __post_init__(self) -> None:
        if self.max_request_bytes < 1024:
            raise UsageError(f"max_request_bytes {self.max_request_bytes}: too small for any model (>= 1 KiB)",
                             field="max_request_mb")
        if self.max_repeats < 1:
            raise UsageError(f"max_repeats {self.max_repeats}: must be >= 1", field="max_repeats")
        if not 0 < self.max_seconds < float("inf"):
            raise UsageError(f"max_seconds {self.max_seconds}: must be > 0 and finite", field="max_seconds")
        if not 0 < self.header_seconds < float("inf"):
            raise UsageError(f"header_seconds {self.header_seconds}: must be > 0 and finite", field="header_seconds")
        if self.max_models < 3:
            raise UsageError(f"max_models {self.max_models}: must be >= 3 (the probe's two halves and a block)",
                             field="max_models")
        if self.max_memory_bytes < MIN_MEMORY_BYTES:
            raise UsageError(f"max_memory_bytes {self.max_memory_bytes}: too small for onnxruntime (>= "
                             f"{MIN_MEMORY_BYTES // 2**20} MiB)", field="max_memory_mb")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_token_path() -> Path:
    """Where the agent keeps its token and a host on the same machine finds it:
    ``$XDG_CONFIG_HOME/nas/agent_token`` (``~/.config/nas/agent_token``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "nas" / "agent_token"


def identity_query(*, device: str, threads: int, batch: int) -> str:
    """The path and query of an identity request."""
    return f"{IDENTITY_PATH}?{DEVICE}={device}&{THREADS}={int(threads)}&batch={int(batch)}"


def measure_meta(*, sizes: Sequence[int], input_shapes: Sequence[Sequence[int]], settings: dict[str, Any],
                 threads: int, device: str) -> dict[str, Any]:
    """The JSON metadata of a measurement request (sent in :data:`MEASURE_HEADER`).

    Args:
        sizes: each model's length in bytes, in body order.
        input_shapes: one full ``(N, C, H, W)`` shape per model.
        settings: the :class:`~nas.backends.base.MeasureSettings` fields.
        threads, device: as for every backend.
    """
    return {MODELS: [{INPUT_SHAPE: [int(x) for x in s], BYTES: int(n)} for n, s in zip(sizes, input_shapes)],
            THREADS: threads, DEVICE: device, SETTINGS: settings}
