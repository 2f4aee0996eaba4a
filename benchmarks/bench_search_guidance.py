"""Latency-guided vs MACs-guided vs random search under one budget, at equal trials and seeds (issue 3).

Three searches of the shipped space under ``--budget 150MFLOPs`` with the same proxy, trials and seed:

* **latency-guided**: TPE minimising the latency predicted by the shipped table (what ``nas search`` does);
* **MACs-guided**: TPE minimising MACs (the FLOPs proxy the ShuffleNetV2 paper argues against);
* **random**: uniform draws among networks that fit the budget (the same budget guard, no model).

They are compared by

1. the hypervolume of (proxy accuracy, predicted latency) over each search's feasible trials, reference point
   (chance accuracy 0.1, 1.05 x the slowest feasible trial of all three searches), and the same for
   (accuracy, MFLOPs) with reference (0.1, the budget) for context;
2. the best *measured* latency among trials at least as accurate as ShuffleNetV2 1x (proxy-trained with the same
   settings and seed): the 3 fastest-predicted such trials of each search and 1x itself are timed end to end on
   the table's backend (onnxruntime CPU, its threads and batch), interleaved with the table's reference probe,
   and reported both raw and rescaled to the table's reference speed.

All three draw the same seeded initial design (TPE's first 10 trials are random draws under the same guard and
seed), so they differ only by what guides the later trials. Each search is an ordinary study in ``--out`` (SQLite): re-running resumes instead of retraining. Needs the
shipped table (``latency_tables/``); ~15 min on the 2-core VM at the defaults (24 trials x 3, 40 proxy steps).

    /work/venv/bin/python benchmarks/bench_search_guidance.py [--trials 24] [--seed 0] [--proxy-steps 40]
        [--workers 1] [--table FILE] [--out runs/bench_search_guidance] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

METHODS = (  # (key, objective, sampler)
    ("latency-guided", "latency", "tpe"),
    ("macs-guided", "flops", "tpe"),
    ("random", "latency", "random"),
)
CHANCE = 0.1  # 10 classes (bundled Fashion-MNIST): the hypervolume's reference accuracy
MEASURE_TOP = 3  # fastest-predicted qualifying trials timed end to end per search


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", default="150MFLOPs")
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--proxy-steps", type=int, default=40)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--table", default=None, help="latency table (default: the shipped one)")
    ap.add_argument("--out", default="runs/bench_search_guidance")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import optuna

    from nas.arch import PRESETS, ArchConfig
    from nas.backends import get_backend
    from nas.errors import NasError
    from nas.training.proxy import PROXY_PRESETS
    from nas.search import SearchSettings, evaluate_config, hypervolume_2d, open_study, search
    from nas.space import load_space
    from nas.latency.table import default_table_path, load_table, measure_network
    from nas.units import parse_budget

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = Path(args.table) if args.table else default_table_path()
    try:
        space = load_space() if args.table is None else None
        table = load_table(path, space=space)
        space = space or table.space_object()
    except NasError as e:
        print(f"bench_search_guidance: {e}", file=sys.stderr)
        return 2
    budget = parse_budget(args.budget)
    proxy = PROXY_PRESETS["quick"].replace(steps=args.proxy_steps, threads=1)
    out = Path(args.out)
    t_all = time.time()
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    log(f"table {path}: {table.describe()}")

    results: dict[str, dict] = {}
    for key, objective, sampler in METHODS:
        settings = SearchSettings(budgets=(budget,), n_trials=args.trials, objective=objective, sampler=sampler,
                                  seed=args.seed, proxy_settings=proxy, presets="none", workers=args.workers)
        name = f"guidance-{key}-{args.budget}-s{args.seed}-steps{args.proxy_steps}"
        t = time.time()
        log(f"[{key}] {args.trials} trials ({objective} objective, {sampler} sampler) ...")
        res = search(space, settings=settings, study=name, table=table, out_dir=out / key, threads=1)
        study = open_study(study=name, storage=res.storage)
        feas = [tr for tr in study.get_trials(deepcopy=False)
                if tr.state == optuna.trial.TrialState.COMPLETE and tr.user_attrs.get("feasible")]
        results[key] = {"study": name, "storage": res.storage, "seconds_this_run": round(time.time() - t, 1),
                        "counts": res.counts, "trials": [
                            {"trial": tr.number, "accuracy": tr.user_attrs["accuracy"],
                             "latency_ms": tr.user_attrs["latency_ms"], "mflops": tr.user_attrs["mflops"],
                             "config": tr.user_attrs["config"]} for tr in feas]}
        log(f"[{key}] done in {time.time() - t:.0f} s: {res.counts}")

    ref_cfg = PRESETS["shufflenetv2-1.0x"].with_resolution(table.resolution)
    log("training ShuffleNetV2 1x with the same proxy for the accuracy bar ...")
    ref_settings = SearchSettings(budgets=(budget,), n_trials=1, seed=args.seed, proxy_settings=proxy)
    ref = evaluate_config(ref_cfg, space=space, table=table, settings=ref_settings, train=True)
    acc_1x = ref["accuracy"]

    ref_cost = 1.05 * max([r["latency_ms"] for m in results.values() for r in m["trials"]]
                          + ([ref["latency_ms"]] if ref["latency_ms"] is not None else []))
    backend = get_backend(table.device, threads=table.threads, batch=table.batch)  # the table's own target
    ref_ms = table.probe.get("ref_ms")
    log("timing the fastest qualifying networks end to end ...")
    m1x = measure_network(ref_cfg, backend, num_classes=table.num_classes)

    def rescaled(m: dict) -> float | None:
        return m["ratio"] * ref_ms if ref_ms else None

    rows = []
    for key, r in results.items():
        pts = [(x["accuracy"], x["latency_ms"]) for x in r["trials"]]
        r["hypervolume_latency"] = hypervolume_2d(pts, reference_cost=ref_cost, reference_accuracy=CHANCE)
        r["hypervolume_mflops"] = hypervolume_2d([(x["accuracy"], x["mflops"]) for x in r["trials"]],
                                                 reference_cost=budget.limit / 1e6 if budget.metric == "macs"
                                                 else max(x["mflops"] for x in r["trials"]) * 1.05,
                                                 reference_accuracy=CHANCE)
        good = sorted((x for x in r["trials"] if x["accuracy"] >= acc_1x), key=lambda x: x["latency_ms"])
        r["qualifying"] = len(good)
        measured = []
        for x in good[:MEASURE_TOP]:
            m = measure_network(ArchConfig.from_dict(x["config"]), backend, num_classes=table.num_classes)
            measured.append({**x, "measured_ms": m["raw_ms"], "measured_rescaled_ms": rescaled(m),
                             "spread_pct": m["spread_pct"]})
        best = min(measured, key=lambda x: x["measured_rescaled_ms"] or x["measured_ms"], default=None)
        r["measured"] = measured
        r["best"] = best
        rows.append((key, r))

    doc = {"budget": args.budget, "trials": args.trials, "seed": args.seed, "proxy_steps": args.proxy_steps,
           "table": str(path), "table_describe": table.describe(), "reference_cost_ms": ref_cost,
           "shufflenetv2_1x": {"accuracy": acc_1x, "predicted_ms": ref["latency_ms"], "mflops": ref["mflops"],
                               "measured_ms": m1x["raw_ms"], "measured_rescaled_ms": rescaled(m1x)},
           "methods": results, "elapsed_s": round(time.time() - t_all, 1)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    if args.json:
        print(json.dumps(doc, indent=2, default=str))
        return 0
    print(f"\nbudget {args.budget}, {args.trials} trials each, seed {args.seed}, proxy {args.proxy_steps} steps; "
          f"ShuffleNetV2 1x: proxy accuracy {acc_1x:.3f}, predicted {ref['latency_ms'] or float('nan'):.2f} ms, measured "
          f"{m1x['raw_ms']:.2f} ms")
    print("| search | feasible trials | HV (acc x latency) | HV (acc x MFLOPs) | trials >= 1x acc | best measured "
          "latency >= 1x acc (ms) | its accuracy | its MFLOPs |")
    print("|---|---|---|---|---|---|---|---|")
    for key, r in rows:
        b = r["best"]
        meas = "-" if b is None else (f"{b['measured_ms']:.2f}" + (f" ({b['measured_rescaled_ms']:.2f} rescaled)"
                                                                   if b["measured_rescaled_ms"] else ""))
        print(f"| {key} | {len(r['trials'])} | {r['hypervolume_latency']:.4g} | {r['hypervolume_mflops']:.4g} | "
              f"{r['qualifying']} | {meas} | {'-' if b is None else format(b['accuracy'], '.3f')} | "
              f"{'-' if b is None else format(b['mflops'], '.1f')} |")
    print(f"(hypervolume reference: accuracy {CHANCE}, latency {ref_cost:.2f} ms / {args.budget}; "
          f"elapsed {doc['elapsed_s']:.0f} s; full result: {out / 'result.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
