"""The board agent's HTTP server: a small server on the target that only measures ONNX models.

The host (``nas build-latency-table --remote HOST:PORT``) exports each block to ONNX and POSTs the bytes;
the agent checks them (:mod:`nas.agent.checks`), times them with the onnxruntime CPU backend and the standard
protocol (:mod:`nas.agent.measure`), and answers with the :class:`~nas.backends.base.Measurement`. It also
reports its identity (arch, CPU model, cores, onnxruntime version, execution providers, ...) so the table
records the board, not the host. The wire format is :mod:`nas.agent.protocol`; the token, :mod:`nas.agent.token`.

Transport: HTTP/1.0 from the standard library (``http.server``). HTTP over a home-made socket protocol because
its framing already gives what is needed: ``Content-Length`` lets the agent refuse an oversize body before
reading it, status codes separate "refused" from "busy, retry", and anyone can poke the agent with ``curl``.
One connection per request (HTTP/1.0) keeps the client's retry logic simple: a request is independent and
idempotent, so a dropped connection is retried whole.

Security: no code runs but onnxruntime on a model such as nas exports (an allowlist of ONNX ops, no
external data, local functions or subgraphs, static shapes, a cap on tensor elements:
:mod:`nas.agent.checks`), in a child process killed past the time cap and limited in address space
(:mod:`nas.agent.worker`); a shared token compared in constant time; loopback unless told otherwise; request
line and headers within a few seconds and a byte budget, the body within the time cap, a few connections
per peer (:mod:`nas.agent.bounded`); one measurement at a time.
"""

from __future__ import annotations

import contextlib
import hmac
import http.client
import io
import ipaddress
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import nas.agent.protocol as wire
from nas.agent.bounded import MAX_HEADER_BYTES, DeadlineReader, PeerCounter, printable, strict_json
from nas.agent.checks import CheckCache, check_models
from nas.agent.request import check_device_threads, parse_request
from nas.agent.measure import agent_identity
from nas.agent.protocol import DEFAULT_PORT, PROTOCOL, AgentLimits
from nas.agent.token import MIN_TOKEN_CHARS
from nas.agent.worker import Worker
from nas.errors import AgentError, MeasurementError, NasError

__all__ = ["AgentServer", "is_loopback", "make_server", "private_workdir"]

