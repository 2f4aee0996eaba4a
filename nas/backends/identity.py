"""A measurement's identity: which device, runtime and settings produced it, and the one comparison of two.

Latencies are comparable only between measurements with the same identity in :data:`IDENTITY_KEYS` (a table is
resumed, validated, filled lazily or reused only where they match). Everything else recorded (OS, Python and
torch versions, core count) is provenance: shown, never compared.
"""

from __future__ import annotations

from typing import Any, Iterable

__all__ = ["IDENTITY_KEYS", "identity_diff"]

# The keys of a backend identity that must match for measurements to be comparable (resume, validate).
IDENTITY_KEYS: tuple[str, ...] = ("device", "backend", "cpu_model", "arch", "runtime", "runtime_version",
                                  "provider", "threads", "batch", "gpu_model")


def identity_diff(stored: dict[str, Any], now: dict[str, Any], *, keys: Iterable[str] = IDENTITY_KEYS,
                  sides: tuple[str, str] = ("", "")) -> list[str]:
    """The keys on which two identities differ, each as ``"key <stored> vs <now>"`` (empty when they match).

    A key absent from both sides is no difference; absent from one side it is (``None`` on that side).

    Args:
        stored: the identity recorded with the earlier measurements (a table's, an agent's first answer).
        now: the identity of the machine or agent at hand.
        keys: the keys compared (default :data:`IDENTITY_KEYS`).
        sides: names for the two sides, e.g. ``("table", "here")``, shown before each value when given.
    """
    a, b = (f"{s} " if s else "" for s in sides)
    return [f"{k} {a}{stored.get(k)!r} vs {b}{now.get(k)!r}" for k in keys
            if (k in stored or k in now) and stored.get(k) != now.get(k)]
