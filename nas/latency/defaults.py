"""Defaults of the latency tables: the shipped table, a build's default file name, the measurement protocols.

Nothing here reads a file: :func:`default_table_path` only names the shipped table (``latency_tables/`` in the
repo, the ``nas.latency_tables`` package data once installed).
"""

from __future__ import annotations

import platform
from importlib import resources
from pathlib import Path

from nas.backends.base import MeasureSettings

__all__ = ["DEFAULT_TABLE", "default_table_path", "default_table_name", "BLOCK_SETTINGS", "NETWORK_SETTINGS",
           "COLD_SETTINGS", "CALIBRATION_SEED", "VERIFY_TOLERANCE", "BLOCKS_PER_REQUEST",
           "GROUP_MAX_BYTES"]

DEFAULT_TABLE = "shufflenetv2_cpu_x86_64_t1_b1_r224.json"  # shipped table of the default space

# Blocks: >= 0.1 s of timed runs (>= 20 runs) each, and as much for the probe, in 10 interleaved rounds (the
# block/probe ratio is taken per round, so a burst of load from other processes hits both sides of a ratio).
# No retry on a wide spread of raw times (it is flagged): on a busy machine the paired ratio is steadier than
# the raw times and a retry doubled the build time; the verify pass re-measures the repeated units instead.
BLOCK_SETTINGS = MeasureSettings(warmup=10, min_repeats=20, max_repeats=400, min_time_s=0.1, rounds=10, rewarm=1,
                                 max_spread_pct=10.0, retries=0)
# Whole networks (calibration, validation): 3-300 ms each; >= 10 runs and >= 0.5 s.
NETWORK_SETTINGS = MeasureSettings(warmup=5, min_repeats=10, max_repeats=200, min_time_s=0.5, rounds=10, rewarm=1,
                                   max_spread_pct=10.0, retries=1)
# A cold run (see nas.latency.cold) costs copies x the block per call (16-60 ms): fewer, shorter rounds than a
# block's.
COLD_SETTINGS = MeasureSettings(warmup=2, min_repeats=6, max_repeats=100, min_time_s=0.05, rounds=3, rewarm=1,
                                max_spread_pct=10.0, retries=0)
# A build sends blocks in groups, each group timed in one call with one probe (issue 15: with one block per
# request the probe was ~80 % of a tiny-space request). Measured (bench_probe): groups of 8 put the probe at 27 %
# of the tiny space's requests, 16 (the whole tiny space) at 31 % (EPYC family 25, noisy VM); with the probe/3
# compute half at the space's 32 px, 16 blocks put it at 15.6 % (EPYC family 26, quiet). The bytes cap keeps a
# request well under the agent's 128 MiB limit; a board's time limit shrinks groups (nas.latency.build).
BLOCKS_PER_REQUEST = 16
GROUP_MAX_BYTES = 16 * 2**20
VERIFY_TOLERANCE = 0.04  # a third run when a basic unit's two block/probe ratios differ by > 4 %
CALIBRATION_SEED = 7919  # calibration draws differ from validate_table's default seed 0


def default_table_path() -> Path:
    """The shipped table of the default space (``latency_tables/`` in the repo, ``nas.latency_tables`` installed).

    Returns:
        Its path (which may not exist in a checkout where it was never built).
    """
    return Path(str(resources.files("nas.latency_tables").joinpath(DEFAULT_TABLE)))


def default_table_name(*, space_name: str, device: str, threads: int, batch: int, resolution: int,
                       arch: str | None = None) -> Path:
    """A build's default output file, ``latency_tables/<space>_<device>_<arch>_t<threads>_b<batch>_r<resolution>.json``.

    Args:
        space_name: the space's name.
        device: ``cpu``, ``gpu`` or ``arm``.
        threads: intra-op threads of the backend.
        batch: batch size of the backend.
        resolution: input resolution of the table.
        arch: the measuring machine's architecture (a board agent's, for a remote table); this host's by default.

    Returns:
        The path, relative to the working directory.
    """
    arch = (arch or platform.machine()).lower() or "unknown"
    return Path("latency_tables") / f"{space_name}_{device}_{arch}_t{threads}_b{batch}_r{resolution}.json"