MAX_CONNECTIONS = 8  # concurrent connections; more are answered 503 at once (no unbounded thread growth)
MAX_PER_PEER = 4  # concurrent connections from one address: a LAN peer cannot hold every slot (a loopback
# client shares 127.0.0.1 with local users and SSH tunnels: there the header deadline is what frees slots)
SOCKET_TIMEOUT_S = 60.0  # writes of an answer to a client that stopped reading give up after this long
MAX_LENGTH_DIGITS = 15  # a Content-Length longer than this is not a byte count (the cap is far below 10**15)
_SERVES = f"the agent serves GET {wire.IDENTITY_PATH} and POST {wire.MEASURE_PATH}"
READ_CHUNK_BYTES = 1 << 20  # the body is read 1 MiB at a time, checking the deadline between chunks


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (the only binds that need no warning)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
        self.peers = PeerCounter(MAX_PER_PEER)
        self.stats = {wire.STAT_MEASUREMENTS: 0, "refused": 0, "started": round(time.time(), 3)}
        self._stats_lock = threading.Lock()
        self.checked = CheckCache()  # the probe, sent in every request, is checked once
        self.worker = Worker(limits=limits)
        self.worker.start()  # warm: the first request does not wait for onnxruntime to import

    def server_close(self) -> None:
        super().server_close()
        worker = getattr(self, "worker", None)  # None when the bind failed (socketserver closes at once)
        if worker is not None:
            worker.stop()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def count(self, key: str) -> None:
        with self._stats_lock:
            self.stats[key] += 1

    def say(self, line: str) -> None:
        """One log line; control characters (e.g. from a request path) are escaped."""
        try:
            self.log.write(f"[nas agent {time.strftime('%H:%M:%S')}] {printable(line, limit=2000)}\n")
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

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # replaced by a reader with deadlines (closing drops its hold on the socket)
        # Request line and headers: within header_seconds and MAX_HEADER_BYTES, however slowly they trickle.
        self.reader = DeadlineReader(self.connection, deadline=time.monotonic() + self.server.limits.header_seconds,
                                     budget=MAX_HEADER_BYTES)
        self.rfile = io.BufferedReader(self.reader)

    def _busy(self, why: str) -> None:
        body = json.dumps({wire.ERROR: f"agent busy: {why}; retry later"}).encode()
        try:  # answered without reading anything of the request, then closed
            self.wfile.write(b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        except OSError:
            pass

    def handle(self) -> None:
        peer = str(self.client_address[0])
        if not self.server.peers.enter(peer):
            return self._busy(f"more than {MAX_PER_PEER} connections from {peer}")
        try:
            if not self.server.slots.acquire(blocking=False):
                return self._busy(f"more than {MAX_CONNECTIONS} connections")
            try:
                super().handle()
            except (OSError, http.client.HTTPException):
                pass  # a client that went away or overran the header budget mid request line: nothing to answer
            finally:
                self.server.slots.release()
        finally:
            self.server.peers.leave(peer)
            self.headers = None  # type: ignore[assignment]  # nothing of a finished request is kept

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        pass  # one line per measurement or refusal is logged by the handlers instead

    # -- plumbing
    def _send(self, status: int, obj: dict[str, Any]) -> None:
        body = json.dumps(obj).encode("utf-8")
        self.close_connection = True
        try:
            self.connection.settimeout(SOCKET_TIMEOUT_S)  # reads left it at the time left of their deadline
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
                        f"{status} {message}")  # say() escapes the client's path
        self._send(status, {wire.ERROR: message})

    def _authorize(self) -> None:
        got = self.headers.get("Authorization", "")
        if not got:
            raise _Refused(401, "no token: send 'Authorization: Bearer <token>' (the token `nas agent` printed)")
        scheme, _, value = got.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode("utf-8"), self.server.token):
            raise _Refused(401, "wrong token: use the token in the agent's token file")

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
            self._send(500, {wire.ERROR: f"agent internal error: {type(e).__name__}: {str(e).splitlines()[0][:200]}"})

    def _read_body(self, length: int) -> bytes:
        """``length`` bytes within ``max_seconds`` in all (a client trickling its body cannot hold the lock)."""
        seconds = self.server.limits.max_seconds
        self.reader.body_phase(seconds)  # every read waits at most for the time left of the body's deadline
        parts, got = [], 0
        while got < length:  # bounded: each pass reads >= 1 byte, or raises on timeout / end of stream
            try:
                part = self.rfile.read1(min(length - got, READ_CHUNK_BYTES))
            except TimeoutError:
                raise _Refused(408, f"body not received within the agent's max_seconds limit {seconds:g} s") from None
            except OSError:
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
        if url.path != wire.IDENTITY_PATH:
            raise _Refused(404, f"{url.path}: unknown; {_SERVES}")
        self._authorize()
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            threads, batch = int(q.get(wire.THREADS, "1")), int(q.get("batch", "1"))
        except ValueError:
            raise _Refused(400, "threads and batch must be integers") from None
        device, threads, batch = check_device_threads(q.get(wire.DEVICE, "cpu"), threads, batch, measuring=False)
        ident = agent_identity(device=device, threads=threads, batch=batch, label=self.server.label)
        with self.server._stats_lock:
            stats = dict(self.server.stats, killed=self.server.worker.kills)
        self._send(200, {"protocol": PROTOCOL, wire.IDENTITY: ident, wire.LIMITS: self.server.limits.to_dict(),
                         wire.STATS: stats})

    def _declared_length(self) -> int:
        """The body's ``Content-Length``, refused (411/413) before anything of the body is read."""
        length_s = self.headers.get("Content-Length")
        if length_s is None:
            raise _Refused(411, "Content-Length required (the ONNX model's size in bytes)")
        digits = length_s.strip()
        if not (digits.isascii() and digits.isdigit()) or len(digits) > MAX_LENGTH_DIGITS:
            raise _Refused(400, "Content-Length: not a byte count (ASCII digits)")
        length = int(digits)
        cap = self.server.limits.max_request_bytes
        if length > cap:
            raise _Refused(413, f"model is {length / 2**20:.1f} MiB, this agent accepts at most {cap / 2**20:.1f} MiB "
                                "(its max_request_bytes limit)")
        return length

    def _post(self) -> None:
        url = urlsplit(self.path)
        if url.path != wire.MEASURE_PATH:
            raise _Refused(404, f"{url.path}: unknown; {_SERVES}")
        self._authorize()
        # Everything up to the lock is decided from the headers alone: nothing of the body is read before.
        length = self._declared_length()
        try:
            meta = strict_json(self.headers.get(wire.MEASURE_HEADER) or "null")
        except ValueError as e:
            raise _Refused(400, f"{wire.MEASURE_HEADER}: {e}") from None
        request = parse_request(meta, limits=self.server.limits, content_length=length)
        t_wait = time.monotonic()
        # Wait for the measurement in progress (at most one measurement's time cap), then read the body:
        # neither an upload nor a second model runs while a measurement is timed.
        if not self.server.measure_lock.acquire(timeout=self.server.limits.max_seconds):
            raise _Refused(503, "agent busy: another measurement held it past its max_seconds limit; retry later")
        try:
            waited = time.monotonic() - t_wait
            models = request.split(self._read_body(length))
            check_models(models, request, limits=self.server.limits, cache=self.server.checked)
            t0 = time.monotonic()
            ms = self.server.worker.measure(models, request)
            seconds = time.monotonic() - t0
            self.server.count(wire.STAT_MEASUREMENTS)
        finally:
            self.server.measure_lock.release()
        shown = ", ".join(f"{'x'.join(map(str, s))} {m.median_ms:.4f} ms (n={m.n}, spread {m.spread_pct:.1f} %)"
                          for s, m in zip(request.input_shapes, ms))
        self.server.say(f"measured {shown}; {length / 1024:.0f} kB, {seconds:.1f} s")
        self._send(200, {wire.MEASUREMENTS: [m.to_dict() for m in ms], wire.SECONDS: round(seconds, 3),
                         wire.WAITED_S: round(waited, 3)})


