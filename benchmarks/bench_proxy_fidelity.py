"""Proxy fidelity against ground truth: Kendall tau-b (bootstrap 90 % interval) of each proxy variant.

    python benchmarks/bench_proxy_fidelity.py [--variants quick,steps4x,...] [--threads 1] [--noise-seeds 3]
    python benchmarks/bench_proxy_fidelity.py --list            # the variants and what they change

Ground truth is :mod:`benchmarks.ground_truth` (3 epochs x 20,000 full Fashion-MNIST images at 64², the
official 10,000-image test split; the mean over every seed trained, ``--truth-seeds 0`` for seed 0 alone, and
seed 0 against seed 1 is reported as the ground truth's own tau): every ``fidelity-0-NN`` architecture present in its cache
(``fidelity_configs(24, 60, 150, seed=0)``, MAC-stratified in 60-150 MFLOPs) is used, however many exist so far
(``n`` is reported with every figure). For each one: each proxy variant (:data:`VARIANTS`), the zero-cost
scores (NASWOT, synflow) and MACs and params as naive baselines. Reported per estimator: tau-b with a
percentile bootstrap interval (architectures resampled, seeded), the paired difference to ``quick`` with its
own interval, seconds per candidate (train + evaluation wall time, one thread, with the load average), the
mean binomial SE and the *reliability* of the validation set (1 - SE²/across-candidate variance).
``--noise-seeds K`` also trains ``--noise-variants`` on ShuffleNetV2 1x with seeds 0..K-1 (the proxy's own
spread). ``--cached-only`` builds the table from the cache without training anything (each estimator's ``n``
is then the architectures it has results for).

Every proxy result is cached in ``benchmarks/results/proxy_fidelity_cache.jsonl`` by (config hash, variant
settings hash, data, seed): re-running as more ground truth arrives trains only the new ones. The summary is
written to ``benchmarks/results/proxy_fidelity.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import ground_truth as gt  # noqa: E402
from proxy_stats import bootstrap_tau, noise_ceiling, paired_difference, reliability  # noqa: E402

CACHE = HERE / "results" / "proxy_fidelity_cache.jsonl"
OUT = HERE / "results" / "proxy_fidelity.json"
FM = "fashion-mnist"

# name -> (data spec, changes to PROXY_PRESETS["quick"]). The bundled subset has 6,000 train images, so on it the
# validation set cannot exceed 1,000 with quick's 5,000 training images; the fashion-mnist variants measure what
# more data and a bigger validation set would buy (its train split only: the test split is ground truth).
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "quick": ("bundled", {}),
    "quick-fm": (FM, {}),  # control for the *-val10k variants: same sizes, full set's train split
    "quick-val10k": (FM, {"val_size": 10_000}),
    "lr0.05": ("bundled", {"lr": 0.05}),
    "lr0.1": ("bundled", {"lr": 0.1}),
    "res32-steps4x": ("bundled", {"resolution": 32, "epochs": 2.0}),  # ~quick's cost: a quarter of the pixels
    "steps2x": ("bundled", {"epochs": 1.0}),
    "steps4x": ("bundled", {"epochs": 2.0}),
    "steps4x-lr0.05": ("bundled", {"epochs": 2.0, "lr": 0.05}),
    "steps16x": ("bundled", {"epochs": 8.0}),
    "data4x-val10k": (FM, {"train_size": 20_000, "epochs": 0.5, "val_size": 10_000}),
    "steps4x-val10k": (FM, {"epochs": 2.0, "val_size": 10_000}),
    # quick's 39 steps (2,496 images seen either way), the bundled subset split 3,000/3,000: a 3x validation set
    # (binomial SE / sqrt 3) at the same training cost, within the data the search ships with
    "val3k": ("bundled", {"steps": 39, "train_size": 3000, "val_size": 3000}),
    "val2k": ("bundled", {"steps": 39, "train_size": 4000, "val_size": 2000}),
}
DEFAULT_VARIANTS = "quick,quick-fm,quick-val10k,lr0.05,steps4x,res32-steps4x,steps4x-val10k"
ZERO_COST = ("naswot", "synflow")
# One evaluation per run: the final accuracy does not depend on how many evaluations came before (BN
# re-estimation draws its own stream; tests/test_proxy.py::test_evaluation_count_does_not_change_training), and
# the half-way pruning evaluation would cost ~12 % of quick per candidate (1,000 images, 2.3 s of 20 s measured
# here at load 5) without changing what is ranked.
BENCH_REPORTS = 1


# ----------------------------------------------------------------------------------------- cache
def variant_settings(name: str, *, threads: int) -> tuple[str, Any]:
    """(data spec, ProxySettings) of a variant, or of a rung of :data:`nas.training.proxy.PROXY_RUNGS`."""
    from nas.training.proxy import PROXY_PRESETS, PROXY_RUNGS

    base, sep, k = name.rpartition("-x")
    if sep and k.isdigit() and int(k) > 1:  # an ensemble over training seeds (see _ensemble)
        name = base
    if name in PROXY_RUNGS:
        return "bundled", PROXY_RUNGS[name].replace(threads=threads, reports=BENCH_REPORTS)
    if name not in VARIANTS:
        raise SystemExit(f"unknown variant {name!r}; use one of {sorted(VARIANTS) + sorted(PROXY_RUNGS)}")
    data, changes = VARIANTS[name]
    return data, PROXY_PRESETS["quick"].replace(threads=threads, reports=BENCH_REPORTS, **changes)


def settings_hash(settings: Any, data: str) -> str:
    """What fixes a proxy result besides config and seed (threads excluded: same accuracy, other timing)."""
    d = settings.to_dict()
    d.pop("threads", None)
    return hashlib.sha256(json.dumps(d | {"data": data}, sort_keys=True).encode()).hexdigest()[:12]


def read_cache() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    if CACHE.is_file():
        for line in CACHE.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                out[rec["key"]] = rec
    return out


def append_cache(rec: dict[str, Any]) -> None:
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    with CACHE.open("a") as f:  # one line per result: a kill loses at most the run in flight
        f.write(json.dumps(rec, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


# ----------------------------------------------------------------------------------------- running
class Runner:
    """Runs (or looks up) proxy and zero-cost results, one loaded data set per spec."""

    def __init__(self, threads: int, *, cached_only: bool = False) -> None:
        self.threads = threads
        self.cached_only = cached_only
        self.cache = read_cache()
        self._data: dict[str, Any] = {}

    def data(self, spec: str) -> Any:
        from nas.training.data import load_data

        if spec not in self._data:
            self._data[spec] = load_data(spec)
        return self._data[spec]

    def proxy(self, cfg: Any, variant: str, *, seed: int = 0) -> dict[str, Any] | None:
        """The cached result of ``variant`` on ``cfg`` (trained now if absent; None if absent and cached-only)."""
        from nas.errors import TrainingDivergedError
        from nas.training.proxy import proxy_train

        spec, s = variant_settings(variant, threads=self.threads)
        key = f"{cfg.hash()[:16]}-{settings_hash(s, spec)}-s{seed}"
        if key in self.cache or self.cached_only:
            return self.cache.get(key)
        rec: dict[str, Any] = {"key": key, "variant": variant, "config_hash": cfg.hash(), "seed": seed,
                               "data": spec, "settings": s.to_dict(), "threads": self.threads}
        try:
            r = proxy_train(cfg, data=self.data(spec), settings=s, seed=seed)
            rec.update(accuracy=r.accuracy, accuracy_se=r.accuracy_se, eval_images=r.eval_images,
                       train_seconds=r.train_seconds, eval_seconds=r.eval_seconds,
                       train_cpu_seconds=r.train_cpu_seconds, steps=r.steps)
        except TrainingDivergedError:
            rec.update(accuracy=float("nan"), diverged=True)
        rec["load"] = os.getloadavg()[0]
        append_cache(rec)
        self.cache[key] = rec
        return rec

    def zero_cost(self, cfg: Any, method: str) -> dict[str, Any]:
        from nas.training.proxy import PROXY_PRESETS
        from nas.training.zero_cost import zero_cost_score

        key = f"{cfg.hash()[:16]}-{method}-bundled-s0"
        if key in self.cache:
            return self.cache[key]
        t = time.perf_counter()
        score = zero_cost_score(cfg, data=self.data("bundled"), settings=PROXY_PRESETS["quick"].replace(
            threads=self.threads), method=method, seed=0)
        rec = {"key": key, "variant": method, "config_hash": cfg.hash(), "score": score,
               "seconds": time.perf_counter() - t, "load": os.getloadavg()[0], "threads": self.threads}
        append_cache(rec)
        self.cache[key] = rec
        return rec


def truth_records(prefix: str, *, seeds: str = "all") -> list[dict[str, Any]]:
    """Ground-truth records of the fidelity architectures present so far (current recipe), by label: seed 0's
    record, with ``test_accuracy`` the mean over every seed present (``seeds="all"``) or seed 0's alone
    (``"0"``); ``truth_seeds`` lists each seed's accuracy, ``se_binomial`` is the mean's."""
    recipe = gt.recipe_hash()
    recs = [r for r in gt.read_cache().values()
            if r["label"].startswith(tuple(prefix.split(","))) and r["recipe"] == recipe]
    out = []
    for r in sorted((r for r in recs if r["seed"] == 0), key=lambda r: r["label"]):
        accs = [x["test_accuracy"] for x in sorted(recs, key=lambda x: x["seed"]) if x["label"] == r["label"]
                and (seeds == "all" or x["seed"] == 0)]
        out.append({**r, "test_accuracy": float(np.mean(accs)), "truth_seeds": accs,
                    "se_binomial": r["se_binomial"] / len(accs) ** 0.5})
    return out


def truth_self_tau(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """tau-b of the ground truth's seed 0 against its seed 1 (where both exist): how well the ground truth
    ranks these architectures against itself, the scale any proxy's tau is read on."""
    two = [r for r in rows if len(r.get("truth_seeds", [])) >= 2]
    if len(two) < 3:
        return None
    d = np.array([abs(r["truth_seeds"][0] - r["truth_seeds"][1]) for r in two])
    return {**bootstrap_tau([r["truth_seeds"][0] for r in two], [r["truth_seeds"][1] for r in two]),
            "mean_abs_diff": float(d.mean()), "seed_std": float(np.mean([np.std(r["truth_seeds"], ddof=1)
                                                                         for r in two]))}


