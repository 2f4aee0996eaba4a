"""Transfer of the shipped table to this machine vs a full build here, on 50 held-out random networks (issue 14).

In one run, on this machine:

1. a FULL build of the default space (11-14 min; resumable and cached in runs/bench_transfer/full.json, so a
   rerun reuses it: delete the file to rebuild);
2. the transfer of the shipped table, timed (the goal: <= 180 s), with the library's defaults (networks, then
   blocks: nas.latency.transfer_blocks);
3. more networks in the transfer's order up to 40, for the trade-off curve (not counted in the transfer time);
4. 50 held-out random networks (seed 0, validate-table's default draws), each timed end to end in interleaved
   rounds with the reference probe (nas.latency.measure.measure_network, as validate-table does), in
   ``--passes`` (default 3) passes over all of them, the median ratio kept (``results.single_pass``: the
   first pass alone); every table is compared on the same measurements, each on its own reference speed
   (ratio x its probe time).

Reported for the transfer, the full build and the untransferred shipped table: % within +-5 %, MAPE, Kendall
tau; the ceiling of that % on this machine (``repeat_within_5_pct``: how often a held-out network timed again
lands within +-5 % of its other timings; where it is below the goal, the goal cannot be judged here); the curve
(networks timed vs held-out % within +-5 %) for 5, 10, 20, 40 networks, each with the transfer's blocks and
without them (``transfer_without_blocks``: the transfer's own networks alone), and every correction
model forced at the transfer's network count. Results: benchmarks/results/bench_transfer.json, with the load
average (os.getloadavg()) at each phase.

Pause the background ground-truth training while it runs (see /tmp/work or the report for the wrapper):

    python benchmarks/bench_transfer.py [--samples 50] [--nets 40] [--out benchmarks/results/bench_transfer.json]
    python benchmarks/bench_transfer.py --rejudge RESULT.json   # add the ceiling to an older result
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "runs" / "bench_transfer"
CURVE = (5, 10, 20, 40)
GOAL_S = 180.0  # issue 14: a transfer takes <= 3 minutes on this machine
GOAL_WITHIN_5 = 85.0  # issue 14: >= 85 % of 50 held-out networks within +-5 % of a full build's measurements


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _figures(table: Any, configs: list[Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    from nas.latency import predict
    from nas.latency.validate import error_figures

    ref = table.probe["ref_ms"]
    pred = [predict(c, table, timed=False).latency_ms for c in configs]  # the model (none is a timed network)
    meas = [r["ratio"] * ref for r in rows]
    return error_figures(pred, meas)


def _median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One network's passes: validate-table's median-ratio timing, with every pass's ratio kept (one pass too)."""
    from nas.latency.validate import median_timing

    return {**median_timing(rows), "pass_ratios": [r["ratio"] for r in rows]}


def _spread(per_network: list[list[float]]) -> dict[str, Any]:
    """:func:`nas.latency.validate.repeatability` of each network's ratios (one list per network):
    ``pass_to_pass_std_pct`` and ``repeat_within_5_pct``, how often a network timed again lands within +-5 % of
    its other timings, the ceiling of ``within_5_pct`` on this machine (Session 10: 50-65 % on contended EPYCs,
    92-98 % on the quiet ones)."""
    from nas.latency.validate import repeatability

    return repeatability([[{"ratio": x} for x in xs] for xs in per_network])


def rejudge(path: str) -> int:
    """Add the repeatability ceiling to a stored result (from its passes' ratios) and print it."""
    doc = json.loads(Path(path).read_text())
    rep = {sid: _spread([r["pass_ratios"] for r in rows])["repeat_within_5_pct"]
           for sid, rows in doc["heldout_nets"].items()}
    doc["log"]["heldout"]["repeat_within_5_pct"] = rep
    Path(path).write_text(json.dumps(doc, indent=2) + "\n")
    for sid, v in rep.items():
        print(f"{sid.split(':')[0]}: a repeat timing within ±5 % of the others in {v} % of cases")
    return 0


def _forced(shipped: Any, table: Any, model: str) -> Any:
    """The transferred table with ``model`` forced instead of the chosen one (on the same base: the shipped
    entries, or those corrected by the transfer's blocks where it used them)."""
    from nas.latency.transfer import _new_entries
    from nas.latency.transfer_blocks import transfer_base
    from nas.latency.transfer_fit import TransferFit

    fit = TransferFit(model=model, coef=dict(table.transfer["models"][model]["coef"]), models={}, loo_errors_pct=[])
    base = transfer_base(table, shipped)
    t = copy.deepcopy(table)
    t.path = None
    t.entries, per_call = _new_entries(base, fit, t.probe["ref_ms"], t.entries[next(iter(t.entries))].t)
    t.calibration = {**t.calibration, "per_block_ms": per_call}
    t.refresh()
    return t


