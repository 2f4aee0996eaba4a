"""Machine-local paths kept out of the files a table build writes for sharing.

A table records where its space came from (``space.source``); a build used to store the absolute path of the
space file (e.g. the checkout it was built in), which means nothing on another machine and leaks a local
directory into a shipped file. :func:`portable_source` is what is written instead.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

__all__ = ["SHIPPED_SPACES_DIR", "portable_source"]

SHIPPED_SPACES_DIR = "search_spaces"  # how a shipped space file is named in a table: search_spaces/<name>.toml


def portable_source(source: str) -> str:
    """``source`` without machine-local directories.

    Args:
        source: a space's source as loaded (an absolute or relative path, or any description).

    Returns:
        A relative path or description unchanged; a shipped space (from this checkout or another one) as
        ``search_spaces/<file>``; a file under the
        working directory relative to it; any other absolute path as its file name only.
    """
    if not source or not os.path.isabs(source):
        return source
    p = Path(source)
    try:
        shipped = Path(str(resources.files("nas.search_spaces")))
    except ModuleNotFoundError:  # pragma: no cover - a build without the package data
        shipped = None
    if shipped is not None and (p.parent.resolve() == shipped.resolve()
                                or (p.parent.name == SHIPPED_SPACES_DIR and (shipped / p.name).is_file())):
        return f"{SHIPPED_SPACES_DIR}/{p.name}"  # this checkout's, or another checkout's copy of a shipped space
    try:
        return p.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return p.name
