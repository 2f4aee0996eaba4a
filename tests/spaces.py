"""What several test files share: the 12-block tiny space, the fast timing protocol (toy timings only) and
synthetic network timings."""

from __future__ import annotations

from nas.backends import MeasureSettings

# Timing protocol for tests: enough runs for a median, far too few for a figure anyone should quote.
FAST = MeasureSettings(warmup=2, min_repeats=5, max_repeats=40, min_time_s=0.01, rounds=2, retries=0)

# A 32-px space of 12 blocks (its table builds in seconds).
TINY = """
name = "tiny"
resolution = [32]
stem_channels = [8]
head_channels = [32]
[[stages]]
depth = [1, 2]
width = [16, 24]
split_ratio = [0.5]
se = [false]
kernel = [3]
[[stages]]
depth = [1, 2]
width = [32]
split_ratio = [0.5]
se = [false, true]
kernel = [3]
"""


def timed_rows(configs, ms_of, *, t0: float = 1000.0, probe_ms: float = 2.0) -> list[dict]:
    """Rows as :func:`nas.latency.measure.measure_network` writes them, for networks 'timed' at ``ms_of(c)``
    with a probe of ``probe_ms`` (synthetic machines for the transfer's fit)."""
    rows = []
    for i, c in enumerate(configs):
        ms = ms_of(c)
        rows.append({"config": c.to_string(), "raw_ms": ms, "probe_ms": probe_ms, "ratio": ms / probe_ms,
                     "t": t0 + i, "spread_pct": 1.0, "n": 10, "flagged": False})
    return rows
