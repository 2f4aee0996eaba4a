"""Typed errors. The library raises these; only the CLI prints them and exits.

Every message is one line that names the bad field (or path) and says what to do.
``exit_code`` is what ``nas`` returns for it: 2 for anything the user can fix (bad
input, missing file, wrong table, unreachable service), 1 for internal failures.
"""

from __future__ import annotations

__all__ = [
    "NasError",
    "UsageError",
    "SpaceError",
    "ConfigError",
    "BudgetError",
    "TableError",
    "TableMismatchError",
    "MissingEntriesError",
    "BackendUnavailableError",
    "MeasurementError",
    "DataError",
    "TrainingDivergedError",
    "AgentError",
    "StorageError",
    "ExportError",
]


class NasError(Exception):
    """Base of every error ``nas`` raises on purpose.

    Args:
        message: one line that names the bad value and says what to do, in library terms.
        field: the library name of the offending argument or key (``"budget"``, ``"proxy_preset"``,
            ``"table"``), when there is one. Tests assert on it rather than on wording, and the CLI maps it to
            its own flag (``--proxy-preset``) when it prints the message.
    """

    exit_code: int = 2

    def __init__(self, message: str = "", *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class UsageError(NasError):
    """A command-line value or argument combination that cannot work."""


class SpaceError(NasError):
    """A search-space file is missing, malformed, or has a bad key or value."""


class ConfigError(NasError):
    """An architecture config (or preset name) is invalid."""


class BudgetError(NasError):
    """A budget string cannot be parsed, or no network in the space meets it."""


class TableError(NasError):
    """A latency table file is missing, corrupt, or cannot be used."""


class TableMismatchError(TableError):
    """A latency table was measured for another space, resolution, device or setting."""


class MissingEntriesError(TableError):
    """A latency table lacks entries that a config needs."""

    def __init__(self, message: str, missing: list[str] | None = None, *, field: str | None = "table") -> None:
        super().__init__(message, field=field)
        self.missing = list(missing or [])


class BackendUnavailableError(NasError):
    """The requested device or runtime is not available here (no CUDA, not ARM, ...)."""


class MeasurementError(NasError):
    """A latency measurement failed or was refused."""


class DataError(NasError):
    """A data set path is missing, empty, incomplete or corrupt."""


class TrainingDivergedError(NasError):
    """Proxy training produced a non-finite loss; the candidate is recorded as failed."""

    exit_code = 1


class AgentError(NasError):
    """The board agent refused a request, is unreachable, or timed out."""


class StorageError(NasError):
    """An Optuna storage URL is unreachable or a study/trial is missing."""


class ExportError(NasError):
    """An export target or format is invalid, or the exported model failed its check."""
