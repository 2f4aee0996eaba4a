"""How many digits a latency table stores: relative precision, the same for a 0.01 ms block and a 300 ms net."""

from __future__ import annotations

__all__ = ["sig"]


def sig(x: float, digits: int = 6) -> float:
    """Round ``x`` to ``digits`` significant digits."""
    return float(f"{x:.{digits}g}")
