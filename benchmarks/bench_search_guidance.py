"""Does the search find better networks than random and than MACs guidance? Judged on ground truth (issue 12).

**Ground-truth mode** (default). Searches of the shipped space under ``--budget 150MFLOPs`` at an equal trial
budget (``--trials``, >= 60) and ``--seeds`` (>= 3), one stored study each (resumable):

* ``latency-evolution``: regularized evolution with the latency-efficient initial design, latency predicted by
  the table (the default sampler since session 8);
* ``macs-evolution``: the same sampler minimising MACs (the FLOPs proxy the ShuffleNetV2 paper argues against);
* ``latency-guided`` / ``macs-guided``: the same with TPE (the default until session 8);
* ``random``: uniform draws repaired onto the budget, no model;
* any of them with ``-multi``: multi-fidelity (successive halving, ``--rungs``, Pareto-layer promotion).
  ``latency-evolution-multi`` with ``--rungs 2`` is the default ``nas search`` since session 9, and the default
  method set compares it with ``random-multi`` and ``macs-evolution-multi``.

Each search is judged by its final front's ``--top`` picks (``--pick``, hypervolume by default): their
ground-truth accuracy (``benchmarks/ground_truth.py``: 3 epochs x 20k full Fashion-MNIST at 64², official 10k
test split, cached by config hash; waits while another process trains the same network) and their end-to-end latency measured on the
table's backend, interleaved with the reference probe (``nas.latency.measure.measure_network``) and rescaled to
the table's reference speed (network/probe ratio x the table's probe ms; cached in
``benchmarks/results/search_measurements.jsonl``). Figures: the hypervolume of (ground-truth accuracy,
measured ms) over those candidates, reference point (``--hv-accuracy``, 1.5 x 1x's measured ms), mean ± std
over seeds; and the fastest measured network whose ground-truth accuracy is at least ShuffleNetV2 1x's (the
mean of 1x's cached seeds 0-2; also "within one seed-std" of it), with its speed-up over 1x. Beside it, free
of ground truth, the hypervolume of (proxy accuracy, predicted ms) over each search's whole feasible front (as
proxy mode judges): the top candidates by proxy accuracy sit at the front's accurate, slow end, so a sparse
front (random's) sends faster networks to the ground-truth judge than a dense one.

**Proxy mode** (``--objective proxy``), the cheap sampler comparison that picks the default sampler: searches
with each sampler (``tpe nsga2 gp random evolution``; add ``tpe-multi``/``evolution-multi`` for successive
halving) at equal rung-0 trials over seeds, judged by the hypervolume of (proxy accuracy, predicted latency)
over every feasible rung-0 result, reference (chance 0.1, 1.5 x 1x's predicted ms); no ground truth. Under
multi-fidelity, promotions spend extra compute (reported as ``steps``) and their higher-rung accuracies are not
in this figure: it compares what was *found*, at rung 0.

The table's identity is compared with this machine's and any mismatch printed. ``--dry`` runs everything tiny
(2 steps, 4 trials, one seed, a 6-step stand-in for ground truth, a short timing protocol) for a smoke test.

    python benchmarks/bench_search_guidance.py --seeds 0,1,2,3,4 --trials 60      # hours: run in the background
    python benchmarks/bench_search_guidance.py --objective proxy --seeds 0,1,2 --trials 30
    python benchmarks/bench_search_guidance.py --dry
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
RESULTS = REPO / "benchmarks" / "results"
MEASURE_CACHE = RESULTS / "search_measurements.jsonl"
GUIDANCE = {  # method -> (objective, sampler); the study is named after the method (runs of earlier sessions resume)
    "latency-evolution": ("latency", "evolution"),  # the default search since session 8
    "macs-evolution": ("flops", "evolution"),  # the same sampler minimising MACs
    "random": ("latency", "random"),
    "latency-guided": ("latency", "tpe"),  # the default until session 8 (TPE)
    "macs-guided": ("flops", "tpe"),
    "latency-nsga2": ("latency", "nsga2")}
DEFAULT_GUIDANCE = ("latency-evolution-multi", "random-multi", "macs-evolution-multi")  # the default search (s9)
PROXY_METHODS = ("tpe", "nsga2", "gp", "random", "evolution")
CHANCE = 0.1  # 10 classes: the proxy hypervolume's reference accuracy
REF_COST_X_1X = 1.5  # hypervolume reference cost: 1.5 x ShuffleNetV2 1x's latency (1x is ~146 of 150 MFLOPs)
GT_WAIT_S, GT_WAIT_ROUNDS = 30, 240  # another process training the same network: poll for up to 2 h
LOG = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731



def _portable(path: "str | Path") -> str:
    """The table's path without this machine's directories (results files are shared in git)."""
    from nas.latency.paths import portable_source

    return portable_source(str(Path(path).resolve()))

def _parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--objective", choices=["ground-truth", "proxy"], default="ground-truth")
    ap.add_argument("--methods", help="comma list (default: the three guidance methods, or the five samplers)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--trials", type=int, default=60)
    ap.add_argument("--budget", default="150MFLOPs")
    ap.add_argument("--fidelity", choices=["single", "multi"], default="single",
                    help="of every method without a -multi suffix")
    ap.add_argument("--rungs", type=int, default=2, help="multi-fidelity: rungs on the ladder (2, the search's "
                    "default, or 3)")
    ap.add_argument("--proxy-steps", type=int, default=40)
    ap.add_argument("--top", type=int, default=3, help="front candidates judged per search")
    ap.add_argument("--pick", choices=["hypervolume", "accuracy"], default="hypervolume",
                    help="which front candidates are judged: the --top that add the most hypervolume of the "
                         "search's own objectives (default), or the --top most proxy-accurate (sessions 4-7)")
    ap.add_argument("--hv-accuracy", type=float, default=0.85, help="ground-truth hypervolume reference accuracy")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--table", default=None)
    ap.add_argument("--out", default="runs/bench_search_guidance")
    ap.add_argument("--json-out", default=None, help="default benchmarks/results/search_<objective>.json")
    ap.add_argument("--dry", action="store_true", help="everything tiny: a smoke test")
    ap.add_argument("--proxy-device", default="cpu",
                    help="where the searches' proxy trains (cpu, cuda): every method alike; ground truth and "
                         "latency stay on this machine's CPU")
    ap.add_argument("--search-only", action="store_true",
                    help="run (or resume) the searches and stop: judge them later, e.g. on the machine the "
                         "latencies are for, with the same flags minus this one")
    ap.add_argument("--gt-only", action="store_true",
                    help="run (or resume) the searches and train their picks' ground truth, measuring nothing: "
                         "e.g. on a GPU machine (--gt-device cuda); judge later here with the same flags minus it")
    ap.add_argument("--gt-device", default="cpu", help="where missing ground truth trains (cpu, cuda)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="run the (method, seed) searches and their ground truth in this many processes first "
                         "(one thread each), then assemble the result from the caches")
    return ap.parse_args()


def _mean_std(xs: list[float]) -> dict[str, float]:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    if not xs:
        return {"n": 0, "mean": float("nan"), "std": float("nan")}
    return {"n": len(xs), "mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else float("nan")}


def _setup(args: argparse.Namespace) -> dict[str, Any]:
    """The space, table, budget, proxy, backend and the identity check."""
    from nas.backends import get_backend
    from nas.backends.identity import identity_diff
    from nas.latency.table import load_table
    from nas.latency.defaults import default_table_path
    from nas.space import load_space
    from nas.training.proxy import PROXY_PRESETS
    from nas.units import parse_budget

    path = Path(args.table) if args.table else default_table_path()
    space = load_space() if args.table is None else None
    table = load_table(path, space=space)
    space = space or table.space_object()
    backend = get_backend(table.device, threads=table.threads, batch=table.batch)
    mismatch = identity_diff(table.identity or {}, backend.identity(), sides=("table", "here"))
    for line in mismatch:
        LOG(f"table identity mismatch: {line}")
    proxy = PROXY_PRESETS["quick"].replace(steps=args.proxy_steps, threads=1)
    if args.dry:
        proxy = proxy.replace(steps=2, train_size=256, val_size=128, reports=1, bn_recalibration=1)
    return {"space": space, "table": table, "path": path, "budget": parse_budget(args.budget), "proxy": proxy,
            "backend": backend, "mismatch": mismatch}


def _unit(args: argparse.Namespace, method: str) -> dict[str, str]:
    """A method's search: objective, sampler and fidelity (``GUIDANCE`` in ground-truth mode, ``-multi`` appended
    for successive halving whatever ``--fidelity`` says; in proxy mode the method is a sampler name, ``-multi``
    for successive halving)."""
    if args.objective == "ground-truth":
        base = method.removesuffix("-multi")
        if base not in GUIDANCE:
            raise SystemExit(f"bench_search_guidance: method {method!r}: choose from {', '.join(GUIDANCE)} "
                             "(each optionally with -multi)")
        objective, sampler = GUIDANCE[base]
        return {"objective": objective, "sampler": sampler, "fidelity": "multi" if base != method else args.fidelity}
    sampler, _, multi = method.partition("-")
    return {"objective": "latency", "sampler": sampler, "fidelity": "multi" if multi else "single"}


def _run_search(env: dict[str, Any], args: argparse.Namespace, *, key: str, seed: int, objective: str,
                sampler: str, fidelity: str) -> Any:
    """One stored study (resumed if it exists); returns the opened study."""
    from nas.search import SearchSettings, open_study, search

    settings = SearchSettings(budgets=(env["budget"],), n_trials=args.trials, objective=objective, seed=seed,
                              proxy_settings=env["proxy"], presets="none", workers=args.workers,
                              fidelity=fidelity, device=args.proxy_device, sampler=sampler, rungs=args.rungs)
    name = f"guidance-{key}-{args.budget}-s{seed}-steps{env['proxy'].steps}-{settings.sampler}-{fidelity}"
    if fidelity == "multi" and args.rungs != 3:  # (studies of 3 rungs carry no suffix: they came first)
        name += f"-r{args.rungs}"
    t = time.time()
    LOG(f"[{key} seed {seed}] {args.trials} trials ({objective}, {settings.sampler}, {fidelity}) ...")
    res = search(env["space"], settings=settings, study=name, table=env["table"],
                 out_dir=Path(args.out) / name, threads=1)
    LOG(f"[{key} seed {seed}] {res.counts} in {time.time() - t:.0f} s this run")
    return open_study(study=name, storage=res.storage)


def _ground_truth(cfg: Any, args: argparse.Namespace, *, label: str) -> dict[str, Any]:
    """The cached ground truth of ``cfg`` (waiting while another process trains it); a 6-step stand-in under --dry."""
    if args.dry:
        from nas.training.proxy import PROXY_PRESETS, proxy_train

        s = PROXY_PRESETS["quick"].replace(steps=6, train_size=256, val_size=128, reports=1, threads=1)
        r = proxy_train(cfg, data="bundled", settings=s, seed=0)
        return {"test_accuracy": r.accuracy, "se_binomial": r.accuracy_se, "label": label, "dry": True}
    from ground_truth import ground_truth

    for _ in range(GT_WAIT_ROUNDS):
        rec = ground_truth(cfg, seed=0, label=label, device=args.gt_device)
        if rec is not None:
            return rec
        LOG(f"  {label}: another process is training it; waiting {GT_WAIT_S} s")
        time.sleep(GT_WAIT_S)
    raise SystemExit(f"bench_search_guidance: gave up waiting for the ground truth of {label}")


def _measure(cfg: Any, env: dict[str, Any], args: argparse.Namespace, probe: Any) -> dict[str, Any]:
    """End-to-end latency interleaved with the probe, rescaled to the table's reference speed (cached)."""
    from nas.latency.measure import measure_network

    table = env["table"]
    cache = Path(args.out) / "dry_measurements.jsonl" if args.dry else MEASURE_CACHE
    ident = json.dumps({k: (table.identity or {}).get(k) for k in ("cpu_model", "threads", "batch", "runtime_version")},
                       sort_keys=True)
    key = f"{cfg.hash()[:16]}-{ident}"
    if cache.is_file():
        for line in cache.read_text().splitlines():
            rec = json.loads(line) if line.strip() else {}
            if rec.get("key") == key:
                return rec
    kw = {}
    if args.dry:
        from nas.backends import MeasureSettings

        kw["settings"] = MeasureSettings(warmup=1, min_repeats=3, max_repeats=5, min_time_s=0.0, rounds=1, retries=0)
    else:
        kw["settings"] = table.network_settings
    m = measure_network(cfg, env["backend"], num_classes=table.num_classes, probe=probe, **kw)
    ref = table.probe.get("ref_ms")
    rec = {"key": key, "raw_ms": m["raw_ms"], "ratio": m["ratio"], "spread_pct": m["spread_pct"],
           "ms": m["ratio"] * ref if ref else m["raw_ms"], "rescaled": bool(ref), "load": os.getloadavg()[0]}
    cache.parent.mkdir(parents=True, exist_ok=True)
    with cache.open("a") as f:
        f.write(json.dumps(rec) + "\n")
    return rec


