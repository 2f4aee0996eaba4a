"""Predicting one config from a loaded latency table: < 1 ms (issue 7), as a ratio against timing the same
network end to end in the same run.

Uses the shipped table of the default space if it exists (else builds a small real table of a one-choice
slice of the default space, ~20 blocks, so the benchmark always runs), predicts many random configs, and
times one end-to-end measurement of one of them with the tables' network protocol.

    /work/venv/bin/python benchmarks/bench_predict.py [--table FILE] [--n 2000]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

GOAL_MS = 1.0  # issue 7: one prediction from a loaded table takes < 1 ms


def _small_space_file(d: Path) -> Path:
    p = d / "slice.toml"
    p.write_text('name = "slice"\nresolution = [224]\nstem_channels = [24]\nhead_channels = [1024]\n' + "".join(
        f"[[stages]]\ndepth = [2, 4]\nwidth = [{w}]\nsplit_ratio = [0.5]\nse = [false, true]\nkernel = [3]\n"
        for w in (116, 232, 464)))
    return p


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--table", default=None)
    ap.add_argument("--n", type=int, default=2000, help="predictions to time")
    args = ap.parse_args()

    from nas.backends import get_backend
    from nas.space import load_space
    from nas.latency import build_table, default_table_path, load_table, predict
    from nas.latency.measure import measure_network

    tmp = tempfile.TemporaryDirectory()
    path = Path(args.table) if args.table else default_table_path()
    backend = get_backend("cpu", threads=1, batch=1)
    if path.exists():
        t = time.perf_counter()
        table = load_table(path)
        print(f"table: {path} ({len(table.entries)} entries, loaded in {1e3 * (time.perf_counter() - t):.0f} ms)")
        space = table.space_object()
    else:
        space = load_space(_small_space_file(Path(tmp.name)))
        print(f"{path} not built yet: building a {len(space.enumerate_blocks(resolution=224))}-block table of a slice "
              "of the default space")
        table = build_table(space, backend, out=Path(tmp.name) / "slice.json", calibration_nets=2)
    rng = random.Random(0)
    configs = [space.sample(rng, fixed={"resolution": table.resolution}) for _ in range(args.n)]
    predict(configs[0], table)  # first call: nothing cached to warm, but keep the loop uniform
    t = time.perf_counter()
    for c in configs:
        predict(c, table)
    per_ms = 1e3 * (time.perf_counter() - t) / len(configs)
    t = time.perf_counter()
    row = measure_network(configs[0], backend, num_classes=table.num_classes)
    measure_s = time.perf_counter() - t
    print(f"predict: {per_ms * 1000:.0f} us per config over {len(configs)} configs (goal < {GOAL_MS:g} ms: "
          f"{'PASS' if per_ms < GOAL_MS else 'FAIL'})")
    print(f"end-to-end measurement of one of them: {measure_s:.2f} s ({row['raw_ms']:.2f} ms per run); "
          f"ratio measure / predict = {measure_s * 1e3 / per_ms:,.0f}x")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
