"""The board agent: a small HTTP server on the target that only measures ONNX models.

The host (``nas build-latency-table --remote HOST:PORT``) exports each block to ONNX and POSTs the bytes;
the agent checks them, times them with the onnxruntime CPU backend and the standard protocol
(:class:`~nas.backends.base.MeasureSettings`), and answers with the :class:`~nas.backends.base.Measurement`.
It also reports its identity (arch, CPU model, cores, onnxruntime version, execution providers, ...) so
the table records the board, not the host.

Transport: HTTP/1.0 from the standard library (``http.server`` / ``http.client``). JSON for metadata and
answers, the raw ONNX bytes as the request body. HTTP over a home-made socket protocol because its framing
already gives what is needed: ``Content-Length`` lets the agent refuse an oversize body before reading it,
status codes separate "refused" from "busy, retry", and anyone can poke the agent with ``curl``. One
connection per request (HTTP/1.0) keeps the client's retry logic simple: a request is independent and
idempotent, so a dropped connection is retried whole.

Protocol (``PROTOCOL``), every request with ``Authorization: Bearer <token>``:

* ``GET /v1/identity?device=arm&threads=1&batch=1`` -> ``{"identity", "limits", "stats", "protocol"}``
* ``POST /v1/measure`` with header ``X-Nas-Measure: {"models": [{"input_shape": [N, C, H, W], "bytes": n}, ...],
  "settings": {...}, "threads": 1, "device": "arm"}`` and the models' ONNX bytes, concatenated in that order, as
  the body -> ``{"measurements": [{...}, ...], "seconds", "waited_s"}``. Several models are timed in
  interleaved rounds (:meth:`~nas.backends.base.Backend.measure_many`): the table builder pairs every block
  with its reference probe this way, on the board as on the host.
* errors: ``{"error": "<one line>"}`` with 400 (bad request, refused model), 401 (token), 411/413 (size),
  422 (the model did not run, or ran past the time cap), 503 (busy: retry later).

Security: no code runs but onnxruntime on a validated, self-contained ONNX model (no pickles, no
``torch.load``, no external-data file references, no file paths from the client); a shared token compared
in constant time; loopback unless told otherwise; request size, repeats and time capped; one
measurement at a time.
"""

from __future__ import annotations

import hmac
import ipaddress
import itertools
import json
import os
import platform
import secrets
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import parse_qs, urlsplit

from nas.backends.base import MeasureSettings, Measurement
from nas.backends.onnxruntime import OnnxRuntimeBackend
from nas.errors import AgentError, MeasurementError, NasError, UsageError

__all__ = [
    "AgentLimits",
    "AgentServer",
    "MeasureRequest",
    "PROTOCOL",
    "DEFAULT_PORT",
    "ARM_ARCHES",
    "agent_identity",
    "check_onnx",
    "default_token_path",
    "is_loopback",
    "load_or_create_token",
    "make_server",
    "measure_request",
    "parse_request",
    "token_file_is_private",
]

PROTOCOL = 1
DEFAULT_PORT = 8765
MEASURE_HEADER = "X-Nas-Measure"
ARM_ARCHES = ("aarch64", "arm64", "armv8l", "armv7l")
MIN_TOKEN_CHARS = 16  # a shorter shared secret is guessable
MAX_RETRIES = 5  # MeasureSettings.retries cap: each retry re-runs every timed round
MAX_ROUNDS = 100
MAX_MODELS = 8  # models per request (the table sends 2: the reference probe and a block)
MAX_INPUT_ELEMENTS = 1 << 26  # 64 M floats = 256 MiB of input: far beyond any image batch, short of exhausting a board
MAX_CONNECTIONS = 8  # concurrent connections; more are answered 503 at once (no unbounded thread growth)
SOCKET_TIMEOUT_S = 60.0  # a client that stops sending mid-request is dropped after this long without data
CHECK_INTERVAL_S = 0.1  # the time cap is checked between chunks of runs this long


