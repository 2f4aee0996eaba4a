"""What several test files share: the 12-block tiny space and the fast timing protocol (toy timings only)."""

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
