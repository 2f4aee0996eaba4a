"""The ``remote`` backend: measure on a board agent (``nas agent``) from the host.

Each model is exported to ONNX here (``torch.onnx.export(dynamo=False)``, the same exporter as the local
backends), sent to the agent, checked and timed there with the onnxruntime CPU backend, and the agent's
:class:`~nas.backends.base.Measurement` comes back. :meth:`RemoteBackend.identity` is the *agent's*
identity (its arch, CPU model, cores, onnxruntime version, providers), so a latency table built through
it describes the board; only ``torch_version`` (the exporter's) is the host's.

Reliability: a refused or dropped connection is retried ``retries`` times with exponential backoff (an
agent restarted by its service manager within that window is not noticed by the build), and after a
drop the agent's identity is checked again so a different machine behind the same address is refused.
An agent that accepts a request but does not answer within ``timeout_s`` is reported as hung. Every
failure is one :class:`~nas.errors.AgentError` line; the table builder has saved every entry before, so
``nas build-latency-table --resume`` continues where it stopped.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import nas.agent.protocol as wire
from nas.agent.protocol import TOKEN_ENV, default_token_path
from nas.backends.base import Backend, Device, MeasureSettings, Measurement
from nas.backends.host import is_arm, torch_version
from nas.backends.identity import identity_diff
from nas.backends.registry import register
from nas.errors import AgentError, BackendUnavailableError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    import torch.nn as nn

__all__ = ["RemoteBackend", "parse_address", "read_token", "request_identity", "request_measure",
           "TOKEN_ENV"]

CONNECT_TIMEOUT_S = 5.0  # a LAN peer answers a TCP connect in milliseconds; 5 s means it is not there
RETRIES = 5  # reconnect attempts after the first; with BACKOFF_S: 0.5+1+2+4+8 = 15.5 s of waiting at most
BACKOFF_S = 0.5
BACKOFF_MAX_S = 8.0
DEFAULT_AGENT_SECONDS = 120.0  # AgentLimits.max_seconds's default, for an agent that reports no limits
TIMEOUT_SLACK_S = 30.0  # on top of the agent's caps: upload of a large model on a slow link, JSON


def parse_address(remote: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) -> ``(host, port)``.

    Raises:
        UsageError: no port, or a port outside 1..65535 (field ``remote``).
    """
    text = remote.strip()
    if text.startswith("["):
        host, sep, port_s = text[1:].partition("]:")
    else:
        host, sep, port_s = text.rpartition(":")
    if not sep or not host or not port_s.isdigit() or not 1 <= int(port_s) <= 65535:
        raise UsageError(f"remote {remote!r}: expected HOST:PORT (e.g. raspberrypi.local:8765, [::1]:8765)",
                         field="remote")
    return host, int(port_s)


def read_token(*, token: str | None = None, token_file: "str | Path | None" = None) -> str | None:
    """The agent's token for the host: ``token``, else ``token_file``'s content, else ``$NAS_AGENT_TOKEN``,
    else the agent's default token file if this machine has one (an agent on the same machine), else None.

    Raises:
        UsageError: ``token_file`` is missing, unreadable or empty (field ``token_file``).
    """
    if token:
        return token.strip()
    if token_file is not None:
        p = Path(token_file).expanduser()
        try:
            text = p.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise UsageError(f"token_file {p}: not found; put the token `nas agent` printed on the board there",
                             field="token_file") from None
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"token_file {p}: cannot read ({e})", field="token_file") from None
        if not text:
            raise UsageError(f"token_file {p}: empty; put the token `nas agent` printed on the board there",
                             field="token_file")
        return text
    if os.environ.get(TOKEN_ENV, "").strip():
        return os.environ[TOKEN_ENV].strip()
    p = default_token_path()
    if p.is_file():
        try:
            return p.read_text(encoding="utf-8").strip() or None
        except (OSError, UnicodeDecodeError):
            return None
    return None