def spread_sigma() -> dict[str, Any]:
    """Seed-to-seed spread of the ground-truth recipe on ShuffleNetV2 1x (from the ground-truth cache)."""
    recipe = gt.recipe_hash()
    recs = [r for r in gt.read_cache().values() if r["label"] == "shufflenetv2-1.0x" and r["recipe"] == recipe]
    return gt.spread(recs) if recs else {"n": 0, "std": float("nan")}


# ----------------------------------------------------------------------------------------- analysis
def estimator_values(rows: list[dict[str, Any]], name: str) -> dict[str, float]:
    """config hash -> the estimator's value (accuracy, zero-cost score, MACs or params) where present."""
    return {r["config_hash"]: r[name] for r in rows if name in r and np.isfinite(r[name])}


def summarise(rows: list[dict[str, Any]], names: list[str], timing: dict[str, dict[str, float]],
              se: dict[str, dict[str, float]]) -> dict[str, dict[str, Any]]:
    """Per estimator: tau-b and interval against ground truth, the paired difference to quick, timing, SE."""
    truth = {r["config_hash"]: r["test_accuracy"] for r in rows}
    quick = estimator_values(rows, "quick")
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        vals = estimator_values(rows, name)
        keys = sorted(vals)
        entry: dict[str, Any] = bootstrap_tau([vals[k] for k in keys], [truth[k] for k in keys])
        both = sorted(set(keys) & set(quick))
        if name != "quick" and len(both) > 2:
            entry["vs_quick"] = paired_difference([vals[k] for k in both], [quick[k] for k in both],
                                                  [truth[k] for k in both])
        entry.update(timing.get(name, {}))
        entry.update(se.get(name, {}))
        out[name] = entry
    return out


