"""The board agent adds no bias and little time: the same blocks, on the same machine, timed locally and
through a loopback `nas agent`, in the same run.

Reports the median over blocks of (remote block/probe ratio) / (local block/probe ratio), which should be
1 within noise (the agent runs the same onnxruntime protocol; the table pairs each block with its probe),
and the wall time per measurement request both ways (the agent's overhead: HTTP, ONNX check, session
creation on its side).

    /work/venv/bin/python benchmarks/bench_agent.py [--resolution 56] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPACE = """name = "bench"
resolution = [{r}]
stem_channels = [24]
head_channels = [256]
[[stages]]
depth = [1, 2]
width = [48, 96]
split_ratio = [0.5]
se = [false]
kernel = [3]
[[stages]]
depth = [1, 2]
width = [96]
split_ratio = [0.5]
se = [false, true]
kernel = [3]
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolution", type=int, default=56)
    ap.add_argument("--repeat", type=int, default=2, help="passes over the blocks (default 2)")
    args = ap.parse_args()

    from nas.backends import get_backend
    from nas.builder import build_block
    from nas.space import load_space
    from nas.latency.table import BLOCK_SETTINGS, PROBE_SHAPE, reference_probe

    with tempfile.TemporaryDirectory() as d:
        space_file = Path(d) / "bench.toml"
        space_file.write_text(SPACE.format(r=args.resolution))
        keys = load_space(space_file).enumerate_blocks(resolution=args.resolution)
        token_file = Path(d) / "token"
        agent = subprocess.Popen([sys.executable, "-m", "nas", "agent", "--port", "0", "--json", "--token-file",
                                  str(token_file)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            info = json.loads(agent.stdout.readline())  # type: ignore[union-attr]
            local = get_backend("cpu")
            remote = get_backend("cpu", remote=f"127.0.0.1:{info['port']}", token=token_file.read_text())
            probe = local.portable(reference_probe(), input_shape=PROBE_SHAPE)
            ratios, wall = [], {"local": [], "remote": []}
            for _ in range(max(1, args.repeat)):
                for k in keys:
                    shape = (k.in_channels, k.resolution, k.resolution)
                    block = local.portable(build_block(k), input_shape=shape)
                    r = {}
                    for name, b in (("local", local), ("remote", remote)):
                        t0 = time.perf_counter()
                        mp, mb = b.measure_many([probe, block], input_shapes=[PROBE_SHAPE, shape],
                                                settings=BLOCK_SETTINGS)
                        wall[name].append(time.perf_counter() - t0)
                        r[name] = mb.median_ms / mp.median_ms
                    ratios.append(r["remote"] / r["local"])
        finally:
            agent.terminate()
            agent.wait(timeout=10)
    q = statistics.quantiles(ratios, n=4)
    print(f"{len(keys)} blocks x {args.repeat} at {args.resolution}px: remote/local block-probe ratio median "
          f"{statistics.median(ratios):.4f} (IQR {q[0]:.3f}..{q[2]:.3f}); wall per request: local "
          f"{statistics.median(wall['local']):.3f} s, remote {statistics.median(wall['remote']):.3f} s "
          f"(x{statistics.median(wall['remote']) / statistics.median(wall['local']):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
