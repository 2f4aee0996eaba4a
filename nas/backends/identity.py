"""A measurement's identity: which device, runtime and settings produced it, and the one comparison of two.

Latencies are comparable only between measurements with the same identity in :data:`IDENTITY_KEYS` (a table is
resumed, validated, filled lazily or reused only where they match). Everything else recorded (OS, Python and
torch versions, core count) is provenance: shown, never compared.
"""

from __future__ import annotations

from typing import Any, Iterable

__all__ = ["IDENTITY_KEYS", "IF_BOTH_KEYS", "identity_diff"]

# The keys of a backend identity that must match for measurements to be comparable (resume, validate).
IDENTITY_KEYS: tuple[str, ...] = ("device", "backend", "cpu_model", "arch", "runtime", "runtime_version",
                                  "provider", "threads", "batch", "gpu_model", "cpu_signature")
# Keys newer than some stored identities: compared only where both sides record them, so a table built before
# the key existed is not called foreign for lacking it (cpu_signature: x86 family/model/stepping, 2026-12).
IF_BOTH_KEYS: frozenset[str] = frozenset({"cpu_signature"})


def identity_diff(stored: dict[str, Any], now: dict[str, Any], *, keys: Iterable[str] = IDENTITY_KEYS,
                  sides: tuple[str, str] = ("", "")) -> list[str]:
    """The keys on which two identities differ, each as ``"key <stored> vs <now>"`` (empty when they match).

    A key absent from both sides is no difference; absent from one side it is (``None`` on that side), except
    for :data:`IF_BOTH_KEYS`, compared only where both sides have them.

    Args:
        stored: the identity recorded with the earlier measurements (a table's, an agent's first answer).
        now: the identity of the machine or agent at hand.
        keys: the keys compared (default :data:`IDENTITY_KEYS`).
        sides: names for the two sides, e.g. ``("table", "here")``, shown before each value when given.
    """
    a, b = (f"{s} " if s else "" for s in sides)
    return [f"{k} {a}{stored.get(k)!r} vs {b}{now.get(k)!r}" for k in keys
            if (k in stored and k in now if k in IF_BOTH_KEYS else k in stored or k in now)
            and stored.get(k) != now.get(k)]