def _ensemble(runner: Runner, cfg: Any, variant: str) -> dict[str, Any] | None:
    """``base-xK``: the mean accuracy of ``base`` over training seeds 0..K-1 (K x its cost); else one run."""
    base, sep, k = variant.rpartition("-x")
    if not (sep and k.isdigit() and int(k) > 1):
        return runner.proxy(cfg, variant)
    recs = [runner.proxy(cfg, base, seed=s) for s in range(int(k))]
    if any(r is None for r in recs):
        return None
    ok = [r for r in recs if not r.get("diverged")]
    if len(ok) < len(recs):
        return {**recs[0], "accuracy": float("nan"), "diverged": True}
    n = sum(r["eval_images"] for r in ok)
    acc = float(np.mean([r["accuracy"] for r in ok]))
    return {**ok[0], "variant": variant, "accuracy": acc, "eval_images": n,
            "accuracy_se": float(np.sqrt(acc * (1 - acc) / n)),
            **{f: float(sum(r[f] for r in ok)) for f in ("train_seconds", "eval_seconds", "train_cpu_seconds")},
            "steps": sum(r["steps"] for r in ok)}


def collect(runner: Runner, truth: list[dict[str, Any]], variants: list[str], *,
            zero_cost: bool) -> tuple[list[dict[str, Any]], dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Run every variant (variant-major, so each has all architectures early) and gather rows, timing and SE."""
    from nas.arch import load_config

    cfgs = [load_config(r["config"]) for r in truth]
    rows = [{"label": r["label"], "config_hash": r["config_hash"], "test_accuracy": r["test_accuracy"],
             "truth_seeds": r["truth_seeds"],
             "se_binomial": r["se_binomial"], "mflops": r["macs"] / 1e6, "params": r["params"]} for r in truth]
    timing: dict[str, dict[str, float]] = {}
    se: dict[str, dict[str, float]] = {}
    t0 = time.perf_counter()
    for v in variants:
        recs = []
        for k, (cfg, row) in enumerate(zip(cfgs, rows)):
            rec = _ensemble(runner, cfg, v)
            if rec is None:
                continue
            row[v] = rec["accuracy"]
            recs.append(rec)
            print(f"[{v} {k + 1}/{len(cfgs)}] {row['label']} {row['mflops']:.0f} MFLOPs: {rec['accuracy']:.3f} "
                  f"(truth {row['test_accuracy']:.4f})  elapsed {time.perf_counter() - t0:.0f} s",
                  file=sys.stderr, flush=True)
        ok = [r for r in recs if not r.get("diverged")]
        if not ok:
            continue
        timing[v] = {"seconds": float(np.mean([r["train_seconds"] + r["eval_seconds"] for r in ok])),
                     "eval_seconds": float(np.mean([r["eval_seconds"] for r in ok])),
                     # load-free cost: training images processed (x ~3 forward passes each) per candidate
                     "train_images": float(np.mean([r["steps"] * r["settings"]["batch_size"] for r in ok])),
                     "load": float(np.mean([r["load"] for r in ok]))}
        acc, ses = [r["accuracy"] for r in ok], [r["accuracy_se"] for r in ok]
        se[v] = {"mean_se": float(np.mean(ses)), "eval_images": int(ok[0]["eval_images"]),
                 "reliability": reliability(acc, ses), "diverged": len(recs) - len(ok)}
    if zero_cost:
        for m in ZERO_COST:
            recs = [runner.zero_cost(cfg, m) for cfg in cfgs]
            for row, rec in zip(rows, recs):
                row[m] = rec["score"]
            timing[m] = {"seconds": float(np.mean([r["seconds"] for r in recs])),
                         "load": float(np.mean([r["load"] for r in recs]))}
    return rows, timing, se


def prefetch(runner: Runner, variants: list[str], *, zero_cost: bool, first: int) -> None:
    """Run every variant on the planned fidelity architectures (``benchmarks/ground_truth.py fidelity``'s list).

    Only the ``first`` of them in the order the ground truth arrives (both ends of the list alternately).
    """
    cfgs = gt.fidelity_configs(24, 60, 150, seed=0)
    # Both ends first: the two ground-truth processes walk the list from either end.
    order = [i for pair in zip(reversed(range(len(cfgs))), range(len(cfgs))) for i in pair][:len(cfgs)]
    cfgs = [cfgs[i] for i in order[:first]]
    for v in variants:
        for k, cfg in enumerate(cfgs):
            rec = runner.proxy(cfg, v)
            print(f"[prefetch {v} {k + 1}/{len(cfgs)}] {rec['accuracy']:.3f}", file=sys.stderr, flush=True)
    for m in ZERO_COST if zero_cost else ():
        for cfg in cfgs:
            runner.zero_cost(cfg, m)


def validation_noise(runner: Runner, variants: list[str]) -> dict[str, Any]:
    """Per variant, over every planned fidelity architecture it has a result for (ground truth not needed):
    the mean binomial SE, the across-architecture std of the accuracy and the validation set's reliability."""
    planned = {c.hash() for c in gt.fidelity_configs(24, 60, 150, seed=0)}
    out = {}
    for v in variants:
        recs = [r for r in runner.cache.values() if r.get("variant") == v and r["seed"] == 0
                and r["config_hash"] in planned and not r.get("diverged")]
        if len(recs) > 2:
            acc, se = [r["accuracy"] for r in recs], [r["accuracy_se"] for r in recs]
            out[v] = {"n": len(recs), "mean_se": float(np.mean(se)), "std_across": float(np.std(acc, ddof=1)),
                      "reliability": reliability(acc, se), "eval_images": int(recs[0]["eval_images"])}
    return {"validation_noise": out}


def seed_noise(runner: Runner, variants: list[str], seeds: int) -> dict[str, dict[str, float]]:
    """Each variant's own seed-to-seed spread on ShuffleNetV2 1x (training noise + nothing else: same val set)."""
    from nas.arch import preset

    cfg = preset("shufflenetv2-1.0x")
    out = {}
    for v in variants:
        accs = [r["accuracy"] for k in range(seeds) if (r := runner.proxy(cfg, v, seed=k)) is not None]
        if len(accs) < 2:
            continue
        seeds = len(accs)
        out[v] = {"seeds": seeds, "mean": float(np.mean(accs)), "std": float(np.std(accs, ddof=1))}
        print(f"[noise {v}] 1x over {seeds} seeds: {out[v]['mean']:.4f} ± {out[v]['std']:.4f}", file=sys.stderr,
              flush=True)
    return out


# ----------------------------------------------------------------------------------------- report
def _fmt_interval(e: dict[str, Any], key: str) -> str:
    return f"{e[key]:+.3f} [{e['lo']:+.3f}, {e['hi']:+.3f}]"


def print_table(summary: dict[str, dict[str, Any]], out: dict[str, Any]) -> None:
    sp = out["truth_spread"]
    print(f"Kendall tau-b vs ground truth ({out['recipe']}: 3 ep x 20k full Fashion-MNIST, 10k test), n = "
          f"{out['n']} architectures in {out['mflops_range'][0]:.0f}-{out['mflops_range'][1]:.0f} MFLOPs; "
          f"truth spread across them {out['truth_range'][0] * 100:.2f}-{out['truth_range'][1] * 100:.2f} %")
    print(f"ground truth = {'mean of >= ' + str(out['truth_seeds_min']) + ' seeds' if out['truth_seeds'] == 'all' else 'seed 0'}"
          f"; seed spread on 1x: std {sp['std'] * 100:.2f} points over {sp['n']} seeds; noise ceiling (seed std "
          f"{out['noise_sigma'] * 100:.2f} points) "
          f"of a perfect proxy ~{out['noise_ceiling']:.2f}; 90 % bootstrap intervals (architectures resampled)")
    st = out.get("truth_self_tau")
    if st:
        print(f"ground truth against itself (seed 0 vs seed 1, n = {st['n']}): tau-b {_fmt_interval(st, 'tau')}, "
              f"mean |difference| {st['mean_abs_diff'] * 100:.2f} points, per-architecture seed std "
              f"{st['seed_std'] * 100:.2f}")
    print(f"{'estimator':16s} {'n':>3s} {'tau-b [90 % CI]':>24s} {'vs quick [90 % CI]':>24s} {'s/cand':>7s} "
          f"{'load':>5s} {'img':>6s} {'eval n':>6s} {'SE pts':>6s} {'relia':>5s}")
    for name, e in summary.items():
        vs = _fmt_interval(e["vs_quick"], "diff") if "vs_quick" in e else ""
        secs = f"{e['seconds']:7.2f}" if "seconds" in e else f"{'':7s}"
        load = f"{e['load']:5.1f}" if "load" in e else f"{'':5s}"
        se = (f"{e['eval_images']:6d} {e['mean_se'] * 100:6.2f} {e['reliability']:5.2f}" if "mean_se" in e
              else "")
        img = f"{e['train_images']:6.0f}" if "train_images" in e else f"{'':6s}"
        print(f"{name:16s} {e['n']:3d} {_fmt_interval(e, 'tau'):>24s} {vs:>24s} {secs} {load} {img} {se}")
    for v, s in out.get("validation_noise", {}).items():
        print(f"validation noise, {v}: {s['n']} architectures, mean SE {s['mean_se'] * 100:.2f} points on "
              f"{s['eval_images']} images vs across-architecture std {s['std_across'] * 100:.2f}: reliability "
              f"{s['reliability']:.2f}")
    for v, s in out.get("seed_noise", {}).items():
        print(f"proxy seed spread on 1x, {v}: {s['mean'] * 100:.2f} ± {s['std'] * 100:.2f} points ({s['seeds']} "
              "seeds)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", default=DEFAULT_VARIANTS, help="comma-separated names (see --list)")
    ap.add_argument("--prefix", default="fidelity-0-",
                    help="ground-truth labels to judge on (comma-separated label prefixes)")
    ap.add_argument("--truth-seeds", choices=["all", "0"], default="all",
                    help="ground truth = the mean over every seed present (default) or seed 0 alone")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--noise-seeds", type=int, default=0, help="also train --noise-variants on 1x with K seeds")
    ap.add_argument("--noise-variants", default="quick", help="comma-separated variants for --noise-seeds")
    ap.add_argument("--no-zero-cost", action="store_true")
    ap.add_argument("--cached-only", action="store_true", help="train nothing: the table from cached results")
    ap.add_argument("--list", action="store_true", help="print the variants and exit")
    ap.add_argument("--prefetch", type=int, default=0, metavar="N",
                    help="first run the variants on N of the planned fidelity architectures (fidelity_configs(24, "
                         "60, 150, seed=0)), ground truth or not, so the table is ready when it arrives")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    if args.list:
        for name, (data, changes) in VARIANTS.items():
            print(f"{name:16s} data={data:14s} quick + {changes}")
        return 0
    import torch

    torch.set_num_threads(args.threads)
    variants = [v for v in args.variants.split(",") if v]
    runner = Runner(args.threads, cached_only=args.cached_only)
    if args.prefetch:
        prefetch(runner, variants, zero_cost=not args.no_zero_cost, first=args.prefetch)
    noise = validation_noise(runner, variants)
    if args.noise_seeds:
        noise["seed_noise"] = seed_noise(runner, [v for v in args.noise_variants.split(",") if v], args.noise_seeds)
    truth = truth_records(args.prefix, seeds=args.truth_seeds)
    if len(truth) < 3:
        raise SystemExit(f"only {len(truth)} ground-truth architectures labelled {args.prefix}*; run "
                         "benchmarks/ground_truth.py fidelity first")
    rows, timing, se = collect(runner, truth, variants, zero_cost=not args.no_zero_cost)
    names = variants + ([] if args.no_zero_cost else list(ZERO_COST)) + ["mflops", "params"]
    sp = spread_sigma()
    accs = [r["test_accuracy"] for r in rows]
    k = min(len(r["truth_seeds"]) for r in truth)
    self_tau = truth_self_tau(truth)
    # The ceiling's noise: the per-architecture seed std where the fidelity set has two seeds (0.55 points
    # measured, twice 1x's 0.29), else 1x's; over the mean of k seeds.
    sigma = self_tau["seed_std"] if self_tau else sp["std"]
    out = {"n": len(rows), "recipe": gt.recipe_hash(), "truth_spread": sp, "truth_seeds": args.truth_seeds,
           "truth_seeds_min": k, "truth_self_tau": self_tau, "noise_sigma": sigma,
           "noise_ceiling": noise_ceiling(accs, sigma / k ** 0.5), "truth_range": [min(accs), max(accs)],
           "mflops_range": [min(r["mflops"] for r in rows), max(r["mflops"] for r in rows)],
           "threads": args.threads, "variants": {v: {"data": variant_settings(v, threads=args.threads)[0],
                                                     "settings": variant_settings(v, threads=args.threads)[1]
                                                     .to_dict()} for v in variants},
           "summary": summarise(rows, names, timing, se), **noise, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, default=float))
    print_table(out["summary"], out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