def _top(study: Any, k: int, *, pick: str = "hypervolume", ref_cost: float | None = None) -> list[Any]:
    """``k`` distinct networks of the front (each at its highest rung; a network proposed twice counts once).

    ``pick="hypervolume"`` (default since session 8): the ``k`` that add the most hypervolume of the search's own
    objectives (proxy accuracy, predicted ms or MFLOPs; reference chance accuracy and ``ref_cost``), i.e. the
    networks that cover the trade-off a user picks from (:func:`nas.search.front.front_picks`).
    ``pick="accuracy"`` (sessions 4-7): the ``k`` most proxy-accurate, which sit at the front's slow end, so a
    dense front sends slower networks to the judge than a sparse one."""
    from nas.search import TrialRecord, pareto_records
    from nas.search.front import front_picks

    if pick == "hypervolume":
        recs = [TrialRecord.from_trial(t) for t in study.get_trials(deepcopy=False)]
        return front_picks(recs, k, reference_accuracy=CHANCE, reference_cost=float(ref_cost))
    out, seen = [], set()
    for r in sorted(pareto_records(study), key=lambda r: (-r.values[0], r.values[1])):
        if r.config_string not in seen and len(out) < k:
            seen.add(r.config_string)
            out.append(r)
    return out


def _reference_1x(env: dict[str, Any], args: argparse.Namespace, probe: Any) -> dict[str, Any]:
    """ShuffleNetV2 1x: ground truth (mean/std of its cached seeds 0-2) and measured latency."""
    from nas.arch import PRESETS

    cfg = PRESETS["shufflenetv2-1.0x"].with_resolution(env["table"].resolution)
    gt_cfg = PRESETS["shufflenetv2-1.0x"]
    if args.dry:
        accs = [_ground_truth(gt_cfg, args, label="shufflenetv2-1.0x")["test_accuracy"]]
    else:
        from ground_truth import read_cache

        accs = [r["test_accuracy"] for r in read_cache().values()  # the CPU's seeds: the reference recipe run
                if r.get("label") == "shufflenetv2-1.0x" and r.get("seed") in (0, 1, 2)
                and r.get("device", "cpu") == "cpu"]
        if not accs:
            accs = [_ground_truth(gt_cfg, args, label="shufflenetv2-1.0x")["test_accuracy"]]
    return {"accuracy": _mean_std(accs), "accuracies": accs, "measured": _measure(cfg, env, args, probe),
            "predicted_ms": _predicted_1x(env)}