# --------------------------------------------------------------------------- raw requests
def _where(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _once(address: tuple[str, int], method: str, path: str, *, token: str | None, body: bytes | None = None,
          headers: dict[str, str] | None = None, timeout_s: float, connect_timeout_s: float
          ) -> tuple[int, dict[str, Any]]:
    """One request. Connection-level failures raise ``OSError`` / ``http.client.HTTPException`` (retryable);
    a peer that accepted the request but does not answer within ``timeout_s`` raises :class:`AgentError`."""
    conn = http.client.HTTPConnection(address[0], address[1], timeout=connect_timeout_s)
    try:
        conn.connect()
        assert conn.sock is not None
        conn.sock.settimeout(timeout_s)
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        try:
            conn.request(method, path, body=body, headers=hdrs)
        except (BrokenPipeError, ConnectionResetError):
            # The agent may have refused from the headers (token, size) and closed before reading the body;
            # its answer can still be waiting in the socket. If not, getresponse() raises: a dropped connection.
            pass
        try:
            resp = conn.getresponse()
            data = resp.read()
        except (TimeoutError, socket.timeout):
            raise AgentError(f"agent {_where(address)}: no answer within {timeout_s:.0f} s; it is hung or "
                             "overloaded: restart `nas agent` on the board, then resume the build") from None
        try:
            obj = json.loads(data.decode("utf-8")) if data else {}
        except (UnicodeDecodeError, json.JSONDecodeError):
            obj = {}
        if not isinstance(obj, dict):
            obj = {}
        if resp.status != 200 and wire.ERROR not in obj:
            obj[wire.ERROR] = f"HTTP {resp.status} {resp.reason} (is this a nas agent?)"
        return resp.status, obj
    finally:
        conn.close()


def _request(address: tuple[str, int], method: str, path: str, *, token: str | None, body: bytes | None = None,
             headers: dict[str, str] | None = None, timeout_s: float, connect_timeout_s: float = CONNECT_TIMEOUT_S,
             retries: int = RETRIES, backoff_s: float = BACKOFF_S, on_retry: Any = None) -> dict[str, Any]:
    """A request with bounded retries of dropped connections and 503 (busy) answers; returns the JSON answer.

    Raises:
        AgentError: refused (the agent's one-line reason), unreachable after every retry, or hung.
    """
    where = _where(address)
    t0 = time.monotonic()
    last = ""
    for attempt in range(retries + 1):  # bounded
        if attempt:
            time.sleep(min(backoff_s * 2 ** (attempt - 1), BACKOFF_MAX_S))
            if on_retry is not None:
                on_retry(attempt, last)
        try:
            status, obj = _once(address, method, path, token=token, body=body, headers=headers, timeout_s=timeout_s,
                                connect_timeout_s=connect_timeout_s)
        except AgentError:
            raise
        except (OSError, http.client.HTTPException) as e:  # refused, reset, unreachable, connect timeout
            last = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            continue
        if status == 503:  # busy: the agent asks to come back later
            last = str(obj.get(wire.ERROR, "busy"))
            continue
        if status != 200:
            raise AgentError(f"agent {where} refused: {obj[wire.ERROR]}")
        return obj
    raise AgentError(f"agent {where}: unreachable after {retries + 1} attempts in {time.monotonic() - t0:.0f} s "
                     f"({last}); start `nas agent` on the board (or check its address), then resume the build",
                     field="remote")


def request_identity(remote: str, *, token: str | None, device: str = "cpu", threads: int = 1, batch: int = 1,
                     timeout_s: float = 30.0, retries: int = RETRIES) -> dict[str, Any]:
    """``GET /v1/identity``: the agent's ``{"identity", "limits", "stats", "protocol"}``.

    Raises:
        AgentError: refused (e.g. token), unreachable, or hung.
    """
    q = wire.identity_query(device=device, threads=threads, batch=batch)
    return _request(parse_address(remote), "GET", q, token=token, timeout_s=timeout_s, retries=retries)


def _measure_body(models: Sequence[bytes], input_shapes: Sequence[Sequence[int]],
                  settings: MeasureSettings | dict[str, Any], threads: int, device: str) -> tuple[bytes, dict[str, str]]:
    meta = wire.measure_meta(sizes=[len(m) for m in models], input_shapes=input_shapes, threads=threads,
                             device=device,
                             settings=settings.to_dict() if isinstance(settings, MeasureSettings) else settings)
    headers = {"Content-Type": "application/octet-stream", wire.MEASURE_HEADER: json.dumps(meta)}
    return b"".join(bytes(m) for m in models), headers


def request_measure(remote: str, models: "bytes | Sequence[bytes]", *, token: str | None,
                    input_shapes: Sequence[Sequence[int]], settings: MeasureSettings | dict[str, Any],
                    threads: int = 1, device: str = "cpu", timeout_s: float = 300.0,
                    retries: int = RETRIES) -> dict[str, Any]:
    """``POST /v1/measure`` as is, without the client-side checks of :class:`RemoteBackend` (which the agent
    repeats anyway).

    Args:
        remote: ``HOST:PORT``.
        models: ONNX bytes, or several (timed in interleaved rounds).
        input_shapes: one full ``(N, C, H, W)`` shape per model.

    Returns:
        ``{"measurements": [{...}, ...], "seconds", "waited_s"}``.

    Raises:
        AgentError: refused (the agent's reason), unreachable, or hung.
    """
    models = [models] if isinstance(models, (bytes, bytearray)) else list(models)
    body, headers = _measure_body(models, input_shapes, settings, threads, device)
    return _request(parse_address(remote), "POST", wire.MEASURE_PATH, token=token, body=body, headers=headers,
                    timeout_s=timeout_s, retries=retries)


# --------------------------------------------------------------------------- the backend
class RemoteBackend(Backend):
    """Measures on a board agent. Creating it contacts the agent once (token, identity, limits).

    Args:
        device: ``arm`` (the agent must report an ARM machine) or ``cpu`` (any machine; e.g. testing
            with an x86 agent). ``gpu`` is refused: the agent measures with onnxruntime's CPU provider.
        threads, batch: as for every backend; the agent checks ``threads`` against its cores.
        remote: ``HOST:PORT`` of the agent.
        token: the agent's token (see :func:`read_token` for the fallbacks when None).
        timeout_s: how long to wait for an answer (default: twice the agent's ``max_seconds`` cap + 30 s:
            a wait for the lock plus one capped measurement).
        retries, backoff_s: reconnect attempts after a dropped connection and the first backoff in seconds
            (doubles each time); default :data:`RETRIES` and :data:`BACKOFF_S`.

    Raises:
        UsageError: bad ``remote``, no token, or ``device="gpu"``.
        AgentError: the agent refused (token), is unreachable, or hung.
        BackendUnavailableError: ``device="arm"`` and the agent is not an ARM machine.
    """

    name = "remote"

    def __init__(self, *, device: Device, threads: int, batch: int, remote: str, token: str | None = None,
                 timeout_s: float | None = None, retries: int | None = None, backoff_s: float | None = None,
                 connect_timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        super().__init__(device=device, threads=threads, batch=batch)
        if device == "gpu":
            raise UsageError("device gpu: the board agent measures with onnxruntime's CPU provider; "
                             "use device arm (or cpu)", field="device")
        self.address = parse_address(remote)
        self.remote = _where(self.address)
        self.token = read_token(token=token)
        if self.token is None:
            raise UsageError(f"remote {remote}: the agent needs its token; give a token file (holding the token "
                             f"`nas agent` printed on the board) or set {TOKEN_ENV}", field="token_file")
        # Read at call time (not bound as defaults) so a test can shorten every backend's retries at once.
        retries = RETRIES if retries is None else retries
        backoff_s = BACKOFF_S if backoff_s is None else backoff_s
        if retries < 0:
            raise UsageError(f"retries={retries}: must be >= 0", field="retries")
        self.retries, self.backoff_s, self.connect_timeout_s = retries, backoff_s, connect_timeout_s
        self.timeout_s = float(timeout_s) if timeout_s is not None else 60.0  # until the limits are known
        info = self._identity_request()
        self.limits = dict(info.get(wire.LIMITS) or {})
        self.agent_identity = dict(info[wire.IDENTITY])
        if timeout_s is None:
            self.timeout_s = 2.0 * float(self.limits.get(wire.LIMIT_SECONDS, DEFAULT_AGENT_SECONDS)) + TIMEOUT_SLACK_S
        arch = str(self.agent_identity.get("arch", "?"))
        if device == "arm" and not is_arm(arch):
            raise BackendUnavailableError(
                f"device arm: the agent at {self.remote} runs on {arch} "
                f"({self.agent_identity.get('cpu_model', '?')}), not ARM; point remote at the board's agent, or "
                "measure on device cpu to use that machine anyway", field="device")

    def _identity_request(self) -> dict[str, Any]:
        q = wire.identity_query(device=self.device, threads=self.threads, batch=self.batch)
        info = _request(self.address, "GET", q, token=self.token, timeout_s=self.timeout_s, retries=self.retries,
                        backoff_s=self.backoff_s, connect_timeout_s=self.connect_timeout_s)
        if not isinstance(info.get(wire.IDENTITY), dict):
            raise AgentError(f"agent {self.remote}: answer without an identity (protocol {info.get('protocol')!r}); "
                             "update nas on the board")
        return info

    def identity(self) -> dict[str, Any]:
        """The agent's identity (the board's), with the host's exporter version and the agent's address."""
        ident = dict(self.agent_identity)
        ident.update(torch_version=torch_version(), measured_via=f"nas agent at {self.remote}")
        return ident

    def portable(self, model: "nn.Module | bytes", *, input_shape: Sequence[int]) -> bytes:
        """ONNX bytes (exported here once; the table sends its reference probe with every block)."""
        from nas.backends.onnxruntime import export_onnx

        if isinstance(model, (bytes, bytearray)):
            return bytes(model)
        return export_onnx(model, input_shape=self.full_shape(input_shape))

    def measure(self, model: "nn.Module | bytes", *, input_shape: Sequence[int],
                settings: MeasureSettings | None = None) -> Measurement:
        """Export ``model`` here (unless it is ONNX bytes already), time it on the agent.

        Raises:
            AgentError: refused (with the agent's reason: size, repeat or time cap, model check), unreachable
                after the retries, hung, or the agent now reports another machine.
            MeasurementError: the export failed.
        """
        return self.measure_many([model], input_shapes=[input_shape], settings=settings)[0]

    @property
    def max_models(self) -> int:
        """Models the agent takes in one request (agents that do not say took 8)."""
        return int(self.limits.get(wire.LIMIT_MODELS) or wire.OLD_AGENT_MAX_MODELS)

    def measure_many(self, models: Sequence["nn.Module | bytes"], *, input_shapes: Sequence[Sequence[int]],
                     settings: MeasureSettings | None = None) -> list[Measurement]:
        """Time several models on the agent in interleaved rounds, in one request (see
        :meth:`Backend.measure_many`): the pairing of each round happens on the board.

        Raises:
            AgentError: as :meth:`measure`.
            MeasurementError: an export failed.
        """
        settings = settings or MeasureSettings()
        if len(models) != len(input_shapes):
            raise UsageError("measure_many: one input shape per model is required", field="input_shapes")
        shapes = [self.full_shape(s) for s in input_shapes]
        onnx = [self.portable(m, input_shape=s) for m, s in zip(models, shapes)]
        size = sum(len(b) for b in onnx)
        cap = int(self.limits.get(wire.LIMIT_REQUEST_BYTES, 0)) or None
        if cap is not None and size > cap:
            raise AgentError(f"agent {self.remote}: the request is {size / 2**20:.1f} MiB of ONNX, the agent accepts "
                             f"at most {cap / 2**20:.1f} MiB; restart it with a larger request size limit")
        max_rep = int(self.limits.get(wire.LIMIT_REPEATS, 0)) or None
        if max_rep is not None and max(settings.max_repeats, settings.warmup) > max_rep:
            raise AgentError(f"agent {self.remote}: settings ask for {max(settings.max_repeats, settings.warmup)} runs, "
                             f"the agent allows {max_rep}; restart it with a larger repeat limit")
        dropped: list[int] = []
        body, headers = _measure_body(onnx, shapes, settings, self.threads, self.device)
        answer = _request(self.address, "POST", wire.MEASURE_PATH, token=self.token, body=body, headers=headers,
                          timeout_s=self.timeout_s, retries=self.retries, backoff_s=self.backoff_s,
                          connect_timeout_s=self.connect_timeout_s, on_retry=lambda a, why: dropped.append(a))
        if dropped:  # the connection dropped: is the same machine still behind this address?
            self._check_same_agent()
        try:
            out = [Measurement.from_dict(d) for d in answer[wire.MEASUREMENTS]]
        except (KeyError, TypeError, ValueError) as e:
            raise AgentError(f"agent {self.remote}: malformed answer ({type(e).__name__}); update nas on the board"
                             ) from None
        if len(out) != len(onnx):
            raise AgentError(f"agent {self.remote}: {len(out)} measurements for {len(onnx)} models; update nas on "
                             "the board")
        return out

    def _check_same_agent(self) -> None:
        now = self._identity_request()[wire.IDENTITY]
        diff = identity_diff(self.agent_identity, now)
        if diff:
            raise AgentError(f"agent {self.remote} now reports another setup ({'; '.join(diff)}); its last "
                             "measurement was discarded: build a separate table for it")
        self.agent_identity = dict(now)

    def __repr__(self) -> str:
        return (f"<RemoteBackend {self.remote} device={self.device} threads={self.threads} batch={self.batch} "
                f"arch={self.agent_identity.get('arch', '?')}>")


def _factory(*, device: Device, threads: int, batch: int, remote: str | None = None,
             token: str | None = None) -> RemoteBackend:
    if remote is None:
        raise UsageError("runtime 'remote': give remote, the HOST:PORT of a board agent (`nas agent` on the board)",
                         field="remote")
    return RemoteBackend(device=device, threads=threads, batch=batch, remote=remote, token=token)


register("remote", _factory)
