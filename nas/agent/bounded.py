"""Bounded reading of an HTTP request by the agent: a deadline for the request line and headers and another
for the body (the socket's timeout set to the time left before every read, so a client trickling one byte
a second cannot stretch either), a byte budget for the headers, per-peer connection counts, strict JSON
(no NaN, no huge integers, no deep nesting) and log lines without control characters.
"""

from __future__ import annotations

import http.client
import io
import json
import math
import socket
import threading
import time
from typing import Any

__all__ = ["MAX_HEADER_BYTES", "MAX_INT_DIGITS", "DeadlineReader", "PeerCounter", "printable", "strict_json"]

MAX_HEADER_BYTES = 32 * 1024  # request line + headers; a measurement request's metadata for 8 models is ~1 kB
MAX_INT_DIGITS = 18  # the longest integer a request may hold (below 2**63): shapes, sizes, repeats
MAX_LOGGED_CHARS = 300  # a logged request path (or any other client text) is cut to this many characters


class DeadlineReader(io.RawIOBase):
    """The socket as a raw stream whose reads stop at ``deadline`` (``time.monotonic()``) and, while
    ``budget`` is not None, after ``budget`` bytes in all.

    Raises (from reads):
        TimeoutError: the deadline passed (``http.server`` then drops the connection).
        http.client.LineTooLong: the header budget is spent (``http.server`` answers 431).
    """

    def __init__(self, sock: socket.socket, *, deadline: float, budget: int | None) -> None:
        super().__init__()
        self.sock, self.deadline, self.budget = sock, deadline, budget

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("request deadline passed")
        view = memoryview(b)
        if self.budget is not None:
            if self.budget <= 0:
                raise http.client.LineTooLong(f"request line and headers beyond {MAX_HEADER_BYTES} bytes")
            view = view[:self.budget]
        self.sock.settimeout(left)
        n = self.sock.recv_into(view)
        if self.budget is not None:
            self.budget -= n
        return n

    def body_phase(self, seconds: float) -> None:
        """From now on: no byte budget, and ``seconds`` for the rest (the body)."""
        self.budget, self.deadline = None, time.monotonic() + seconds


class PeerCounter:
    """Open connections per peer address, at most ``cap`` each (so one host cannot hold every slot)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.open: dict[str, int] = {}
        self._lock = threading.Lock()

    def enter(self, peer: str) -> bool:
        """Count a new connection from ``peer``; False (nothing counted) if it already has ``cap`` open."""
        with self._lock:
            if self.open.get(peer, 0) >= self.cap:
                return False
            self.open[peer] = self.open.get(peer, 0) + 1
            return True

    def leave(self, peer: str) -> None:
        with self._lock:
            left = self.open.get(peer, 1) - 1
            if left > 0:
                self.open[peer] = left
            else:
                self.open.pop(peer, None)  # no entry kept for a peer that has gone


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text)} digits")
    return int(text)


def _float(text: str) -> float:
    x = float(text)
    if not math.isfinite(x):
        raise ValueError(f"{text[:20]} is not a finite number")
    return x


def strict_json(text: str) -> Any:
    """``json.loads`` refusing NaN/Infinity, numbers that overflow a float, integers over
    :data:`MAX_INT_DIGITS` digits and nesting deeper than Python's recursion limit.

    Raises:
        ValueError: any of those, or text that is not JSON (one line, no input echoed).
    """
    try:
        return json.loads(text, parse_constant=_no_constant, parse_int=_int, parse_float=_float)
    except RecursionError:
        raise ValueError("nested too deep") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e.msg} at character {e.pos})") from None


def printable(text: str, limit: int = MAX_LOGGED_CHARS) -> str:
    """``text`` safe for a log line: control and other non-printable characters escaped (``\\x1b``), cut to
    ``limit`` characters."""
    cut = text[:limit]
    out = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in cut)
    return out + ("..." if len(text) > limit else "")