def _predicted_1x(env: dict[str, Any]) -> float:
    from nas.arch import PRESETS
    from nas.latency.prediction import predict

    return predict(PRESETS["shufflenetv2-1.0x"].with_resolution(env["table"].resolution), env["table"]).latency_ms


def _own_ref_cost(env: dict[str, Any], study: Any) -> float:
    """The hypervolume reference cost in the search's own cost unit: 1.5 x ShuffleNetV2 1x's predicted ms, or its
    MFLOPs for a MACs-guided search (``values[1]`` is MFLOPs there)."""
    from nas.arch import PRESETS
    from nas.macs import count_macs

    names = list(study.user_attrs.get("metric_names") or study.metric_names or [])
    if len(names) > 1 and names[1] == "mflops":
        cfg = PRESETS["shufflenetv2-1.0x"].with_resolution(env["table"].resolution)
        return REF_COST_X_1X * count_macs(cfg, num_classes=env["table"].num_classes).macs / 1e6
    return REF_COST_X_1X * _predicted_1x(env)


def _picks_with_truth(study: Any, env: dict[str, Any], args: argparse.Namespace) -> list[tuple[Any, Any, dict]]:
    """The search's judged picks as (trial record, config, ground-truth record), trained where missing."""
    from nas.arch import ArchConfig

    out = []
    for r in _top(study, args.top, pick=args.pick, ref_cost=_own_ref_cost(env, study)):
        cfg = ArchConfig.from_dict(r.config)
        out.append((r, cfg, _ground_truth(cfg, args, label=f"{study.study_name}-t{r.number}")))
    return out


