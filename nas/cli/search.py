"""CLI: ``nas search`` (run, resume or join a search) and ``nas report`` (an existing study)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

    from nas.cli.progress import Bars
    from nas.search.report import SearchReport
    from nas.search.results import SearchStatus

__all__ = ["add_parsers", "print_report", "QUICK_TRIALS", "QUICK_STEPS"]

DEFAULT_TRIALS = 60
QUICK_TRIALS = 20  # --quick: trials of the demo (<= 10 min on the 2-core dev VM with the presets)
QUICK_STEPS = 40  # --quick: proxy steps per candidate (the "quick" preset's recipe, half its ~80 steps)

SEARCH_EPILOG = """\
--trials N is the study's total (completed + pruned + failed), not "N more": re-running the same command
resumes the study (Ctrl-C or kill loses no completed trial; trials left running by a dead worker are
marked failed) and stops at N. A larger N continues it.

Several workers: --workers K starts K processes on this machine. Workers on other machines join the same
study with the same --study and a shared --storage, e.g. on every machine:
  nas search --budget 150MFLOPs --trials 200 --study s1 --storage postgresql://user@dbhost:5432/nas
The default storage (SQLite in runs/<study>/study.db) serves the processes of one machine only.

Samplers (--sampler): every proposal is repaired onto the budgets (the nearest feasible network), so no
trial is spent over budget and the sampler learns from what it chose. Multi-fidelity (the default with the
trained proxy; --fidelity single turns it off): successive halving; --trials counts the candidates trained at
the cheapest rung, and the top 1/eta of each rung by Pareto layer, near its front, are retrained with 4x the
steps (--rungs 3: and 16x); the front shows each at its highest rung.

