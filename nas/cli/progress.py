"""The one progress display of the CLI: a rich bar with ETA on a terminal, plain lines in a log.

Library functions report progress through plain callbacks; the CLI turns them into a :class:`Bars`. When
stderr is not a terminal (a build redirected to a file, a board's systemd journal), rich's live bar would print
nothing until the end, so each task writes a line ``description: done/total (pct) elapsed, eta`` at most every
``PLAIN_EVERY_S`` seconds and when it completes.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any, Iterator

__all__ = ["Bars", "bars"]

PLAIN_EVERY_S = 10.0  # a log line every 10 s per task: enough to see a 15-minute build move, few enough to read


def _clock(seconds: float) -> str:
    s = int(max(seconds, 0))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Bars:
    """Tasks with a count, a total and a label; shown live on a terminal, as rate-limited lines elsewhere."""

    def __init__(self, *, live: bool) -> None:
        self.live = live
        self._tasks: dict[str, dict[str, Any]] = {}
        self._rich: Any = None

    def __enter__(self) -> "Bars":
        if self.live:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            from nas.cli import err_console

            self._rich = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                                  TextColumn("[dim]{task.fields[label]}"), console=err_console(), transient=False)
            self._rich.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._rich is not None:
            self._rich.__exit__(*exc)

    def update(self, key: str, *, done: int, total: int | None, description: str | None = None,
               label: str = "") -> None:
        """Set task ``key``'s progress (created on first use; ``description`` defaults to ``key``)."""
        desc = description if description is not None else key
        t = self._tasks.get(key)
        if t is None:
            t = self._tasks[key] = {"start": time.monotonic(), "start_done": done, "last": 0.0, "id": None}
            if self._rich is not None:
                t["id"] = self._rich.add_task(desc, total=total, completed=done, label=label[:48])
        if self._rich is not None:
            self._rich.update(t["id"], completed=done, total=total, description=desc, label=label[:48])
            return
        now = time.monotonic()
        finished = total is not None and done >= total
        if not finished and now - t["last"] < PLAIN_EVERY_S:
            return
        t["last"] = now
        elapsed = now - t["start"]
        line = f"{desc}: {done}" + (f"/{total} ({100 * done / max(total, 1):.0f} %)" if total else "")
        line += f", {_clock(elapsed)} elapsed"
        rate = (done - t["start_done"]) / elapsed if elapsed > 0 else 0.0
        if total and not finished and rate > 0:
            line += f", eta {_clock((total - done) / rate)}"
        sys.stderr.write(line + (f" [{label[:48]}]" if label else "") + "\n")
        sys.stderr.flush()

    def print(self, text: str) -> None:
        """A line above the bars (or in the log)."""
        if self._rich is not None:
            self._rich.console.print(text)
        else:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()


@contextlib.contextmanager
def bars(enabled: bool = True) -> Iterator[Bars | None]:
    """A :class:`Bars` (live when stderr is a terminal), or ``None`` when ``enabled`` is false (``--json``)."""
    if not enabled:
        yield None
        return
    with Bars(live=sys.stderr.isatty()) as b:
        yield b