def _judge(study: Any, env: dict[str, Any], args: argparse.Namespace, probe: Any, ref: dict[str, Any]) -> dict:
    """Ground truth and measured latency of a search's top front candidates, their hypervolume, the fastest >= 1x."""
    from nas.search import hypervolume_2d

    rows = []
    for r, cfg, gt in _picks_with_truth(study, env, args):
        m = _measure(cfg, env, args, probe)
        rows.append({"trial": r.number, "rung": r.rung or 0, "proxy_accuracy": r.values[0], "mflops": r.mflops,
                     "predicted_ms": r.latency_ms, "gt_accuracy": gt["test_accuracy"], "gt_se": gt["se_binomial"],
                     "measured_ms": m["ms"], "measured_spread_pct": m["spread_pct"], "config": r.config_string})
    ref_cost = REF_COST_X_1X * ref["measured"]["ms"]
    hv = hypervolume_2d([(x["gt_accuracy"], x["measured_ms"]) for x in rows], reference_cost=ref_cost,
                        reference_accuracy=args.hv_accuracy)
    mean, std = ref["accuracy"]["mean"], ref["accuracy"]["std"]
    out = {"study": study.study_name, "candidates": rows, "hypervolume": hv}
    for name, bar in (("fastest_at_1x", mean), ("fastest_within_1x_std", mean - (std if math.isfinite(std) else 0))):
        ok = sorted((x for x in rows if x["gt_accuracy"] >= bar), key=lambda x: x["measured_ms"])
        out[name] = ({**ok[0], "speedup_vs_1x_pct": 100 * (1 - ok[0]["measured_ms"] / ref["measured"]["ms"])}
                     if ok else None)
    return out


