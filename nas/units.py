"""Budgets and units: the one place where "FLOPs" is decided.

In this project, as in the ShuffleNetV2 paper, **FLOPs means multiply-adds (MACs)** of the
convolutions and the fully connected layer. ``150MFLOPs`` is therefore 150 million MACs; the
library's names always say ``macs`` and the CLI's ``mflops`` is MACs in millions.

Budget strings:

* ``150MFLOPs``, ``0.15GFLOPs``, ``150MMACs``, ``150M`` is refused (no unit);
* ``5ms``, ``5.5ms``, ``500us``, ``0.005s`` (latency, stored in milliseconds);
* ``3Mparams``, ``500Kparams``, ``3000000params``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from nas.errors import BudgetError

__all__ = ["Budget", "parse_budget", "Metric"]

Metric = Literal["macs", "latency_ms", "params"]

_SCALE = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9}
_PATTERN = re.compile(r"^\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z]*)\s*$")


@dataclass(frozen=True)
class Budget:
    """An upper bound on one metric. ``limit`` is in the metric's base unit (MACs, ms, params)."""

    metric: Metric
    limit: float
    text: str

    def slack(self, value: float) -> float:
        """Optuna constraint value: feasible when <= 0."""
        return value - self.limit

    def __str__(self) -> str:
        return self.text


def parse_budget(text: str) -> Budget:
    """Parse ``150MFLOPs``, ``5ms`` or ``3Mparams`` into a :class:`Budget`.

    Raises:
        BudgetError: no unit, an unknown unit, or a value that is not positive.
    """
    m = _PATTERN.match(text or "")
    if not m:
        raise BudgetError(f"budget {text!r}: not a number with a unit; write e.g. 150MFLOPs, 5ms or 3Mparams",
                          field="budget")
    value = float(m.group(1))
    unit = m.group(2)
    if text.strip().startswith("-") or value <= 0:
        raise BudgetError(f"budget {text!r}: must be positive", field="budget")
    if not unit:
        raise BudgetError(f"budget {text!r}: no unit; write e.g. 150MFLOPs, 5ms or 3Mparams", field="budget")
    low = unit.lower()
    for suffix, metric in (("flops", "macs"), ("macs", "macs"), ("params", "params")):
        if low.endswith(suffix):
            prefix = unit[: len(unit) - len(suffix)]
            if prefix not in _SCALE:
                break
            return Budget(metric=metric, limit=value * _SCALE[prefix], text=text.strip())
    if low in ("ms", "us", "s"):
        limit_ms = value * {"ms": 1.0, "us": 1e-3, "s": 1e3}[low]
        return Budget(metric="latency_ms", limit=limit_ms, text=text.strip())
    raise BudgetError(
        f"budget {text!r}: unknown unit {unit!r}; use MFLOPs/GFLOPs (mult-adds), ms, or Mparams/Kparams",
        field="budget")
