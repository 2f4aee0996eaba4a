"""Does the file `nas export` ships time as its latency table predicts? (issue 14, "the table times what you ship")

Part 1, paired ratio: presets 0.5x, 1.0x, 1.5x, 2.0x exported by ``nas export --format onnx --table T --json`` (a
subprocess each, as a user runs it); export times the written file in rounds interleaved with the reference
probe and puts it on the table's reference speed; the ratio measured / predicted and whether it is within
+-5 % are collected per table (default: the shipped table; add a table built on this machine with --table).
The presets are among every table's timed networks, so the prediction is the table's own earlier timing of
the network (``timed``); ``measured_over_model`` is the same measurement over the blocks' model, reported
beside it (``model_within_5_pct``).

Part 2, the exporter's choices (why opset 17 and a static batch for tables, a dynamic axis for exports): per
preset, the opset-17 static graph (the tables'), the opset-13 static graph and the opset-17 dynamic-batch graph
(what export ships) are timed in interleaved rounds, in three rotated orders (a model's position in a round
shifts its time by a few per cent on a busy machine), and ORT's optimised node counts are compared.

Usage: python benchmarks/bench_export_paired.py [--table PATH ...] [--skip-variants | --skip-exports]
       [--out benchmarks/results/export_paired.json]
The load average (os.getloadavg) is recorded at the start and the end: figures from a loaded machine say so.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PRESETS = ("0.5x", "1.0x", "1.5x", "2.0x")
TOLERANCE = 0.05  # the acceptance criterion: within +-5 % of the prediction
VARIANTS = {"static_opset17": (17, False), "static_opset13": (13, False), "dynamic_opset17": (17, True)}


def export_one(preset: str, table: str, out: Path) -> dict[str, Any]:
    """``nas export`` of one preset, ONNX only, its JSON answer's figures."""
    cmd = [sys.executable, "-m", "nas", "export", "--preset", f"shufflenetv2-{preset}", "--format", "onnx",
           "--table", table, "--out", str(out), "--json"]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    (e,) = json.loads(proc.stdout)["exports"]
    meas = e["provenance"]["onnx_check"]["measured"]
    ratio = e["measured_over_predicted"]
    model_ms, at_ref = e["provenance"].get("latency_model_ms"), e["measured_at_table_speed_ms"]
    return {"preset": preset, "predicted_ms": e["predicted_latency_ms"], "raw_ms": e["measured_latency_ms"],
            "timed": e["provenance"].get("latency_timed"), "model_ms": model_ms,
            "measured_over_model": round(at_ref / model_ms, 4) if model_ms and at_ref else None,
            "at_table_speed_ms": e["measured_at_table_speed_ms"], "measured_over_predicted": ratio,
            "within_5_pct": ratio is not None and abs(ratio - 1.0) <= TOLERANCE, "probe_ms": meas["probe_ms"],
            "table_probe_ms": meas.get("table_probe_ms"), "spread_pct": meas["spread_pct"],
            "passes": meas.get("passes"), "pass_spread_pct": meas.get("pass_spread_pct"),
            "flagged": meas["flagged"], "table_mismatch": meas.get("table_mismatch"),
            "graph": e["provenance"]["onnx_check"]["graph"], "wall_s": round(time.time() - t0, 1)}


def _optimised_nodes(data: bytes) -> int:
    import onnx
    import onnxruntime as ort

    from nas.backends.onnxruntime import session_options

    with tempfile.TemporaryDirectory() as d:
        so = session_options(1)
        so.optimized_model_filepath = str(Path(d) / "opt.onnx")
        ort.InferenceSession(data, sess_options=so, providers=["CPUExecutionProvider"])
        return len(onnx.load(so.optimized_model_filepath).graph.node)


def variants_one(preset: str) -> dict[str, Any]:
    """Part 2 for one preset: each variant's time relative to the tables' graph, rotated orders pooled."""
    import torch

    from nas.arch import load_config
    from nas.backends import get_backend
    from nas.backends.onnxruntime import export_onnx
    from nas.builder import build_model
    from nas.latency.defaults import NETWORK_SETTINGS

    cfg = load_config(f"shufflenetv2-{preset}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model(cfg, 1000).eval()
    shape = (1, 3, cfg.resolution, cfg.resolution)
    graphs = {k: export_onnx(model, input_shape=shape, opset=o, dynamic_batch=d) for k, (o, d) in VARIANTS.items()}
    names = list(graphs)
    ratios: dict[str, list[float]] = {k: [] for k in names}
    backend = get_backend("cpu", threads=1, batch=1)
    for shift in range(len(names)):
        order = names[shift:] + names[:shift]
        ms = backend.measure_many([graphs[k] for k in order], input_shapes=[shape[1:]] * len(order),
                                  settings=NETWORK_SETTINGS)
        by = dict(zip(order, ms))
        base = by["static_opset17"].round_medians_ms
        for k in names:
            ratios[k] += [v / b for v, b in zip(by[k].round_medians_ms, base)]
    return {"preset": preset, "optimised_nodes": {k: _optimised_nodes(g) for k, g in graphs.items()},
            "graph_bytes": {k: len(g) for k, g in graphs.items()},
            "time_vs_static_opset17": {k: round(statistics.median(v), 4) for k, v in ratios.items()},
            "rounds": len(ratios["static_opset17"])}


def main() -> int:
    from nas.latency.defaults import default_table_path

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", action="append", help="latency table(s) (default: the shipped one)")
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--skip-variants", action="store_true", help="part 1 only")
    ap.add_argument("--skip-exports", action="store_true", help="part 2 only")
    ap.add_argument("--out", default="benchmarks/results/export_paired.json")
    args = ap.parse_args()
    tables = args.table or [str(default_table_path())]
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    doc: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "loadavg_start": os.getloadavg(),
                           "cpu_count": os.cpu_count(), "tolerance": TOLERANCE, "tables": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for i, table in enumerate([] if args.skip_exports else tables):
            rows = []
            for p in presets:
                rows.append(export_one(p, table, Path(tmp) / str(i)))
                print(json.dumps(rows[-1]), flush=True)
            ok = [r for r in rows if r["measured_over_predicted"] is not None]
            by_model = [r for r in ok if r["measured_over_model"] is not None]
            doc["tables"][table] = {"exports": rows, "within_5_pct": sum(r["within_5_pct"] for r in ok),
                                    "timed": sum(bool(r["timed"]) for r in ok),
                                    "model_within_5_pct": sum(abs(r["measured_over_model"] - 1) <= TOLERANCE
                                                              for r in by_model),
                                    "of": len(ok), "mean_ratio": round(statistics.mean(
                                        r["measured_over_predicted"] for r in ok), 4) if ok else None}
    if not args.skip_variants:
        doc["variants"] = []
        for p in presets:
            doc["variants"].append(variants_one(p))
            print(json.dumps(doc["variants"][-1]), flush=True)
    doc["loadavg_end"] = os.getloadavg()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
