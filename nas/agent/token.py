"""The agent's shared secret: created once (256 random bits, file mode 0600), then read at every start.

The file's default place, :func:`~nas.agent.protocol.default_token_path`, is a protocol fact (a host on the
same machine reads it too), so it lives in :mod:`nas.agent.protocol`.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from nas.agent.protocol import default_token_path
from nas.errors import AgentError

__all__ = ["MIN_TOKEN_CHARS", "default_token_path", "load_or_create_token", "token_file_is_private"]

MIN_TOKEN_CHARS = 16  # a shorter shared secret is guessable
TOKEN_BYTES = 32  # secrets.token_urlsafe(32): 256 random bits, 43 characters


def load_or_create_token(path: "str | Path | None" = None) -> tuple[str, Path, bool]:
    """Read the agent's shared token, generating it if the file is missing.

    Args:
        path: the token file (default :func:`default_token_path`).

    Returns:
        ``(token, path, generated)``; ``generated`` is True when the file was just created.

    Raises:
        AgentError: the file cannot be read or written, is empty, or holds a token under
            :data:`MIN_TOKEN_CHARS` characters (field ``token_file``).
    """
    p = Path(path).expanduser() if path is not None else default_token_path()
    if p.exists():
        try:
            token = p.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise AgentError(f"token file {p}: cannot read ({e})", field="token_file") from None
        if len(token) < MIN_TOKEN_CHARS:
            raise AgentError(f"token file {p}: token is {len(token)} characters, need >= {MIN_TOKEN_CHARS}; "
                             "delete the file to have a new one generated", field="token_file")
        return token, p, False
    token = secrets.token_urlsafe(TOKEN_BYTES)
    try:
        p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # O_EXCL + mode 0600 at creation: the token is never readable by others, not even briefly.
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(token + "\n")
    except OSError as e:
        raise AgentError(f"token file {p}: cannot create ({e.strerror}); pass a writable path",
                         field="token_file") from None
    return token, p, True


def token_file_is_private(path: Path) -> bool:
    """False if group or others may read the token file (POSIX permissions)."""
    try:
        return os.name != "posix" or (path.stat().st_mode & 0o077) == 0
    except OSError:
        return True
