"""Analytic MAC counter speed: configs per second vs PyTorch's FlopCounterMode on the same configs.

    python benchmarks/bench_macs.py [--n 2000] [--seed 0]

Reports the analytic counter's time per config (goal: well under 1 ms) and, as the same-run baseline,
FlopCounterMode on a few built models (meta device, no compute).
"""

from __future__ import annotations

import argparse
import random
import time


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from nas.builder import build_model
    from nas.macs import block_macs, count_macs
    from nas.space import load_space

    space = load_space()
    rng = random.Random(args.seed)
    configs = [space.sample(rng) for _ in range(args.n)]
    block_macs.cache_clear()
    t0 = time.perf_counter()
    for c in configs:
        count_macs(c)
    cold = (time.perf_counter() - t0) / args.n * 1e3
    t0 = time.perf_counter()
    for c in configs:
        count_macs(c)
    warm = (time.perf_counter() - t0) / args.n * 1e3
    k = 5
    t0 = time.perf_counter()
    for c in configs[:k]:
        with torch.device("meta"):
            m = build_model(c)
            with FlopCounterMode(display=False), torch.no_grad():
                m(torch.zeros(1, 3, c.resolution, c.resolution))
    torch_ms = (time.perf_counter() - t0) / k * 1e3
    print(f"analytic count_macs: {cold:.4f} ms/config first pass (block cache cold), {warm:.4f} ms/config warm "
          f"({args.n} sampled configs)")
    print(f"FlopCounterMode (meta device, build + forward): {torch_ms:.1f} ms/config -> analytic is "
          f"{torch_ms / cold:,.0f}x faster")
    print("PASS" if cold < 1.0 else "FAIL", "(goal: well under 1 ms per config)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
