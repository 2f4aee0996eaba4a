"""How long the full `nas guidelines` takes here, against its 5-minute goal (issue 6).

Runs the four experiments with the default protocol (the latency tables' network settings) on the
local CPU backend, prints each guideline's verdict and the elapsed time as a ratio of the 300 s budget.
Timings are noisy on a shared VM: read the ratio, not the milliseconds.

    /work/venv/bin/python benchmarks/bench_guidelines.py [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import time

BUDGET_S = 300.0  # issue 6: the whole command finishes in <= 5 minutes on this machine


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    from nas.paper.guidelines import run_guidelines
    from nas.backends import get_backend

    backend = get_backend("cpu", threads=args.threads, batch=1)
    t0 = time.perf_counter()
    results = run_guidelines(backend, on_step=lambda e: print(f"measuring {e} ...", file=sys.stderr))
    elapsed = time.perf_counter() - t0
    for g in results:
        rel = ", ".join(f"{v.label} {v.relative_speed:.2f}" for v in g.variants)
        print(f"{g.id} {g.verdict:14s} {rel}")
    print(f"elapsed {elapsed:.1f} s = {elapsed / BUDGET_S:.2f} x the {BUDGET_S:.0f} s budget "
          f"({'meets' if elapsed <= BUDGET_S else 'MISSES'} the goal)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
