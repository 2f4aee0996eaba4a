"""Where a study lives: storage URLs, opening a study, and the claim lock that keeps trial numbers dense.

* **Default: SQLite** at ``runs/<study>/study.db`` (:func:`default_storage`), in WAL mode. SQLite commits
  atomically, so ``kill -9`` loses at most the trial in flight; a journal file is append-only but a torn last
  line makes every later read fail. SQLite serves several processes on one machine and is a plain URL for
  ``nas report``/``nas export``/``optuna-dashboard``; for several machines use PostgreSQL (or any SQLAlchemy
  URL Optuna accepts) and give every worker the same storage and study.
* **Exactly N trials, any number of workers.** A worker claims a trial under a lock that spans "count the
  study's trials" and "create one" (:class:`ClaimLock`: ``flock`` beside an SQLite file, ``pg_advisory_lock``
  on PostgreSQL, ``GET_LOCK`` on MySQL; all released by the OS/server if the worker dies), so the count never
  passes N and trial numbers stay unique and dense.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.errors import StorageError

if TYPE_CHECKING:  # pragma: no cover
    import optuna

__all__ = ["default_storage", "open_study", "make_storage", "normalize_url", "redact", "ClaimLock",
           "HEARTBEAT_S", "GRACE_S"]

HEARTBEAT_S = 10  # a running trial writes a heartbeat this often (s) ...
GRACE_S = 60  # ... and is failed by any worker once none came for this long (a worker on another host died)
SQLITE_TIMEOUT_S = 60.0  # how long an SQLite writer waits for another process's write lock
CONNECT_TIMEOUT_S = 5  # server storages: fail fast on an unreachable host instead of hanging


def default_storage(*, study: str, out_dir: "str | Path | None" = None) -> str:
    """The default storage URL of a study: SQLite ``<out_dir>/study.db``, ``out_dir`` = ``runs/<study>``.

    The search, its report and the export all resolve a missing storage through this.

    Args:
        study: the study name.
        out_dir: the results folder (default ``runs/<study>``, relative to the working directory).

    Returns:
        An absolute ``sqlite:///`` URL (the file need not exist yet).
    """
    d = Path(out_dir) if out_dir is not None else Path("runs") / study
    return f"sqlite:///{d.absolute() / 'study.db'}"


def redact(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def normalize_url(url: str) -> str:
    """A path becomes an SQLite URL; ``postgresql://`` uses psycopg2 when psycopg 3 is not installed
    (SQLAlchemy 2.1 defaults to psycopg 3; this project ships psycopg2-binary)."""
    if "://" not in url:
        return f"sqlite:///{Path(url).absolute()}"
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        import importlib.util

        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
            return "postgresql+psycopg2://" + url.split("://", 1)[1]
    return url


def _sqlite_path(url: str) -> Path | None:
    m = re.match(r"^sqlite(\+\w+)?:///(.*)$", url)
    if not m or m.group(2) in ("", ":memory:"):
        return None
    return Path(m.group(2))


def make_storage(url: str, *, create: bool) -> "optuna.storages.RDBStorage":
    """An Optuna RDB storage with a heartbeat, fast connection failure and (SQLite) WAL mode.

    Raises:
        StorageError: unreachable server, bad URL, missing SQLite file (when not ``create``).
    """
    import optuna

    url = normalize_url(url)
    kwargs: dict[str, Any] = {}
    db = _sqlite_path(url)
    if url.startswith("sqlite"):
        if db is not None:
            if not db.exists() and not create:
                raise StorageError(f"storage {url}: no such database file {db}; run the search first or "
                                   "pass the storage URL it used", field="storage")
            try:
                db.parent.mkdir(parents=True, exist_ok=True)
                import sqlite3

                # WAL: the live view's reads do not block the workers' writes; durable across kill -9.
                with sqlite3.connect(db, timeout=SQLITE_TIMEOUT_S) as con:
                    con.execute("PRAGMA journal_mode=WAL")
            except Exception as e:  # OSError, sqlite3.Error (not an OSError): unwritable folder, not a database
                raise StorageError(f"storage {url}: cannot open the database ({e})", field="storage") from None
        kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT_S}
    elif url.startswith("postgresql") or url.startswith("mysql"):
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
        kwargs["pool_pre_ping"] = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S,
                                              grace_period=GRACE_S)
    except Exception as e:  # SQLAlchemy/driver errors of every kind: unreachable, auth, bad URL, no driver
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise StorageError(f"storage {redact(url)}: cannot connect ({first})", field="storage") from None


def open_study(*, study: str, storage: str | None, out_dir: "str | Path | None" = None) -> "optuna.Study":
    """Open an existing study (nothing is created).

    Args:
        study: the study name.
        storage: an Optuna storage URL or an SQLite file path; None = :func:`default_storage`.
        out_dir: the results folder the default storage lives in (default ``runs/<study>``).

    Returns:
        The loaded ``optuna.Study``.

    Raises:
        StorageError: the storage is unreachable, or has no study of that name (the message lists them).
    """
    import optuna

    url = storage or default_storage(study=study, out_dir=out_dir)
    st = make_storage(url, create=False)
    names = [s.study_name for s in st.get_all_studies()]
    if study not in names:
        raise StorageError(f"study {study!r}: not in {redact(url)} (studies: {', '.join(names) or 'none'})",
                           field="study")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return optuna.load_study(study_name=study, storage=st)


class ClaimLock:
    """Serialises "count the trials, create one" across processes and hosts for one study."""

    def __init__(self, url: str, study: str) -> None:
        self.url = normalize_url(url)
        self.study = study
        self._fd: int | None = None
        self._conn: Any = None
        self._engine: Any = None
        digest = hashlib.sha256(f"nas-search:{study}".encode()).digest()
        self._key = int.from_bytes(digest[:8], "big", signed=True)  # pg advisory locks take a signed bigint
        self.kind = ("sqlite" if self.url.startswith("sqlite") else "postgresql" if self.url.startswith("postgres")
                     else "mysql" if self.url.startswith("mysql") else "none")

    def __enter__(self) -> "ClaimLock":
        if self.kind == "sqlite":
            db = _sqlite_path(self.url)
            if db is not None:
                self._fd = os.open(f"{db}.claim-lock", os.O_RDWR | os.O_CREAT, 0o644)
                fcntl.flock(self._fd, fcntl.LOCK_EX)  # released by the kernel if this process dies
        elif self.kind in ("postgresql", "mysql"):
            import sqlalchemy as sa

            if self._engine is None:
                self._engine = sa.create_engine(self.url, connect_args={"connect_timeout": CONNECT_TIMEOUT_S},
                                                poolclass=sa.pool.NullPool)
            self._conn = self._engine.connect()
            if self.kind == "postgresql":  # session lock: the server drops it when the connection dies
                self._conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": self._key})
            else:
                self._conn.execute(sa.text("SELECT GET_LOCK(:k, 3600)"), {"k": f"nas:{self._key}"})
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        if self._conn is not None:
            import sqlalchemy as sa

            try:
                if self.kind == "postgresql":
                    self._conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
                else:
                    self._conn.execute(sa.text("SELECT RELEASE_LOCK(:k)"), {"k": f"nas:{self._key}"})
            finally:
                self._conn.close()
                self._conn = None

