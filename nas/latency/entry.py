"""One measured block of a latency table: its raw time, the probe's time beside it, later runs, its cold run."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from nas.arch import BlockKey
from nas.latency.cold import ColdRun
from nas.latency.rounding import sig

__all__ = ["Entry"]


@dataclass
class Entry:
    """One measured block. ``ms`` is ``raw_ms`` rescaled to the table's reference speed (derived, see
    ``LatencyTable.rescale``)."""

    key: BlockKey
    raw_ms: float
    spread_pct: float
    n: int
    t: float  # unix time of the measurement (s): places it on the probe timeline
    probe_ms: float = 0.0  # the reference probe's median in the same interleaved rounds
    ratio: float = 0.0  # median over rounds of block / probe round medians
    flagged: bool = False
    attempts: int = 1
    ms: float = 0.0
    # Later measurements of the same block (verify pass), each [t, raw_ms, probe_ms, ratio, spread_pct, n].
    more: list[list[float]] = field(default_factory=list)
    # Cold-weights measurement (nas.latency.cold), per copy; None where the block's weights are small
    # (cold = warm) or not measured yet.
    cold: ColdRun | None = None

    def runs(self) -> list[tuple[float, float, float, float]]:
        """Every measurement as (t, raw_ms, probe_ms, ratio), the first one first."""
        return [(self.t, self.raw_ms, self.probe_ms, self.ratio)] + [(r[0], r[1], r[2], r[3]) for r in self.more]

    def add_run(self, other: "Entry") -> None:
        self.more.append([round(other.t, 3), sig(other.raw_ms), sig(other.probe_ms), sig(other.ratio),
                          round(other.spread_pct, 2), other.n])
        self.flagged = self.flagged and other.flagged  # a clean re-measurement clears the flag

    def disagreement(self) -> float:
        """Relative range of the runs' block/probe ratios (0 with one run)."""
        ratios = [r[3] for r in self.runs() if r[3] > 0]
        return (max(ratios) - min(ratios)) / statistics.median(ratios) if len(ratios) > 1 else 0.0

    def to_dict(self) -> dict[str, Any]:
        k = self.key
        return {"ms": sig(self.ms), "raw_ms": sig(self.raw_ms), "probe_ms": sig(self.probe_ms),
                "ratio": sig(self.ratio), "spread_pct": round(self.spread_pct, 2),
                "n": self.n, "t": round(self.t, 3), "flagged": self.flagged, "attempts": self.attempts,
                **({"more": self.more} if self.more else {}),
                **({"cold": self.cold.to_list()} if self.cold else {}),
                "key": {"kind": k.kind, "resolution": k.resolution, "in_channels": k.in_channels,
                        "out_channels": k.out_channels, "split_ratio": k.split_ratio, "se": k.se, "kernel": k.kernel,
                        "residual": k.residual, "extra_dw": k.extra_dw}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Entry":
        return cls(key=BlockKey.from_dict(d["key"]), raw_ms=float(d["raw_ms"]), spread_pct=float(d["spread_pct"]),
                   n=int(d["n"]), t=float(d["t"]), probe_ms=float(d.get("probe_ms", 0.0)),
                   ratio=float(d.get("ratio", 0.0)), flagged=bool(d.get("flagged", False)),
                   attempts=int(d.get("attempts", 1)), ms=float(d.get("ms", d["raw_ms"])),
                   more=[list(map(float, r)) for r in d.get("more", [])],
                   cold=ColdRun.from_list(d["cold"]) if d.get("cold") else None)
