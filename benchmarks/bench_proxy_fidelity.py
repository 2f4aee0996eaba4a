"""Proxy fidelity: Kendall tau between cheap accuracy estimates and a 10x longer training, over diverse candidates.

    python benchmarks/bench_proxy_fidelity.py [--n-archs 8] [--threads 2] [--json] [--out fidelity.json]

Candidates: ``--pool`` configs sampled uniformly from the default search space (``--arch-seed``), those within
``--max-mflops`` (MACs at 224², the paper's FLOPs) sorted by MACs, and ``--n-archs`` taken at evenly spaced
quantiles, so they differ in size as well as in the depth/width/split/SE/kernel choices the sampler made.

For each candidate: the ``quick`` proxy (:data:`nas.training.proxy.PROXY_PRESETS`), the ``reference`` training (same
split, recipe and seed, 10x the steps) as ground truth, the zero-cost scores (NASWOT, synflow), and optional
``--variant STEM:RES:STEPS`` proxies (e.g. ``cifar:32:13`` = the CIFAR stem for the steps that cost what quick
costs). Reported: Kendall tau-b of each estimate against the reference accuracy, with MACs and params as
naive baselines (a ranking by size alone), and the wall time of each. Kendall tau is written here with numpy
(no scipy dependency).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def kendall_tau_b(x, y) -> float:
    """Kendall's tau-b (ties in either ranking handled); NaN if either ranking is constant."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    i, j = np.triu_indices(len(x), 1)
    dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    pairs = len(i)
    denom = math.sqrt(float(pairs - (dx == 0).sum()) * float(pairs - (dy == 0).sum()))
    return float((dx * dy).sum() / denom) if denom else float("nan")


def pick_archs(n: int, *, pool: int, seed: int, max_mflops: float):
    from nas.macs import count_macs
    from nas.space import load_space

    space = load_space()
    rng = np.random.default_rng(seed)
    cands = [space.sample(rng) for _ in range(pool)]
    cands = [c for c in cands if count_macs(c).macs <= max_mflops * 1e6]
    if len(cands) < n:
        raise SystemExit(f"only {len(cands)} of {pool} samples within {max_mflops} MFLOPs; raise --pool")
    cands.sort(key=lambda c: count_macs(c).macs)
    idx = np.round(np.linspace(0, len(cands) - 1, n)).astype(int)
    return [cands[i] for i in idx]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-archs", type=int, default=8)
    ap.add_argument("--pool", type=int, default=64)
    ap.add_argument("--arch-seed", type=int, default=0)
    ap.add_argument("--max-mflops", type=float, default=300.0, help="MACs at 224² of the candidates (1.5x: 299)")
    ap.add_argument("--seed", type=int, default=0, help="training / init seed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", default="bundled")
    ap.add_argument("--proxy", default="quick")
    ap.add_argument("--reference", default="reference")
    ap.add_argument("--reference-val-size", type=int, default=None,
                    help="validation images for the reference only (default: the preset's 1,000). The accuracy's "
                         "standard error at 83 %% is 1.2 points on 1,000 images, about the gap between many "
                         "candidates: with --data fashion-mnist, 5,000 halves it")
    ap.add_argument("--variant", action="append", default=[], metavar="STEM:RES:STEPS",
                    help="extra proxy: quick's recipe with this stem, resolution and step count")
    ap.add_argument("--no-zero-cost", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--out", help="write the full results as JSON here")
    args = ap.parse_args(argv)

    import torch

    from nas.training.data import load_data
    from nas.errors import TrainingDivergedError
    from nas.macs import count_macs
    from nas.training.proxy import proxy_settings, proxy_train
    from nas.training.zero_cost import ZERO_COST_METHODS, zero_cost_score

    t_start = time.perf_counter()
    torch.set_num_threads(args.threads)
    data = load_data(args.data)
    quick = proxy_settings(args.proxy).replace(threads=args.threads)
    ref = proxy_settings(args.reference).replace(threads=args.threads)
    if args.reference_val_size:
        ref = ref.replace(val_size=args.reference_val_size)
    variants = {}
    for v in args.variant:
        stem, res, steps = v.split(":")
        variants[v] = quick.replace(stem=stem, resolution=int(res), steps=int(steps), reports=1)
    archs = pick_archs(args.n_archs, pool=args.pool, seed=args.arch_seed, max_mflops=args.max_mflops)

    rows = []
    for k, cfg in enumerate(archs):
        mc = count_macs(cfg)
        row = {"config": cfg.to_string(), "mflops_224": mc.macs / 1e6, "params": mc.params}
        ests = {"quick": quick, "reference": ref, **variants}
        for name, s in ests.items():
            t = time.perf_counter()
            try:
                r = proxy_train(cfg, data=data, settings=s, seed=args.seed)
                row[name] = r.accuracy
                row[f"{name}_img_s"] = r.images_per_second
            except TrainingDivergedError:
                row[name] = float("nan")
            row[f"{name}_s"] = time.perf_counter() - t
        if not args.no_zero_cost:
            for m in ZERO_COST_METHODS:
                t = time.perf_counter()
                row[m] = zero_cost_score(cfg, data=data, settings=quick, method=m, seed=args.seed)
                row[f"{m}_s"] = time.perf_counter() - t
        rows.append(row)
        print(f"[{k + 1}/{len(archs)}] {row['config']}  {row['mflops_224']:.0f} MFLOPs  quick {row['quick']:.3f} "
              f"({row['quick_s']:.1f} s)  reference {row['reference']:.3f} ({row['reference_s']:.1f} s)  "
              f"elapsed {time.perf_counter() - t_start:.0f} s", file=sys.stderr, flush=True)

    truth = [r["reference"] for r in rows]
    estimators = ["quick", *variants] + ([] if args.no_zero_cost else list(ZERO_COST_METHODS)) + \
        ["mflops_224", "params"]
    taus = {e: kendall_tau_b([r[e] for r in rows], truth) for e in estimators}
    seconds = {e: float(np.mean([r[f"{e}_s"] for r in rows])) for e in estimators if f"{e}_s" in rows[0]}
    seconds["reference"] = float(np.mean([r["reference_s"] for r in rows]))
    out = {
        "n_archs": len(rows), "threads": args.threads, "data": args.data, "seed": args.seed,
        "proxy": quick.to_dict(), "reference_settings": ref.to_dict(),
        "kendall_tau_vs_reference": taus, "mean_seconds_per_candidate": seconds,
        "total_seconds": time.perf_counter() - t_start, "rows": rows,
        "goal": "quick tau >= 0.6 (0.7+)",
    }
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2))
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{'config':64s} {'MFLOPs':>7s} {'quick':>6s} {'ref':>6s}" +
          "".join(f" {m:>8s}" for m in estimators if m not in ("quick", "mflops_224", "params")))
    for r in rows:
        print(f"{r['config']:64s} {r['mflops_224']:7.0f} {r['quick']:6.3f} {r['reference']:6.3f}" +
              "".join(f" {r[m]:8.3f}" for m in estimators if m not in ("quick", "mflops_224", "params")))
    print(f"Kendall tau-b vs the {args.reference} training ({len(rows)} candidates):")
    for e, t in taus.items():
        extra = f"  ({seconds[e]:.2f} s per candidate)" if e in seconds else ""
        print(f"  {e:14s} {t:+.3f}{extra}")
    print(f"  (reference: {seconds['reference']:.1f} s per candidate; total {out['total_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