@dataclass(frozen=True)
class AgentLimits:
    """What one request may ask of the agent.

    Attributes:
        max_request_bytes: largest accepted body (the ONNX model), checked from ``Content-Length``
            before the body is read.
        max_repeats: cap on ``settings.max_repeats`` (timed runs per attempt) and ``settings.warmup``.
        max_seconds: cap on one measurement's wall time (session creation, warm-up, every attempt), and on
            how long a request waits for the measurement lock before it is answered 503 (busy).
    """

    max_request_bytes: int = 128 * 1024 * 1024  # a cold-weights entry: 32 MiB block + 15 MiB probe
    max_repeats: int = 1000  # the table's block protocol asks for <= 400
    max_seconds: float = 120.0  # a whole 224 px network on a Pi 4 takes a few seconds with the table's protocol

    def __post_init__(self) -> None:
        if self.max_request_bytes < 1024:
            raise UsageError(f"--max-request-mb: {self.max_request_bytes} bytes is too small for any model")
        if self.max_repeats < 1:
            raise UsageError(f"--max-repeats {self.max_repeats}: must be >= 1")
        if not self.max_seconds > 0:
            raise UsageError(f"--max-seconds {self.max_seconds}: must be > 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- token
def default_token_path() -> Path:
    """``$XDG_CONFIG_HOME/nas/agent_token`` (``~/.config/nas/agent_token``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "nas" / "agent_token"


def load_or_create_token(path: "str | Path | None" = None) -> tuple[str, Path, bool]:
    """Read the agent's shared token, generating it (256 random bits, file mode 0600) if the file is missing.

    Args:
        path: the token file (default :func:`default_token_path`).

    Returns:
        ``(token, path, generated)``; ``generated`` is True when the file was just created.

    Raises:
        AgentError: the file cannot be read or written, is empty, or holds a token under 16 characters.
    """
    p = Path(path).expanduser() if path is not None else default_token_path()
    if p.exists():
        try:
            token = p.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise AgentError(f"--token-file {p}: cannot read ({e})") from None
        if len(token) < MIN_TOKEN_CHARS:
            raise AgentError(f"--token-file {p}: token is {len(token)} characters, need >= {MIN_TOKEN_CHARS}; "
                             "delete the file to have a new one generated")
        return token, p, False
    token = secrets.token_urlsafe(32)
    try:
        p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # O_EXCL + mode 0600 at creation: the token is never readable by others, not even briefly.
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(token + "\n")
    except OSError as e:
        raise AgentError(f"--token-file {p}: cannot create ({e.strerror}); pass a writable path") from None
    return token, p, True


def token_file_is_private(path: Path) -> bool:
    """False if group or others may read the token file (POSIX permissions)."""
    try:
        return os.name != "posix" or (path.stat().st_mode & 0o077) == 0
    except OSError:
        return True


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (the only binds that need no warning)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --------------------------------------------------------------------------- identity
def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def agent_identity(*, device: str, threads: int, batch: int, label: str | None = None) -> dict[str, Any]:
    """This machine's backend identity, as a latency table records it, plus what only the agent knows.

    ``OnnxRuntimeBackend.identity()`` (device, CPU model, cores, OS, arch, Python, runtime + version,
    provider, threads, batch) plus ``providers_available``, ``usable_cpus``, ``node`` (host name),
    ``board`` (the agent's ``--label``) and ``agent`` (protocol and nas version).
    """
    import onnxruntime as ort

    from nas import __version__

    ident = OnnxRuntimeBackend(device=device, threads=threads, batch=batch).identity()  # type: ignore[arg-type]
    ident.update(providers_available=list(ort.get_available_providers()), usable_cpus=_usable_cpus(),
                 node=platform.node(), agent={"protocol": PROTOCOL, "nas_version": __version__})
    if label:
        ident["board"] = label
    return ident


# --------------------------------------------------------------------------- request checks
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


def _check_device_threads(device: Any, threads: Any, batch: Any = 1, *, measuring: bool = True
                          ) -> tuple[str, int, int]:
    if device not in ("cpu", "arm"):
        raise AgentError(f"device={device!r}: the agent measures with onnxruntime's CPU provider; use cpu or arm")
    arch = platform.machine().lower()
    # Identity requests are answered for any device: the host refuses a non-ARM agent with its own message.
    if measuring and device == "arm" and arch not in ARM_ARCHES:
        raise AgentError(f"device='arm': this agent runs on {arch}, not ARM; ask for device 'cpu' to measure here")
    for name, v in (("threads", threads), ("batch", batch)):
        if type(v) is not int or v < 1:  # noqa: E721 - bool is an int subclass and must not pass
            raise AgentError(f"{name}={v!r}: must be an integer >= 1")
    cpus = _usable_cpus()
    if threads > cpus:
        raise AgentError(f"threads={threads}: this machine has {cpus} usable cores")
    return device, threads, batch


def _check_shape(shape: Any, where: str) -> tuple[int, int, int, int]:
    if (not isinstance(shape, list) or len(shape) != 4
            or not all(type(s) is int and 1 <= s <= 65536 for s in shape)):  # noqa: E721
        raise AgentError(f"{where}.input_shape={shape!r}: expected [N, C, H, W], each an integer in 1..65536")
    elements = shape[0] * shape[1] * shape[2] * shape[3]
    if elements > MAX_INPUT_ELEMENTS:
        raise AgentError(f"{where}.input_shape={shape}: {elements} elements, the agent accepts at most "
                         f"{MAX_INPUT_ELEMENTS}")
    return shape[0], shape[1], shape[2], shape[3]


def parse_request(meta: Any, *, limits: AgentLimits, content_length: int | None = None) -> MeasureRequest:
    """Check the JSON metadata of a measurement request against the agent's limits.

    Args:
        meta: the decoded ``X-Nas-Measure`` header.
        limits: the agent's caps.
        content_length: the body's declared length; the models' sizes must add up to it.

    Raises:
        AgentError: a field is missing, of the wrong type, or beyond a limit (the message names it).
    """
    if not isinstance(meta, dict):
        raise AgentError(f"{MEASURE_HEADER}: expected a JSON object")
    models = meta.get("models")
    if not isinstance(models, list) or not 1 <= len(models) <= MAX_MODELS:
        raise AgentError(f"models: expected a list of 1..{MAX_MODELS} {{input_shape, bytes}} objects")
    shapes, sizes = [], []
    for i, m in enumerate(models):
        if not isinstance(m, dict) or type(m.get("bytes")) is not int or m["bytes"] < 1:  # noqa: E721
            raise AgentError(f"models[{i}]: expected {{\"input_shape\": [N, C, H, W], \"bytes\": n >= 1}}")
        shapes.append(_check_shape(m.get("input_shape"), f"models[{i}]"))
        sizes.append(m["bytes"])
    if content_length is not None and sum(sizes) != content_length:
        raise AgentError(f"models: sizes add up to {sum(sizes)} bytes, Content-Length is {content_length}")
    device, threads, _ = _check_device_threads(meta.get("device", "cpu"), meta.get("threads", 1))
    raw = meta.get("settings") or {}
    if not isinstance(raw, dict):
        raise AgentError("settings: expected a JSON object of MeasureSettings fields")
    known = _setting_types()
    for k, v in raw.items():
        types = known.get(k)
        if types is None:
            raise AgentError(f"settings.{k}: unknown field (is the host's nas newer? update nas on the board); "
                             f"known: {sorted(known)}")
        if not isinstance(v, types) or (bool not in types and isinstance(v, bool)):
            raise AgentError(f"settings.{k}={v!r}: expected {' or '.join(t.__name__ for t in types)}")
    try:
        settings = MeasureSettings.from_dict(raw)
    except NasError as e:
        raise AgentError(str(e)) from None
    caps = {"max_repeats": limits.max_repeats, "min_repeats": limits.max_repeats, "warmup": limits.max_repeats,
            "rewarm": limits.max_repeats, "retries": MAX_RETRIES, "rounds": MAX_ROUNDS}
    for name, cap in caps.items():
        if getattr(settings, name) > cap:
            flag = " (nas agent --max-repeats)" if cap == limits.max_repeats else ""
            raise AgentError(f"settings.{name}={getattr(settings, name)}: beyond this agent's cap of {cap}{flag}")
    if settings.min_time_s > limits.max_seconds:
        raise AgentError(f"settings.min_time_s={settings.min_time_s}: beyond this agent's --max-seconds "
                         f"{limits.max_seconds:g}")
    return MeasureRequest(input_shapes=tuple(shapes), sizes=tuple(sizes), settings=settings, threads=threads,
                          device=device)


def _tensors_of_graph(graph: Any) -> Any:
    yield from graph.initializer
    for sp in graph.sparse_initializer:
        yield sp.values
        yield sp.indices
    for node in graph.node:
        yield from _tensors_of_node(node)


def _tensors_of_node(node: Any) -> Any:
    for a in node.attribute:
        if a.HasField("t"):
            yield a.t
        yield from a.tensors
        for sp in ([a.sparse_tensor] if a.HasField("sparse_tensor") else []) + list(a.sparse_tensors):
            yield sp.values
            yield sp.indices
        if a.HasField("g"):
            yield from _tensors_of_graph(a.g)
        for g in a.graphs:
            yield from _tensors_of_graph(g)


def check_onnx(onnx_bytes: bytes, *, input_shape: Sequence[int]) -> None:
    """Check that ``onnx_bytes`` is a self-contained ONNX model with one float input of ``input_shape``.

    Parsing is protobuf only (``onnx.load_from_string``): nothing in the model is executed here.

    Raises:
        AgentError: not ONNX, external data (file references), not exactly one input, or an input whose
            static shape differs from ``input_shape``.
    """
    import onnx

    try:
        model = onnx.load_from_string(bytes(onnx_bytes))
    except Exception as e:  # protobuf raises DecodeError, RuntimeError, ... on garbage
        raise AgentError(f"request body is not an ONNX model ({type(e).__name__}); send a serialized ModelProto"
                         ) from None
    if not model.opset_import or not model.graph.node:
        raise AgentError("request body is not an ONNX model (no opset or no graph nodes); send a serialized "
                         "ModelProto")
    # Tensors stored outside the model name files on the agent's disk: no file paths from the client.
    functions = (t for f in model.functions for n in f.node for t in _tensors_of_node(n))
    for t in itertools.chain(_tensors_of_graph(model.graph), functions):
        if t.data_location == onnx.TensorProto.EXTERNAL or len(t.external_data):
            raise AgentError(f"model tensor {t.name!r} uses external data (a file reference); send a "
                             "self-contained model (weights inline)")
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise AgentError(f"model has {len(inputs)} inputs; the agent times models with one image input")
    tt = inputs[0].type.tensor_type
    if inputs[0].type.WhichOneof("value") != "tensor_type" or tt.elem_type != onnx.TensorProto.FLOAT:
        raise AgentError(f"model input {inputs[0].name!r} is not a float32 tensor")
    if tt.HasField("shape"):
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        want = [int(s) for s in input_shape]
        if len(dims) != len(want) or any(d is not None and d != w for d, w in zip(dims, want)):
            shown = ["?" if d is None else d for d in dims]
            raise AgentError(f"model input {inputs[0].name!r} has shape {shown}, the request declares {want}; "
                             "export the model for the declared input_shape")


# --------------------------------------------------------------------------- measuring
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
                raise MeasurementError(f"measurement ran past this agent's --max-seconds {self.max_seconds:g}; ask "
                                       "for fewer repeats or a shorter min_time_s")
            # One run first (a model may take seconds), then chunks of about CHECK_INTERVAL_S.
            chunk = 1 if self.per_run_s <= 0 else max(1, min(n - len(out), int(CHECK_INTERVAL_S / self.per_run_s)))
            t0 = time.monotonic()
            out.extend(self.inner.run(chunk))
            self.per_run_s = max((time.monotonic() - t0) / chunk, 1e-7)
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
            raise MeasurementError(f"measurement ran past this agent's --max-seconds {self.max_seconds:g}")
        return _DeadlineRunner(super().prepare(model, input_shape=input_shape, settings=settings), self.deadline,
                               self.max_seconds)


def measure_request(models: Sequence[bytes], request: MeasureRequest, *, limits: AgentLimits) -> list[Measurement]:
    """Check and time models on this machine (what ``POST /v1/measure`` does under the lock).

    Runs the onnxruntime CPU backend's protocol (as :func:`nas.backends.onnxruntime.measure_onnx_bytes`; several
    models in interleaved rounds, as ``measure_many``), stopped if it passes ``limits.max_seconds``.

    Raises:
        AgentError: a model fails :func:`check_onnx`.
        MeasurementError: onnxruntime could not load or run a model, or the time cap was reached.
    """
    if len(models) != len(request.input_shapes):
        raise AgentError(f"{len(models)} models for {len(request.input_shapes)} input shapes")
    for i, (onnx_bytes, shape) in enumerate(zip(models, request.input_shapes)):
        try:
            check_onnx(onnx_bytes, input_shape=shape)
        except AgentError as e:
            raise AgentError(f"models[{i}]: {e}" if len(models) > 1 else str(e)) from None
    backend = _CappedOrtBackend(device=request.device, threads=request.threads, batch=request.input_shapes[0][0],
                                deadline=time.monotonic() + limits.max_seconds, max_seconds=limits.max_seconds)
    return backend.measure_many([bytes(m) for m in models], input_shapes=list(request.input_shapes),
                                settings=request.settings)


# --------------------------------------------------------------------------- the server
class AgentServer(ThreadingHTTPServer):
    """The HTTP server; one thread per connection (at most ``MAX_CONNECTIONS``), one measurement at a time."""

    daemon_threads = True  # a stuck client never keeps the process alive at shutdown

    def __init__(self, address: tuple[str, int], *, token: str, limits: AgentLimits, label: str | None = None,
                 log: Any = None) -> None:
        if ":" in address[0]:  # an IPv6 literal such as "::" or "::1"
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.token = token.encode("utf-8")
        self.limits = limits
        self.label = label
        self.log = log if log is not None else sys.stderr
        self.measure_lock = threading.Lock()  # measurements never overlap (they would disturb each other)
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.stats = {"measurements": 0, "refused": 0, "started": round(time.time(), 3)}
        self._stats_lock = threading.Lock()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def count(self, key: str) -> None:
        with self._stats_lock:
            self.stats[key] += 1

    def say(self, line: str) -> None:
        try:
            self.log.write(f"[nas agent {time.strftime('%H:%M:%S')}] {line}\n")
            self.log.flush()
        except (OSError, ValueError):  # a closed stderr must not stop measuring
            pass


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Handler(BaseHTTPRequestHandler):
    server: AgentServer
    timeout = SOCKET_TIMEOUT_S
    server_version = f"nas-agent/{PROTOCOL}"

    def handle(self) -> None:
        if not self.server.slots.acquire(blocking=False):
            body = json.dumps({"error": f"agent busy: more than {MAX_CONNECTIONS} connections"}).encode()
            try:  # too many connections: answer without parsing, then close
                self.wfile.write(b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            except OSError:
                pass
            return
        try:
            super().handle()
        finally:
            self.server.slots.release()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        pass  # one line per measurement or refusal is logged by the handlers instead

    # -- plumbing
    def _send(self, status: int, obj: dict[str, Any]) -> None:
        body = json.dumps(obj).encode("utf-8")
        self.close_connection = True
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the client went away; nothing to tell it
            pass

    def _refuse(self, status: int, message: str) -> None:
        self.server.count("refused")
        self.server.say(f"refused {self.command} {urlsplit(self.path).path} from {self.client_address[0]}: "
                        f"{status} {message}")
        self._send(status, {"error": message})

    def _authorize(self) -> None:
        got = self.headers.get("Authorization", "")
        if not got:
            raise _Refused(401, "no token: send 'Authorization: Bearer <token>' (the token `nas agent` printed)")
        scheme, _, value = got.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode("utf-8"), self.server.token):
            raise _Refused(401, "wrong token: use the token in the agent's --token-file")

    def _dispatch(self, fn: Any) -> None:
        try:
            fn()
        except _Refused as e:
            self._refuse(e.status, str(e))
        except AgentError as e:
            self._refuse(400, str(e))
        except MeasurementError as e:
            self._refuse(422, str(e))
        except NasError as e:
            self._refuse(400, str(e))
        except Exception as e:  # never let one bad request kill the server thread silently
            self.server.say(f"internal error: {type(e).__name__}: {e}")
            self._send(500, {"error": f"agent internal error: {type(e).__name__}: {str(e).splitlines()[0][:200]}"})

    def _read_body(self, length: int) -> bytes:
        """``length`` bytes within ``max_seconds`` in all (a client trickling its body cannot hold the lock)."""
        deadline = time.monotonic() + self.server.limits.max_seconds
        parts, got = [], 0
        while got < length:  # bounded: each pass reads >= 1 byte, or raises on timeout / end of stream
            if time.monotonic() > deadline:
                raise _Refused(408, f"body not received within --max-seconds {self.server.limits.max_seconds:g}")
            try:
                part = self.rfile.read1(min(length - got, 1 << 20))
            except (TimeoutError, OSError):
                part = b""
            if not part:
                raise _Refused(400, f"body ended after {got} of {length} bytes")
            parts.append(part)
            got += len(part)
        return b"".join(parts)

    # -- endpoints
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._dispatch(self._get)

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch(self._post)

    def _get(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/v1/identity":
            raise _Refused(404, f"{url.path}: unknown; the agent serves GET /v1/identity and POST /v1/measure")
        self._authorize()
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            threads, batch = int(q.get("threads", "1")), int(q.get("batch", "1"))
        except ValueError:
            raise _Refused(400, "threads and batch must be integers") from None
        device, threads, batch = _check_device_threads(q.get("device", "cpu"), threads, batch, measuring=False)
        ident = agent_identity(device=device, threads=threads, batch=batch, label=self.server.label)
        with self.server._stats_lock:
            stats = dict(self.server.stats)
        self._send(200, {"protocol": PROTOCOL, "identity": ident, "limits": self.server.limits.to_dict(),
                         "stats": stats})

    def _post(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/v1/measure":
            raise _Refused(404, f"{url.path}: unknown; the agent serves GET /v1/identity and POST /v1/measure")
        self._authorize()
        # Everything below is decided from the headers alone: nothing of the body is read before.
        length_s = self.headers.get("Content-Length")
        if length_s is None or not length_s.strip().isdigit():
            raise _Refused(411, "Content-Length required (the ONNX model's size in bytes)")
        length = int(length_s)
        cap = self.server.limits.max_request_bytes
        if length > cap:
            raise _Refused(413, f"model is {length / 2**20:.1f} MiB, this agent accepts at most {cap / 2**20:.1f} MiB "
                                "(nas agent --max-request-mb)")
        try:
            meta = json.loads(self.headers.get(MEASURE_HEADER) or "null")
        except json.JSONDecodeError:
            raise _Refused(400, f"{MEASURE_HEADER}: not JSON") from None
        request = parse_request(meta, limits=self.server.limits, content_length=length)
        t_wait = time.monotonic()
        # Wait for the measurement in progress (at most one measurement's time cap), then read the body:
        # neither an upload nor a second model runs while a measurement is timed.
        if not self.server.measure_lock.acquire(timeout=self.server.limits.max_seconds):
            raise _Refused(503, "agent busy: another measurement held it past --max-seconds; retry later")
        try:
            waited = time.monotonic() - t_wait
            body = self._read_body(length)
            t0 = time.monotonic()
            ms = measure_request(request.split(body), request, limits=self.server.limits)
            seconds = time.monotonic() - t0
            self.server.count("measurements")
        finally:
            self.server.measure_lock.release()
        shown = ", ".join(f"{'x'.join(map(str, s))} {m.median_ms:.4f} ms (n={m.n}, spread {m.spread_pct:.1f} %)"
                          for s, m in zip(request.input_shapes, ms))
        self.server.say(f"measured {shown}; {length / 1024:.0f} kB, {seconds:.1f} s")
        self._send(200, {"measurements": [m.to_dict() for m in ms], "seconds": round(seconds, 3),
                         "waited_s": round(waited, 3)})


def make_server(*, host: str = "127.0.0.1", port: int = DEFAULT_PORT, token: str, limits: AgentLimits | None = None,
                label: str | None = None, log: Any = None) -> AgentServer:
    """Bind the agent (``port=0`` picks a free port; read it from ``server.port``). Serve with
    ``server.serve_forever()``.

    Raises:
        AgentError: the address cannot be bound, or onnxruntime / onnx are not installed here.
    """
    missing = []
    for mod in ("onnxruntime", "onnx", "numpy"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        raise AgentError(f"the agent needs {', '.join(missing)}: `pip install {' '.join(missing)}`")
    if len(token) < MIN_TOKEN_CHARS:
        raise AgentError(f"token: {len(token)} characters, need >= {MIN_TOKEN_CHARS}")
    try:
        return AgentServer((host, int(port)), token=token, limits=limits or AgentLimits(), label=label, log=log)
    except OSError as e:
        raise AgentError(f"--host {host} --port {port}: cannot listen ({e.strerror}); pick another --port") from None
