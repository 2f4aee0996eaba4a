"""Is a whole network as fast as the sum of its blocks? Both timed in the same interleaved rounds (Session 11).

A latency table sums blocks timed alone; the calibration then fits a scale and a per-block term from whole
networks timed at other moments, bridged by the reference probe. On a contended VM the two can drift apart
(Session 10 took 1.0x's 13 % excess for a model error). Here every preset 0.5x-2.0x and each of its distinct
blocks (as the tables export them: static batch 1, opset 17, one thread) are timed round after round in one
process, so drift cancels, and the ratio whole / sum of blocks is the additive model's own error.

    python benchmarks/bench_block_sum.py [--rounds 11] [--repeats 3] [--out benchmarks/results/block_sum.json]

Session 11 (quiet EPYC family 25 model 17), four runs (block_sum_s11.json): 0.5x -0.6 to +0.6 %, 1.0x +4.7 to
+7.8 %, 1.5x +5.7 to +6.7 %, 2.0x +5.2 to +6.2 %; the level moved ~4 points between experiments minutes apart,
0.5x stayed 4-7 points below the bigger presets in every run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

PRESETS = ("0.5x", "1.0x", "1.5x", "2.0x")
CALLS = 7  # calls per model per round; the round's median is kept


def one_run(rounds: int) -> dict[str, Any]:
    from nas.arch import PRESETS as ALL
    from nas.backends.onnxruntime import OrtRunner, export_onnx
    from nas.builder import build_block, build_model

    nets = {p: ALL[f"shufflenetv2-{p}"].with_resolution(224) for p in PRESETS}
    runners: dict[tuple[str, str], Any] = {}
    for p, cfg in nets.items():
        shape = (1, 3, 224, 224)
        runners[("net", p)] = OrtRunner(export_onnx(build_model(cfg), input_shape=shape), input_shape=shape, threads=1)
        for b in cfg.blocks():
            if ("block", b.id) not in runners:
                bs = (1, b.in_channels, b.resolution, b.resolution)
                runners[("block", b.id)] = OrtRunner(export_onnx(build_block(b), input_shape=bs), input_shape=bs,
                                                     threads=1)
    for r in runners.values():
        r.run(3)  # warm-up
    times: dict[tuple[str, str], list[float]] = {k: [] for k in runners}
    keys = list(runners)
    for i in range(rounds):
        for k in keys if i % 2 == 0 else keys[::-1]:  # alternate the order: no model always runs first
            times[k].append(statistics.median(runners[k].run(CALLS)))
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {}
    for p, cfg in nets.items():
        total = sum(med[("block", b.id)] for b in cfg.blocks())
        out[p] = {"whole_ms": round(med[("net", p)], 4), "block_sum_ms": round(total, 4), "blocks": len(cfg.blocks()),
                  "whole_over_sum_pct": round((med[("net", p)] / total - 1) * 100, 2)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--repeats", type=int, default=3, help="independent runs (new sessions each)")
    ap.add_argument("--out", default="benchmarks/results/block_sum.json")
    args = ap.parse_args()
    doc: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "loadavg_start": os.getloadavg(),
                           "rounds": args.rounds, "runs": []}
    for _ in range(args.repeats):
        doc["runs"].append(one_run(args.rounds))
        print(json.dumps(doc["runs"][-1]), flush=True)
    doc["range_pct"] = {p: [min(r[p]["whole_over_sum_pct"] for r in doc["runs"]),
                            max(r[p]["whole_over_sum_pct"] for r in doc["runs"])] for p in PRESETS}
    doc["loadavg_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    for p, (lo, hi) in doc["range_pct"].items():
        print(f"{p}: whole / sum of blocks {lo:+.1f} to {hi:+.1f} % over {args.repeats} runs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
