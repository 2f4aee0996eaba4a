"""The measuring process: onnxruntime session creation and every timed run happen in a child process that the
agent can kill, with an address-space limit and a wall-clock deadline.

The agent (:class:`Worker`, in the server's process) keeps one warm child (``python -m nas.agent.worker``,
started in a private empty directory) and reuses it between requests, so a request pays no start-up. A
child that runs past the deadline is killed (SIGKILL) and replaced; one that fails (out of memory under its
``RLIMIT_AS``, an onnxruntime error) answers the error and is replaced too, so no state survives a failure.

Framing over the child's stdin/stdout (nothing is pickled): each message is an 8-byte big-endian length and
that many bytes of JSON; a request's JSON is followed by the models' bytes (``sizes`` of them, in order).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Sequence

from nas.agent.request import MeasureRequest
from nas.agent.protocol import TOKEN_ENV, AgentLimits
from nas.backends.base import Measurement
from nas.errors import MeasurementError

__all__ = ["KILL_GRACE_S", "START_TIMEOUT_S", "Worker", "worker_main"]

KILL_GRACE_S = 0.5  # the child checks the deadline itself between runs; killed this long after it (s)
START_TIMEOUT_S = 60.0  # a child must import onnxruntime and say it is ready within this (a Pi takes ~3 s)
LENGTH_BYTES = 8  # frame header: big-endian length of the JSON that follows
MAX_ANSWER_BYTES = 16 * 2**20  # an answer is a few kB per model; a longer one means a broken child
WRITE_CHUNK = 1 << 20  # models are written to the child 1 MiB at a time, the deadline checked between


def _frame(obj: dict[str, Any]) -> bytes:
    data = json.dumps(obj).encode("utf-8")
    return len(data).to_bytes(LENGTH_BYTES, "big") + data


class _ChildGone(Exception):
    """The child died, closed its pipe or sent garbage (the message says which)."""


class Worker:
    """The agent's side of the measuring child: starts it, sends it a checked request, kills it past the deadline.

    Args:
        limits: the agent's caps (``max_seconds`` is the deadline, ``max_memory_bytes`` the child's extra
            address space beyond its size once onnxruntime is imported).

    Not thread-safe by itself; :meth:`measure` holds its own lock (the server holds the measurement lock too).
    """

    def __init__(self, *, limits: AgentLimits) -> None:
        self.limits = limits
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready = False
        self.workdir: str | None = None
        self.kills = 0  # children killed or replaced after a failure (reported in the agent's stats)
        self._lock = threading.Lock()

    # -- the child's life
    def start(self) -> None:
        """Start a child now (without waiting for it); :meth:`measure` waits for it to be ready."""
        if self.proc is not None:
            return
        self.workdir = tempfile.mkdtemp(prefix="nas-agent-worker-")  # mode 0700, empty: no files to read
        cmd = [sys.executable, "-m", "nas.agent.worker", str(int(self.limits.max_memory_bytes))]
        env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}  # the child never needs the token
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=self.workdir,
                                     close_fds=True, env=env)
        self.ready = False

    def stop(self) -> None:
        """Kill the child (if any) and remove its directory."""
        proc, self.proc, self.ready = self.proc, None, False
        if proc is not None:
            proc.kill()
            proc.wait()
            for f in (proc.stdin, proc.stdout):
                if f is not None:
                    f.close()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def _replace(self) -> None:
        self.kills += 1
        self.stop()
        self.start()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    # -- pipes with a deadline
    def _read(self, n: int, deadline: float) -> bytes:
        assert self.proc is not None and self.proc.stdout is not None
        fd, parts, got = self.proc.stdout.fileno(), [], 0
        while got < n:  # bounded: each pass reads >= 1 byte, or raises at the deadline / end of stream
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
            part = os.read(fd, min(n - got, WRITE_CHUNK))
            if not part:
                raise _ChildGone(f"it exited (code {self.proc.poll()})")
            parts.append(part)
            got += len(part)
        return b"".join(parts)

    def _write(self, data: bytes | memoryview, deadline: float) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        fd, view = self.proc.stdin.fileno(), memoryview(data)
        while len(view):  # bounded: each pass writes >= 1 byte, or raises
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([], [fd], [], left)[1]:
                raise TimeoutError
            try:
                view = view[os.write(fd, view[:WRITE_CHUNK]):]
            except (BrokenPipeError, ConnectionResetError):
                raise _ChildGone(f"it exited (code {self.proc.poll()})") from None

    def _answer(self, deadline: float) -> dict[str, Any]:
        n = int.from_bytes(self._read(LENGTH_BYTES, deadline), "big")
        if n > MAX_ANSWER_BYTES:
            raise _ChildGone(f"it sent a {n}-byte answer")
        try:
            obj = json.loads(self._read(n, deadline))
        except ValueError:
            raise _ChildGone("it sent an answer that is not JSON") from None
        if not isinstance(obj, dict):
            raise _ChildGone("it sent an answer that is not a JSON object")
        return obj

    def _wait_ready(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:  # died while idle (e.g. the OOM killer)
            self._replace()
        if self.proc is None:
            self.start()
        if not self.ready:
            self._answer(time.monotonic() + START_TIMEOUT_S)  # {"ready": pid}
            self.ready = True

    # -- one measurement
    def measure(self, models: Sequence[bytes], request: MeasureRequest) -> list[Measurement]:
        """Time a checked request's models in the child, within ``limits.max_seconds``.

        Args:
            models: the request's ONNX models (already checked), in body order.
            request: the checked request.

        Returns:
            One :class:`Measurement` per model.

        Raises:
            MeasurementError: onnxruntime could not load or run a model, the child ran out of memory, died,
                or ran past ``max_seconds`` (field ``max_seconds``; the child is killed and replaced).
        """
        with self._lock:
            try:
                self._wait_ready()
            except (TimeoutError, _ChildGone) as e:
                self._replace()
                raise MeasurementError(f"the measuring process did not start ({e or 'timed out'}); retry") from None
            t0 = time.monotonic()
            deadline = t0 + self.limits.max_seconds + KILL_GRACE_S
            head = {"input_shapes": [list(s) for s in request.input_shapes], "sizes": list(request.sizes),
                    "settings": request.settings.to_dict(), "threads": request.threads, "device": request.device,
                    "max_seconds": self.limits.max_seconds}
            try:
                self._write(_frame(head), deadline)
                for m in models:
                    self._write(m, deadline)
                answer = self._answer(deadline)
            except TimeoutError:
                self._replace()
                raise MeasurementError(f"measurement killed after {time.monotonic() - t0:.1f} s: past this agent's "
                                       f"max_seconds limit {self.limits.max_seconds:g} s",
                                       field="max_seconds") from None
            except _ChildGone as e:
                self._replace()
                raise MeasurementError(f"the measuring process died ({e}); the model may need more memory than "
                                       f"this agent's max_memory_bytes limit", field="max_memory_bytes") from None
            if "measurements" not in answer:
                self._replace()  # no state of a failed run (e.g. a failed allocation) is kept
                raise MeasurementError(str(answer.get("error", "the measuring process failed"))[:500],
                                       field=answer.get("field"))
        return [Measurement.from_dict(d) for d in answer["measurements"]]


# --------------------------------------------------------------------------- the child
def _limit_address_space(extra_bytes: int) -> None:
    """RLIMIT_AS = this process's size now (onnxruntime imported) + ``extra_bytes`` (Linux; elsewhere none)."""
    import resource

    try:
        with open("/proc/self/status", encoding="ascii") as f:
            vm_kb = next(int(line.split()[1]) for line in f if line.startswith("VmSize:"))
    except (OSError, StopIteration, ValueError):
        return
    limit = vm_kb * 1024 + extra_bytes
    try:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ValueError, OSError):
        pass


