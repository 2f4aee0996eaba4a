"""The identity check on use: is a table for a local device being used on the machine it was built on?

A table measured on this machine's CPU (or GPU) predicts latencies on *that* machine; on another CPU model the
same file is silently wrong (issue 14: 36 % off on average from an AMD EPYC table on an Intel Xeon).
:func:`table_mismatch` compares the table's recorded identity with this machine's, on
:data:`USE_KEYS` (the comparable identity keys plus the core count). Tables measured through a board agent
(their identity records ``measured_via``) describe the board, not this host, and are never compared here.

The library only returns and raises; the CLI turns a mismatch into one warning line (or, strict, an error).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nas.backends.identity import IDENTITY_KEYS, identity_diff
from nas.errors import BackendUnavailableError, TableMismatchError

if TYPE_CHECKING:  # pragma: no cover
    from nas.latency.table import LatencyTable

__all__ = ["USE_KEYS", "is_local_table", "here_identity", "table_mismatch", "check_table_identity"]

# Compared on use: the keys that make measurements comparable, plus the core count (a 2-core and a 64-core
# machine of the same CPU model differ in cache and memory bandwidth per core).
USE_KEYS: tuple[str, ...] = IDENTITY_KEYS + ("cpu_count",)
UNAVAILABLE = "unavailable here"  # the ``backend`` recorded for this machine when the table's cannot be created


def is_local_table(table: "LatencyTable") -> bool:
    """True when ``table`` was measured on a local device (not through a board agent, see the module doc)."""
    return "measured_via" not in table.identity


def here_identity(table: "LatencyTable") -> dict[str, Any]:
    """This machine's identity for the table's device, runtime, threads and batch.

    Args:
        table: the table whose backend is looked up here (``identity["backend"]``, its device, threads, batch).

    Returns:
        The backend's identity; where that backend cannot be created here (no CUDA, runtime not installed), the
        host identity with ``backend`` = ``"unavailable here"``, which never matches a table's.
    """
    from nas.backends import get_backend
    from nas.backends.host import host_identity

    try:
        backend = get_backend(table.device, threads=table.threads, batch=table.batch,  # type: ignore[arg-type]
                              runtime=table.identity.get("backend"))
        return backend.identity()
    except BackendUnavailableError:
        ident = host_identity(device=table.device, threads=table.threads, batch=table.batch)
        ident["backend"] = UNAVAILABLE
        return ident


def table_mismatch(table: "LatencyTable", *, here: dict[str, Any] | None = None) -> list[str]:
    """How a local table's identity differs from this machine's (empty: it was built here, or is remote).

    Args:
        table: a loaded table.
        here: this machine's identity (default: :func:`here_identity`; tests pass a doctored one).

    Returns:
        One ``"key table <stored> vs here <now>"`` string per differing key of :data:`USE_KEYS`.
    """
    if not is_local_table(table):
        return []
    now = here_identity(table) if here is None else here
    diff = identity_diff(table.identity, now, keys=USE_KEYS, sides=("table", "here"))
    return diff + _unrecorded(table.identity, now)


def _unrecorded(stored: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The CPU the table cannot vouch for: it records no ``cpu_signature`` and its ``cpu_model`` carries no model
    number ("AMD EPYC"), a name this project saw on three CPUs whose speeds differed by a third (README), while
    this machine has a signature. Compared on use only: resuming or validating such a table is not refused."""
    name = str(stored.get("cpu_model") or "")
    if ("cpu_signature" in stored or not now.get("cpu_signature") or stored.get("cpu_model") != now.get("cpu_model")
            or any(ch.isdigit() for ch in name)):
        return []
    return [f"cpu_signature table not recorded ({name!r} names several CPUs) vs here {now['cpu_signature']!r}"]


def check_table_identity(table: "LatencyTable", *, strict: bool = False,
                         here: dict[str, Any] | None = None) -> list[str]:
    """:func:`table_mismatch`, raising when ``strict``.

    Args:
        table: a loaded table.
        strict: a mismatch is an error instead of a returned list.
        here: this machine's identity (default: :func:`here_identity`).

    Returns:
        The mismatch list (empty when the table was built here or is remote).

    Raises:
        TableMismatchError: ``strict`` and the identities differ (``field="table"``).
    """
    diff = table_mismatch(table, here=here)
    if diff and strict:
        raise TableMismatchError(f"{table.path or 'table'}: built on another machine ({'; '.join(diff)}); build a "
                                 "table here (build_table) or transfer this one (transfer_table)", field="table")
    return diff
