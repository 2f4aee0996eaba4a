"""Atomic file writes: the one writer every module uses for files a user keeps.

A reader, a crash, a Ctrl-C or a kill sees the old file or the new one, never a partial one: the data goes to a
temp file in the same folder (same file system, so the rename is atomic), is fsynced, then ``os.replace``-d over
the target. A temp file left by a killed writer starts with ``.<name>.`` and ends ``.tmp``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from nas.errors import NasError, UsageError

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "ensure_writable_dir"]


def atomic_write_bytes(path: "str | Path", data: bytes, *, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically, creating the parent folder if needed.

    Args:
        path: the target file.
        data: its whole new content.
        fsync: flush to disk before the rename (off only for files rewritten many times a second, where the
            rename alone keeps them whole after a process kill).

    Returns:
        The path written.

    Raises:
        OSError: the folder cannot be created or written; callers turn it into their typed error.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:  # KeyboardInterrupt too: never leave the temp file behind
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return p


def atomic_write_text(path: "str | Path", text: str, *, fsync: bool = True) -> Path:
    """:func:`atomic_write_bytes` of ``text`` encoded as UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


def atomic_write_json(path: "str | Path", obj: Any, *, indent: int | None = 2) -> Path:
    """:func:`atomic_write_text` of ``obj`` as JSON with a trailing newline (non-JSON values via ``str``)."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, default=str) + "\n")


def ensure_writable_dir(path: "str | Path", *, error: type[NasError] = UsageError, field: str = "out") -> Path:
    """Create ``path`` (and parents) and prove it writable with a probe file, before any slow work starts.

    Args:
        path: the folder.
        error: the typed error to raise (each stage has its own: ``ExportError`` for exports).
        field: the library argument that named the folder, carried by the error.

    Returns:
        The folder as a :class:`~pathlib.Path`.

    Raises:
        NasError: (of type ``error``) it cannot be created or written: a parent is a file, a read-only or
            virtual file system, no permission.
    """
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=p, prefix=".nas-write-probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise error(f"{field} {p}: not a writable directory ({e.strerror or e}); choose another folder",
                    field=field) from None
    return p