@contextlib.contextmanager
def private_workdir() -> Iterator[str]:
    """Run the block inside a new empty directory (mode 0700), removed afterwards: no relative path that
    onnxruntime or a model could name resolves to a file of the user who started the agent.

    Yields:
        The directory's path.
    """
    previous = os.getcwd()
    d = tempfile.mkdtemp(prefix="nas-agent-")  # mode 0700
    os.chdir(d)
    try:
        yield d
    finally:
        os.chdir(previous)
        shutil.rmtree(d, ignore_errors=True)


def make_server(*, host: str = "127.0.0.1", port: int = DEFAULT_PORT, token: str, limits: AgentLimits | None = None,
                label: str | None = None, log: Any = None) -> AgentServer:
    """Bind the agent (``port=0`` picks a free port; read it from ``server.port``). Serve with
    ``server.serve_forever()``.

    Args:
        host: the address to listen on (loopback by default: reach it through ``ssh -L``).
        port: TCP port; 0 picks a free one.
        token: the shared secret every request must carry (at least ``MIN_TOKEN_CHARS`` characters).
        limits: the per-request caps (default :class:`AgentLimits()`).
        label: a name for the board, reported in its identity as ``board``.
        log: where one line per measurement or refusal is written (default stderr).

    Returns:
        The bound :class:`AgentServer`.

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
        raise AgentError(f"token: {len(token)} characters, need >= {MIN_TOKEN_CHARS}", field="token")
    try:
        return AgentServer((host, int(port)), token=token, limits=limits or AgentLimits(), label=label, log=log)
    except OSError as e:
        raise AgentError(f"port {port}: cannot listen on {host} ({e.strerror}); pick another port",
                         field="port") from None