def _proxy_hv(study: Any, env: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    """Hypervolume of (proxy accuracy, predicted ms) over the feasible rung-0 results; compute in steps."""
    from nas.search import TrialRecord, hypervolume_2d

    recs = [TrialRecord.from_trial(t) for t in study.get_trials(deepcopy=False)]
    # predicted latency whatever the search minimised (a MACs-guided search's values[1] is MACs)
    pts = [(r.values[0], r.latency_ms) for r in recs
           if r.state == "COMPLETE" and r.feasible and not r.rung and r.latency_ms is not None]
    steps = sum(r.steps or 0 for r in recs)
    hv = hypervolume_2d(pts, reference_cost=REF_COST_X_1X * ref["predicted_ms"], reference_accuracy=CHANCE)
    return {"study": study.study_name, "hypervolume": hv, "feasible": len(pts), "steps": steps,
            "promotions": sum(1 for r in recs if r.rung)}


def _run_units(args: argparse.Namespace, methods: list[str], seeds: list[int]) -> None:
    """Every (method, seed) unit in its own process, ``--jobs`` at a time, seed-major; each unit's study, ground
    truth and measurements land in the shared caches, so the assembling pass after it trains nothing."""
    import subprocess

    units = [(m, s) for s in seeds for m in methods]
    logs = Path(args.out) / "units"
    logs.mkdir(parents=True, exist_ok=True)
    passed, argv = [], iter(sys.argv[1:])
    for a in argv:
        if a == "--jobs":
            next(argv, None)
        elif not a.startswith("--jobs="):
            passed.append(a)
    running: list[tuple[Any, str]] = []
    while units or running:
        while units and len(running) < args.jobs:
            m, s = units.pop(0)
            name = f"{m}-s{s}"
            cmd = [sys.executable, __file__, *passed, "--methods", m, "--seeds", str(s),
                   "--json-out", str(logs / f"{name}.json")]
            LOG(f"[jobs] start {name}")
            running.append((subprocess.Popen(cmd, stdout=(logs / f"{name}.log").open("w"),
                                             stderr=subprocess.STDOUT), name))
        time.sleep(5)
        for p, name in list(running):
            if p.poll() is not None:
                running.remove((p, name))
                LOG(f"[jobs] {name} exited {p.returncode} (log: {logs / (name + '.log')})")


def main() -> int:
    args = _parse()
    if args.jobs < 1:
        raise SystemExit("bench_search_guidance: --jobs must be >= 1")
    if args.dry:
        args.trials, args.seeds, args.top, args.out, args.hv_accuracy = 4, "0", 1, args.out + "-dry", CHANCE
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = (args.methods.split(",") if args.methods
               else list(DEFAULT_GUIDANCE) if args.objective == "ground-truth" else list(PROXY_METHODS))
    if args.dry and args.objective == "proxy" and not args.methods:
        methods = ["tpe", "evolution", "tpe-multi"]
    if args.jobs > 1 and not args.dry:
        _run_units(args, methods, seeds)
        if args.search_only or args.gt_only:
            return 0
    import optuna

    from nas.latency.probe import portable_probe

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    env = _setup(args)
    t_all = time.time()
    from nas.latency.prediction import check_probe

    if args.search_only or args.gt_only:
        for seed in seeds:
            for method in methods:
                study = _run_search(env, args, key=method, seed=seed, **_unit(args, method))
                if args.gt_only:
                    _picks_with_truth(study, env, args)
        return 0
    probe = portable_probe(env["backend"], check_probe(env["table"]))  # ratios are to the table's own probe
    ref = _reference_1x(env, args, probe) if args.objective == "ground-truth" else {"predicted_ms": _predicted_1x(env)}
    per: dict[str, list[dict[str, Any]]] = {}
    for seed in seeds:  # seed-major: an interrupted run has every method for its first seeds
        for method in methods:
            study = _run_search(env, args, key=method, seed=seed, **_unit(args, method))
            if args.objective == "ground-truth":
                per.setdefault(method, []).append({"seed": seed, **_judge(study, env, args, probe, ref),
                                                   "proxy_front": _proxy_hv(study, env, ref)})
            else:
                per.setdefault(method, []).append({"seed": seed, **_proxy_hv(study, env, ref)})
    summary = {m: _mean_std([r["hypervolume"] for r in rs]) for m, rs in per.items()}
    proxy_summary = ({m: _mean_std([r["proxy_front"]["hypervolume"] for r in rs]) for m, rs in per.items()}
                     if args.objective == "ground-truth" else None)
    doc = {"objective": args.objective, "budget": args.budget, "trials": args.trials, "seeds": seeds,
           "proxy_steps": env["proxy"].steps, "proxy_device": args.proxy_device, "table": _portable(env["path"]), "table_describe": env["table"].describe(),
           "table_identity_mismatch": env["mismatch"], "load_average": os.getloadavg(), "reference_1x": ref,
           "hypervolume": summary, "proxy_front_hypervolume": proxy_summary, "runs": per, "elapsed_s": round(time.time() - t_all, 1), "dry": args.dry,
           "pick": args.pick, "top": args.top,
           "hv_reference": {"accuracy": args.hv_accuracy if args.objective == "ground-truth" else CHANCE,
                            "cost_x_1x": REF_COST_X_1X}}
    out = Path(args.json_out) if args.json_out else (
        Path(args.out) / "result.json" if args.dry else RESULTS / f"search_{args.objective.replace('-', '_')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    _print(doc, per, summary)
    print(f"(full result: {out}; elapsed {doc['elapsed_s']:.0f} s)")
    return 0


def _print(doc: dict[str, Any], per: dict[str, list[dict[str, Any]]], summary: dict[str, dict[str, float]]) -> None:
    """The README table: hypervolume mean ± std over seeds per method (+ the fastest network >= 1x)."""
    gt = doc["objective"] == "ground-truth"
    print(f"\n{doc['objective']} comparison, budget {doc['budget']}, {doc['trials']} trials x seeds {doc['seeds']}, "
          f"proxy {doc['proxy_steps']} steps, load average {doc['load_average'][0]:.1f}")
    if doc["table_identity_mismatch"]:
        print("table identity mismatch: " + "; ".join(doc["table_identity_mismatch"]))
    if gt:
        r = doc["reference_1x"]
        print(f"ShuffleNetV2 1x: ground truth {r['accuracy']['mean'] * 100:.2f} ± {r['accuracy']['std'] * 100:.2f} % "
              f"(seeds: {len(r['accuracies'])}), measured {r['measured']['ms']:.2f} ms")
        print("| search | HV (gt acc x ms) mean ± std | per seed | fastest >= 1x acc: ms (speed-up), acc "
              "| whole front: HV (proxy acc x predicted ms) mean ± std |")
    else:
        print("| sampler | HV (proxy acc x predicted ms) mean ± std | per seed | promotions | steps |")
    print("|---|---|---|---|---|")
    for m, rs in per.items():
        s = summary[m]
        seeds = ", ".join(f"{r['hypervolume']:.4g}" for r in rs)
        if gt:
            best = [r["fastest_at_1x"] for r in rs if r["fastest_at_1x"]]
            b = min(best, key=lambda x: x["measured_ms"]) if best else None
            tail = (f"{b['measured_ms']:.2f} ({b['speedup_vs_1x_pct']:+.0f} %), {b['gt_accuracy'] * 100:.2f} %"
                    if b else "-")
            ps = doc["proxy_front_hypervolume"][m]
            print(f"| {m} | {s['mean']:.4g} ± {s['std']:.2g} | {seeds} | {tail} | {ps['mean']:.4g} ± {ps['std']:.2g} |")
        else:
            print(f"| {m} | {s['mean']:.4g} ± {s['std']:.2g} | {seeds} | "
                  f"{sum(r['promotions'] for r in rs)} | {sum(r['steps'] for r in rs)} |")


if __name__ == "__main__":
    sys.exit(main())