Budgets: 150MFLOPs (mult-adds, as in the ShuffleNetV2 paper), 5ms (latency predicted from the table),
3Mparams; repeat --budget for several. Results: runs/<study>/ (study.db, report.json, PNG plots).
Browse a study: optuna-dashboard <storage URL> (e.g. sqlite:///runs/<study>/study.db; not installed here:
pip install optuna-dashboard).
"""


def add_parsers(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("search", help="search architectures under FLOPs/latency/params budgets (Optuna study)",
                       description="Multi-objective search: maximise proxy accuracy, minimise predicted latency "
                                   "(or MACs) under hard budgets.",
                       epilog=SEARCH_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--budget", action="append", required=True, metavar="BUDGET",
                   help="hard budget, e.g. 150MFLOPs, 5ms, 3Mparams (repeatable)")
    s.add_argument("--space", help="search space .toml (default: the shipped shufflenetv2)")
    s.add_argument("--table", help="latency table of the space (default: the shipped table of the default space)")
    s.add_argument("--strict", action="store_true",
                   help="refuse a latency table built on another machine (default: one warning line)")
    s.add_argument("--data", default="bundled", help="proxy data: bundled, fashion-mnist[:DIR], cifar10:DIR, "
                                                      "cifar100:DIR, folder:DIR (default: bundled)")
    s.add_argument("--trials", type=int, help=f"total trials of the study, not 'N more' (default {DEFAULT_TRIALS}; "
                                              f"--quick {QUICK_TRIALS})")
    s.add_argument("--timeout", type=float, metavar="SECONDS", help="stop starting new trials after this long")
    s.add_argument("--study", help="study name (default: from space, budgets, objective; same command = resume)")
    s.add_argument("--storage", help="Optuna storage URL, e.g. postgresql://user@host/db or sqlite:///x.db "
                                     "(default: sqlite in the --out folder)")
    s.add_argument("--out", help="results folder (default: runs/<study>)")
    s.add_argument("--workers", type=int, help="worker processes on this machine (default 1; --quick: up to 2)")
    s.add_argument("--sampler", choices=["tpe", "nsga2", "gp", "random", "evolution"], default="evolution",
                   help="proposals, each repaired onto the budgets: evolution (default: regularized evolution "
                        "seeded by the presets and latency-efficient networks), tpe, nsga2, gp (Optuna's "
                        "GPSampler, needs scipy), random")
    s.add_argument("--objective", choices=["latency", "flops"], default="latency",
                   help="second objective: predicted latency (default) or MACs")
    s.add_argument("--seed", type=int, default=0, help="seeds the sampler and every proxy run (default 0)")
    s.add_argument("--proxy", choices=["train", "zero-cost"], default="train",
                   help="accuracy signal: short training (default) or the zero-cost NASWOT score")
    s.add_argument("--proxy-preset", default="quick", help="proxy budget: quick (default), standard, reference")
    s.add_argument("--proxy-steps", type=int, help="override the proxy's optimizer steps per candidate")
    s.add_argument("--threads", type=int, help="torch threads per worker (default 1: several threads per process "
                                               "spin-wait and slow down badly on a shared machine; add workers)")
    s.add_argument("--device", default="cpu", help="where the proxy trains: cpu (default) or cuda")
    s.add_argument("--presets", choices=["all", "feasible", "none"],
                   help="which ShuffleNetV2 presets get a proxy accuracy for reference (default all; --quick: "
                        "feasible)")
    s.add_argument("--no-prune", action="store_true", help="train every candidate to the end")
    s.add_argument("--fidelity", choices=["single", "multi"], default=None,
                   help="multi (default with the trained proxy): successive halving, the top 1/eta of a rung by "
                        "Pareto layer promoted to 4x (and 16x) the steps (--trials counts candidates); single "
                        "(default with --proxy zero-cost): every candidate gets the proxy's steps")
    s.add_argument("--eta", type=int, default=3, help="multi-fidelity: promote the top 1/eta of a rung (default 3)")
    s.add_argument("--rungs", type=int, default=2, help="multi-fidelity: rungs on the ladder, 2 or 3 (default 2)")
    s.add_argument("--quick", action="store_true",
                   help=f"demo: shipped space+table, bundled data, {QUICK_TRIALS} trials, {QUICK_STEPS}-step proxy")
    s.add_argument("--json", action="store_true", help="print one JSON object (its 'pareto' list) on stdout")
    s.set_defaults(func=cmd_search)

    r = sub.add_parser("report", help="Pareto table and plots of an existing search study",
                       description="Print the Pareto front (with the ShuffleNetV2 presets) of a study and write its "
                                   "plots. The study also opens in optuna-dashboard: optuna-dashboard <storage URL>.")
    r.add_argument("--study", required=True, help="study name")
    r.add_argument("--storage", help="Optuna storage URL (default: sqlite in runs/<study>/)")
    r.add_argument("--out", help="folder for the plots (default: runs/<study>)")
    r.add_argument("--no-plots", action="store_true", help="do not write the PNG plots")
    r.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    r.set_defaults(func=cmd_report)


def _settings(args: argparse.Namespace, space: Any) -> Any:
    from nas.training.proxy import proxy_settings
    from nas.search.settings import SearchSettings
    from nas.units import parse_budget

    budgets = tuple(parse_budget(b) for b in args.budget)
    if args.proxy_steps is not None and args.proxy_steps < 1:
        raise UsageError(f"--proxy-steps {args.proxy_steps}: must be a positive integer")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads {args.threads}: must be a positive integer")
    ps = proxy_settings(args.proxy_preset)
    steps = args.proxy_steps or (QUICK_STEPS if args.quick else None)
    if steps is not None:
        ps = ps.replace(steps=steps)
    trials = args.trials if args.trials is not None else (QUICK_TRIALS if args.quick else DEFAULT_TRIALS)
    presets = args.presets or ("feasible" if args.quick else "all")
    workers = args.workers if args.workers is not None else (min(2, os.cpu_count() or 1) if args.quick else 1)
    return SearchSettings(budgets=budgets, n_trials=trials, objective=args.objective, sampler=args.sampler,
                          seed=args.seed, proxy=args.proxy, proxy_settings=ps, data=args.data,
                          timeout_s=args.timeout, workers=workers, device=args.device,
                          prune=not args.no_prune, presets=presets, fidelity=args.fidelity, eta=args.eta,
                          rungs=args.rungs)


def _load_table(args: argparse.Namespace, space: Any, settings: Any) -> Any:
    from nas.latency.table import resolve_table

    # --table of another space: TableMismatchError (exit 2). Without --table, the shipped table applies to the
    # default space only; a missing one is a one-line TableError when latency is needed. A custom space without
    # --table: MAC/param budgets with --objective flops only.
    needs = settings.objective == "latency" or any(b.metric == "latency_ms" for b in settings.budgets)
    return resolve_table(args.table, space=space, use_default=args.space is None, required=needs)


def _on_status(bars: "Bars | None", *, title: str, cost_unit: str, is_acc: bool) -> "Any":
    """A ``progress`` callback for :func:`nas.search.run.search`: one bar with ETA, the best trial so far, the
    front size and the pruned/failed counts in its description (on stderr: stdout stays clean for --json)."""

    def update(st: "SearchStatus") -> None:
        if bars is None:
            return
        if st.best_accuracy is None:
            best = "best: -"
        else:
            a = f"{st.best_accuracy * 100:.1f}%" if is_acc else f"{st.best_accuracy:.1f}"
            best = f"best {a} @ {st.best_cost:.2f} {cost_unit}"
        extra = f" | {st.message}" if st.message else ""
        desc = (f"{title} | {best} | front {st.front} | pruned {st.pruned} failed {st.failed}"
                f"{' running ' + str(st.running) if st.running else ''}{extra}")
        bars.update("search", done=min(st.done, st.total), total=st.total, description=desc)

    return update


def cmd_search(args: argparse.Namespace) -> int:
    from nas._io import atomic_write_json
    from nas.cli.latency import check_table_use
    from nas.cli.progress import bars
    from nas.search.identity import study_name_for
    from nas.search.report import build_report, plot_report
    from nas.search.run import search
    from nas.search.storage import open_study
    from nas.space import load_space

    if args.quick and (args.space or args.table):
        raise UsageError("--quick runs on the shipped space and table; drop --space/--table (or drop --quick)")
    space = load_space(args.space)
    settings = _settings(args, space)
    table = _load_table(args, space, settings)
    mismatch = check_table_use(table, strict=args.strict) if table is not None else []
    name = args.study or study_name_for(space, settings, quick=args.quick)
    out_dir = Path(args.out) if args.out else Path("runs") / name
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out {out_dir}: cannot create the folder ({e.strerror})") from None
    with bars() as b:
        on_status = _on_status(b, title=f"search {name}", is_acc=settings.proxy == "train",
                               cost_unit="ms" if settings.objective == "latency" else "MFLOPs")
        result = search(space, settings=settings, study=name, table=table, storage=args.storage, out_dir=out_dir,
                        threads=args.threads, progress=on_status)
    study = open_study(study=name, storage=result.storage)
    rep = build_report(study, storage=result.storage)
    plot_report(rep, out_dir)
    doc = rep.to_dict()
    doc["elapsed_s"] = round(result.elapsed_s, 1)
    doc["table_mismatch"] = mismatch
    try:
        atomic_write_json(out_dir / "report.json", doc)
    except OSError as e:
        raise UsageError(f"--out {out_dir}: cannot write report.json ({e.strerror})") from None
    if args.json:
        from nas.cli import print_json

        print_json(doc)
    else:
        from nas.cli import console

        c = console()
        print_report(rep, c)
        c.print(f"study {name!r} in {result.storage}  ({result.elapsed_s:.0f} s this run); "
                f"`nas report --study {name}` reprints this, `nas export --study {name}` exports a trial")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from nas.search.report import build_report, plot_report
    from nas.search.storage import default_storage, open_study

    out_dir = Path(args.out) if args.out else Path("runs") / args.study
    url = args.storage or default_storage(study=args.study, out_dir=args.out)
    study = open_study(study=args.study, storage=url)
    rep = build_report(study, storage=url)
    if not args.no_plots:
        try:
            plot_report(rep, out_dir)
        except OSError as e:
            raise UsageError(f"--out {out_dir}: cannot write the plots ({e.strerror})") from None
    if args.json:
        from nas.cli import print_json

        print_json(rep.to_dict())
    else:
        from nas.cli import console

        print_report(rep, console())
    return 0


def _fmt(v: Any, spec: str, none: str = "-") -> str:
    return none if v is None else format(v, spec)


def print_report(rep: "SearchReport", console: "Console") -> None:
    """Print the front and the presets as one rich table, then a one-line summary."""
    from rich.table import Table

    is_acc = rep.metric_names[0] == "accuracy"
    t = Table(title=f"Pareto front of study {rep.study!r} under {', '.join(rep.budgets)} "
                    f"(objective: {rep.objective})", title_justify="left")
    has_lat = any(r.get("latency_ms") is not None for r in [*rep.pareto, *rep.presets])
    cols = ["#", "trial", "MFLOPs", "Mparams", *(["ms"] if has_lat else []), "acc % ±SE" if is_acc else "score",
            "rung steps" if (rep.meta.get("fidelity") or {}).get("mode") == "multi" else "steps", "fits"]
    for col in cols:
        t.add_column(col, justify="right", no_wrap=True)
    t.add_column("architecture", overflow="fold")

    def lat(r: dict[str, Any]) -> list[str]:
        if not has_lat:
            return []
        if r.get("latency_ms") is None:
            return ["-"]
        u = r.get("latency_uncertainty_ms")
        return [f"{r['latency_ms']:.3g}" + (f"±{u:.2g}" if u is not None else "")]

    def acc(r: dict[str, Any]) -> str:
        v = r.get("accuracy") if is_acc else r.get("score")
        text = _fmt(v * 100 if (v is not None and is_acc) else v, ".1f" if is_acc else ".2f")
        se = r.get("accuracy_se") if is_acc and v is not None else None
        return text + (f"±{se * 100:.1f}" if se is not None else "")

    def fid(r: dict[str, Any]) -> str:
        f = r.get("fidelity") or {}
        if f.get("steps") is None:
            return "-"
        return (f"r{f['rung']} " if multi else "") + str(f["steps"])

    multi = (rep.meta.get("fidelity") or {}).get("mode") == "multi"

    for i, r in enumerate(rep.pareto, 1):
        t.add_row(str(i), str(r["trial"]), _fmt(r.get("mflops"), ".1f"), _fmt((r.get("params") or 0) / 1e6, ".2f"),
                  *lat(r), acc(r), fid(r), "[green]yes[/]", r.get("config_string") or "")
    if rep.presets:
        t.add_section()
        for p in rep.presets:
            beaten = p.get("beaten_by") or []
            note = p["name"] + (f" (beaten by trial {', '.join(map(str, beaten[:3]))})" if beaten else "")
            t.add_row("", "preset", _fmt(p.get("mflops"), ".1f"), _fmt((p.get("params") or 0) / 1e6, ".2f"),
                      *lat(p), acc(p), ("r0 " if multi else "") + str(rep.meta.get("proxy_steps") or "-"),
                      "[green]yes[/]" if p.get("feasible") else "[red]no[/]", note)
    console.print(t)
    c = rep.counts
    console.print(f"{c.get('total', 0)} trials: {c['complete']} complete, {c['infeasible']} over budget (not "
                  f"trained), {c['pruned']} pruned, {c['failed']} failed"
                  + (f", {c['running']} running" if c.get("running") else "")
                  + (f"; plots: {', '.join(rep.plots)}" if rep.plots else ""))
    if rep.meta.get("latency_device"):
        console.print(f"latencies predicted for {rep.meta['latency_device']} (table: {rep.meta.get('table')})")
    if rep.presets and is_acc:
        console.print(f"'beaten by': {rep.meta.get('beats_rule')} (± is the binomial SE of the validation set)")