def _full_build(backend: Any, log: dict[str, Any]) -> Any:
    from nas.latency import build_table
    from nas.space import load_space

    CACHE.mkdir(parents=True, exist_ok=True)
    out = CACHE / "full.json"
    cached = out.exists()
    t = time.time()
    table = build_table(load_space(), backend, out=out, resume=True)
    log["full_build"] = {"cached_file_existed": cached, "wall_s_this_run": round(time.time() - t, 1),
                         "build_seconds": round(table.build_seconds, 1), "load_after": _load(),
                         "calibration_model": (table.calibration or {}).get("model")}
    return table


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--passes", type=int, default=3, help="held-out: timings per network, median kept")
    ap.add_argument("--nets", type=int, default=40)
    ap.add_argument("--budget", type=float, default=None, help="transfer time budget (default: the library's)")
    ap.add_argument("--full", default=None, help="use this table as the full build (a dry run of the rest)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "bench_transfer.json"))
    ap.add_argument("--rejudge", default=None, metavar="RESULT",
                    help="only add the repeatability ceiling to a stored result file (no timing)")
    args = ap.parse_args()
    if args.rejudge:
        return rejudge(args.rejudge)

    from nas.backends import get_backend
    from nas.latency import load_table
    from nas.latency.measure import measure_network
    from nas.latency.prediction import check_probe
    from nas.latency.probe import portable_probe
    from nas.latency.transfer import time_transfer_networks, transfer_configs, transfer_table, transferred_table
    from nas.latency.transfer_blocks import recorded_blocks

    log: dict[str, Any] = {"load_start": _load(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    backend = get_backend("cpu", threads=1, batch=1)
    log["identity"] = backend.identity()
    full = load_table(args.full) if args.full else _full_build(backend, log)
    shipped = load_table()

    t0 = time.time()
    CACHE.mkdir(parents=True, exist_ok=True)
    budget = {"budget_s": args.budget} if args.budget is not None else {}
    moved = transfer_table(shipped, backend, out=CACHE / "transfer.json", overwrite=True, **budget)
    log["transfer"] = {"seconds": round(time.time() - t0, 1), "networks": moved.transfer["networks"],
                       "model": moved.transfer["model"], "loo_mape_pct": moved.transfer["loo_mape_pct"],
                       "loo_within_5_pct": moved.transfer["loo_within_5_pct"], "load_after": _load(),
                       "models_loo": {m: f["loo_mape_pct"] for m, f in moved.transfer["models"].items()},
                       "blocks": {k: v for k, v in moved.transfer["blocks"].items() if k != "entries"}}
    blocks = recorded_blocks(moved, shipped)

    rows = list(moved.calibration["nets"])
    space = shipped.space_object()
    order = transfer_configs(space, resolution=shipped.resolution, count=args.nets)
    rows += time_transfer_networks(shipped, backend, order[len(rows):], budget_s=None)
    log["curve_load_after"] = _load()

    rng = random.Random(args.seed)
    held = [space.sample(rng, fixed={"resolution": shipped.resolution}) for _ in range(args.samples)]
    seen = {r["config"] for r in rows}
    held = [c for c in held if c.to_string() not in seen]
    # Each table's ratios are to its own reference probe (probe/2, or probe/3 sized from this machine's LLC):
    # the held-out networks are timed once per distinct probe, so no table is rescaled by another's probe.
    # Each network is timed in --passes passes over all of them (spread over minutes), and its median ratio is
    # the truth: one paired measurement of a default-space network varies ~5 % (std) on these VMs over
    # minutes (bench_probe.py), so single measurements alone put a perfect table only ~70 % within +-5 %.
    t = time.time()
    passes_by: dict[str, list[list[dict[str, Any]]]] = {}
    specs = {check_probe(tab).id: check_probe(tab) for tab in (moved, full, shipped)}
    probes = {sid: portable_probe(backend, spec) for sid, spec in specs.items()}
    for _ in range(args.passes):
        for sid, probe in probes.items():  # the probes alternate pass by pass: each sees the same VM phases
            passes_by.setdefault(sid, []).append(
                [measure_network(c, backend, num_classes=shipped.num_classes, settings=shipped.network_settings,
                                 probe=probe) for c in held])
    meas_by = {sid: [_median_row([p[i] for p in ps]) for i in range(len(held))] for sid, ps in passes_by.items()}
    of = lambda tab: meas_by[check_probe(tab).id]  # noqa: E731
    meas = of(moved)
    spread = {sid: _spread([[r["ratio"] for r in net] for net in zip(*ps)]) for sid, ps in passes_by.items()}
    log["heldout"] = {"networks": len(held), "seed": args.seed, "passes": args.passes,
                      "seconds": round(time.time() - t, 1), "probes": sorted(meas_by), "load_after": _load(),
                      **{k: {sid: s[k] for sid, s in spread.items()}
                         for k in ("pass_to_pass_std_pct", "repeat_within_5_pct")}}

    res: dict[str, Any] = {"transfer": _figures(moved, held, meas), "full_build": _figures(full, held, of(full)),
                           "shipped_untransferred": _figures(shipped, held, of(shipped))}
    # The same tables judged on the first pass alone (one measurement per network, as before session 6).
    first = lambda tab: passes_by[check_probe(tab).id][0]  # noqa: E731
    res["single_pass"] = {"transfer": _figures(moved, held, first(moved)),
                          "full_build": _figures(full, held, first(full)),
                          "shipped_untransferred": _figures(shipped, held, first(shipped))}
    # The transfer's own networks without its blocks: what the block step added.
    own = moved.calibration["nets"]
    res["transfer_without_blocks"] = _figures(transferred_table(shipped, backend.identity(), own), held, meas)
    res["curve"] = []
    for k in CURVE:
        if k <= len(rows):
            for with_blocks in (True, False):
                tk = transferred_table(shipped, backend.identity(), rows[:k], blocks=blocks if with_blocks else ())
                res["curve"].append({"networks": k, "blocks": len(blocks) if with_blocks else 0,
                                     "blocks_used": tk.transfer["blocks"]["used"], "model": tk.transfer["model"],
                                     "loo_mape_pct": tk.transfer["loo_mape_pct"], **_figures(tk, held, meas)})
    res["forced_models"] = {m: _figures(_forced(shipped, moved, m), held, meas) for m in moved.transfer["models"]}
    log["load_end"] = _load()
    ok = log["transfer"]["seconds"] <= GOAL_S and res["transfer"]["within_5_pct"] >= GOAL_WITHIN_5
    doc = {"log": log, "results": res,
           "acceptance": {"transfer_s": log["transfer"]["seconds"], "goal_s": GOAL_S,
                          "within_5_pct": res["transfer"]["within_5_pct"], "goal_within_5_pct": GOAL_WITHIN_5,
                          "pass": ok},
           "heldout_nets": {sid: [{"config": c.to_string(), **m} for c, m in zip(held, ms)]
                            for sid, ms in meas_by.items()},
           "transfer_order_nets": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    for name, f in (("transfer", res["transfer"]), ("full build", res["full_build"]),
                    ("shipped (untransferred)", res["shipped_untransferred"])):
        print(f"{name:<24} within ±5 %: {f['within_5_pct']:5.1f} %  MAPE {f['mape_pct']:6.2f} %  "
              f"tau {f['kendall_tau']:.3f}")
    f = res["transfer_without_blocks"]
    print(f"{'transfer, no blocks':<24} within ±5 %: {f['within_5_pct']:5.1f} %  MAPE {f['mape_pct']:6.2f} %  "
          f"tau {f['kendall_tau']:.3f}")
    for c in res["curve"]:
        print(f"  curve: {c['networks']:>2} networks + {c['blocks']:>3} blocks ({c['model']}"
              f"{', blocks used' if c['blocks_used'] else ''}): within ±5 % {c['within_5_pct']:.1f} %, "
              f"MAPE {c['mape_pct']:.2f} %")
    for sid, v in log["heldout"]["repeat_within_5_pct"].items():
        print(f"ceiling ({sid.split(':')[0]}): a network timed again lands within ±5 % of its other timings in "
              f"{v} % of cases")
    print(f"transfer {log['transfer']['seconds']:.0f} s ({log['transfer']['networks']} networks, "
          f"{log['transfer']['blocks']['timed']} blocks); "
          f"acceptance {'PASS' if ok else 'FAIL'}; load {log['load_start']} -> {log['load_end']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