def _read_exactly(f: Any, n: int) -> bytes | None:
    data = f.read(n)
    return data if len(data) == n else None


def _serve_one(head: dict[str, Any], models: list[bytes]) -> dict[str, Any]:
    """Time one request (the child's side of :meth:`Worker.measure`); errors become ``{"error", "field"}``."""
    from nas.agent.measure import time_models
    from nas.backends.base import MeasureSettings
    from nas.errors import NasError

    try:
        ms = time_models(models, input_shapes=[tuple(s) for s in head["input_shapes"]],
                         settings=MeasureSettings.from_dict(head["settings"]), threads=int(head["threads"]),
                         device=str(head["device"]), max_seconds=float(head["max_seconds"]))
        return {"measurements": [m.to_dict() for m in ms]}
    except MemoryError:
        return {"error": "out of memory: the model needs more than this agent's max_memory_bytes limit",
                "field": "max_memory_bytes"}
    except NasError as e:
        msg = str(e)
        if "allocat" in msg.lower():  # onnxruntime's "Failed to allocate memory" under RLIMIT_AS
            msg += " (beyond this agent's max_memory_bytes limit)"
        return {"error": msg, "field": e.field}
    except Exception as e:  # one line back to the agent, never a traceback
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"}


def worker_main(argv: Sequence[str]) -> int:
    """The child: import onnxruntime, limit its address space, say ready, then serve requests from stdin
    until it closes (the agent exited or replaced it)."""
    import onnxruntime  # noqa: F401 - imported before the limit is set: its size is the baseline

    import nas.agent.measure  # noqa: F401

    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed by a library goes to stderr, never into the frames
    inp = sys.stdin.buffer
    _limit_address_space(int(argv[0]) if argv else 0)
    out.write(_frame({"ready": os.getpid()}))
    out.flush()
    while True:  # bounded by the agent: it closes stdin or kills this process
        raw = _read_exactly(inp, LENGTH_BYTES)
        if raw is None:
            return 0
        data = _read_exactly(inp, int.from_bytes(raw, "big"))
        head = json.loads(data) if data is not None else None
        models = [_read_exactly(inp, int(n)) for n in head["sizes"]] if head is not None else [None]
        if head is None or any(m is None for m in models):
            return 0
        out.write(_frame(_serve_one(head, models)))  # type: ignore[arg-type]
        out.flush()


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
