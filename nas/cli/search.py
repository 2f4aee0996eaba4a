"""CLI: ``nas search`` (run, resume or join a search) and ``nas report`` (an existing study)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from nas.errors import UsageError

__all__ = ["add_parsers", "QUICK_TRIALS", "QUICK_STEPS"]

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
    s.add_argument("--sampler", choices=["tpe", "nsga2", "random"], default="tpe",
                   help="Optuna sampler (default tpe, Optuna's multi-objective default)")
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
    from nas.search.run import SearchSettings
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
                          prune=not args.no_prune, presets=presets)


def _load_table(args: argparse.Namespace, space: Any, settings: Any) -> Any:
    from nas.latency.table import default_table_path, load_table

    if args.table:
        return load_table(args.table, space=space)  # another space's table: TableMismatchError (exit 2)
    needs = settings.objective == "latency" or any(b.metric == "latency_ms" for b in settings.budgets)
    if args.space is None and (needs or default_table_path().is_file()):
        return load_table(None, space=space)  # the shipped table (a missing one is a one-line TableError)
    return None  # a custom space without --table: MAC/param budgets with --objective flops only


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)


class _LiveView:
    """Progress with ETA and the best trial so far, on stderr (stdout stays clean for --json)."""

    def __init__(self, *, title: str, cost_unit: str, is_acc: bool) -> None:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        from nas.cli import err_console

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                                 console=err_console(), transient=False)
        self.task = None
        self.title, self.cost_unit, self.is_acc = title, cost_unit, is_acc

    def __enter__(self) -> "_LiveView":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, st: Any) -> None:
        if st.best_accuracy is None:
            best = "best: -"
        else:
            a = f"{st.best_accuracy * 100:.1f}%" if self.is_acc else f"{st.best_accuracy:.1f}"
            best = f"best {a} @ {st.best_cost:.2f} {self.cost_unit}"
        extra = f" | {st.message}" if st.message else ""
        desc = (f"{self.title} | {best} | front {st.front} | pruned {st.pruned} failed {st.failed}"
                f"{' running ' + str(st.running) if st.running else ''}{extra}")
        if self.task is None:
            self.task = self.progress.add_task(desc, total=st.total, completed=st.done)
        self.progress.update(self.task, description=desc, completed=min(st.done, st.total))


def cmd_search(args: argparse.Namespace) -> int:
    from nas.search.report import build_report, plot_report, print_report
    from nas.search.run import open_study, search, study_name_for
    from nas.space import load_space

    if args.quick and (args.space or args.table):
        raise UsageError("--quick runs on the shipped space and table; drop --space/--table (or drop --quick)")
    space = load_space(args.space)
    settings = _settings(args, space)
    table = _load_table(args, space, settings)
    name = args.study or study_name_for(space, settings, quick=args.quick)
    out_dir = Path(args.out) if args.out else Path("runs") / name
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out {out_dir}: cannot create the folder ({e.strerror})") from None
    view = _LiveView(title=f"search {name}", cost_unit="ms" if settings.objective == "latency" else "MFLOPs",
                     is_acc=settings.proxy == "train")
    with view:
        result = search(space, settings=settings, study=name, table=table, storage=args.storage, out_dir=out_dir,
                        threads=args.threads, progress=view)
    study = open_study(study=name, storage=result.storage)
    rep = build_report(study, storage=result.storage)
    plot_report(rep, out_dir)
    doc = rep.to_dict()
    doc["elapsed_s"] = round(result.elapsed_s, 1)
    _write_json(out_dir / "report.json", doc)
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
    from nas.search.report import build_report, plot_report, print_report
    from nas.search.run import default_storage, open_study

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
