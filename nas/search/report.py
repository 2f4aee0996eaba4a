"""Reports of a search study: the Pareto front with the ShuffleNetV2 presets for reference, PNG plots, and
the 2-D hypervolume the search benchmark compares samplers by.

Everything is read from the study alone (trial and study user attributes written by :mod:`nas.search.run`), so
``nas report`` works on any storage the study lives in, long after the search ran. The front is Optuna's
constrained Pareto front (``study.best_trials``): feasible, completed trials that no other feasible trial
beats on both accuracy and latency (or MACs).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import optuna
    from rich.console import Console

__all__ = ["SearchReport", "build_report", "print_report", "plot_report", "hypervolume_2d", "pareto_points"]


@dataclass
class SearchReport:
    """A study summarised. ``pareto`` and ``presets`` are lists of JSON-able dicts (see :func:`build_report`)."""

    study: str
    storage: str
    objective: str
    metric_names: list[str]
    budgets: list[str]
    counts: dict[str, int]
    pareto: list[dict[str, Any]]
    presets: list[dict[str, Any]]
    trials: list[dict[str, Any]]  # every finished feasible/infeasible trial with values (for the plots)
    meta: dict[str, Any] = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)

    def to_dict(self, *, with_trials: bool = False) -> dict[str, Any]:
        """The ``--json`` object: ``pareto`` holds each front trial's ``trial``, ``config``, ``mflops``,
        ``params``, ``latency_ms`` and ``accuracy`` (plus the rest of its figures)."""
        d = {"study": self.study, "storage": self.storage, "objective": self.objective, "budgets": self.budgets,
             "metric_names": self.metric_names, "trials": self.counts, "pareto": self.pareto,
             "presets": self.presets, "plots": self.plots, **self.meta}
        if with_trials:
            d["all_trials"] = self.trials
        return d


_ROW_KEYS = ("config", "config_string", "mflops", "macs", "params", "latency_ms", "latency_uncertainty_ms",
             "accuracy", "score", "duration_s", "feasible")


def _row(t: "optuna.trial.FrozenTrial") -> dict[str, Any]:
    ua = t.user_attrs
    row: dict[str, Any] = {"trial": t.number, "state": t.state.name}
    row.update({k: ua.get(k) for k in _ROW_KEYS if k in ua})
    if t.values is not None:
        row["values"] = list(t.values)
    return row


def build_report(study: "optuna.Study", *, storage: str = "") -> SearchReport:
    """Summarise ``study`` (written by :func:`nas.search.run.search`).

    Returns:
        A :class:`SearchReport`: the front sorted by cost (latency or MACs, cheapest first); for each preset
        its figures, proxy accuracy (when trained), ``feasible`` and ``beaten_by`` (front trials at least as
        accurate and no costlier).
    """
    from optuna.trial import TrialState

    ua = study.user_attrs
    objective = ua.get("objective", "latency")
    metric_names = list(ua.get("metric_names") or ["accuracy", "latency_ms" if objective == "latency" else "mflops"])
    trials = study.get_trials(deepcopy=False)
    counts = {s: 0 for s in ("complete", "infeasible", "pruned", "failed", "running", "waiting")}
    rows = []
    for t in trials:
        if t.state == TrialState.COMPLETE and t.user_attrs.get("feasible") is False:
            counts["infeasible"] += 1
        elif t.state == TrialState.COMPLETE:
            counts["complete"] += 1
        elif t.state == TrialState.PRUNED:
            counts["pruned"] += 1
        elif t.state == TrialState.FAIL:
            counts["failed"] += 1
        elif t.state == TrialState.RUNNING:
            counts["running"] += 1
        else:
            counts["waiting"] += 1
        if t.state == TrialState.COMPLETE:
            rows.append(_row(t))
    counts["total"] = len(trials)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        front = [_row(t) for t in study.best_trials if t.user_attrs.get("feasible") is not False]
    front.sort(key=lambda r: (r["values"][1], -r["values"][0]))
    for r in front:
        r.pop("state", None)
    presets = []
    for name, p in (ua.get("presets") or {}).items():
        row = dict(p)
        row.setdefault("name", name)
        acc = row.get("accuracy") if metric_names[0] == "accuracy" else row.get("score")
        cost = row.get("latency_ms") if objective == "latency" else row.get("mflops")
        row["beaten_by"] = ([r["trial"] for r in front if r["values"][0] >= acc and r["values"][1] <= cost]
                            if acc is not None and cost is not None else [])
        presets.append(row)
    table = ua.get("table") or {}
    meta = {"space": ua.get("space_name"), "space_hash": ua.get("space_hash"), "seed": ua.get("seed"),
            "proxy": ua.get("proxy"), "data": ua.get("data"), "sampler": ua.get("sampler"),
            "table": table.get("describe"), "table_path": table.get("path"), "nas_version": ua.get("nas_version")}
    return SearchReport(study=study.study_name, storage=storage, objective=objective, metric_names=metric_names,
                        budgets=list(ua.get("budgets") or []), counts=counts, pareto=front, presets=presets,
                        trials=rows, meta=meta)


def _fmt(v: Any, spec: str, none: str = "-") -> str:
    return none if v is None else format(v, spec)


def print_report(rep: SearchReport, console: "Console") -> None:
    """Print the front and the presets as one rich table, then a one-line summary."""
    from rich.table import Table

    acc_name = rep.metric_names[0]
    is_acc = acc_name == "accuracy"
    t = Table(title=f"Pareto front of study {rep.study!r} under {', '.join(rep.budgets)} "
                    f"(objective: {rep.objective})", title_justify="left")
    has_lat = any(r.get("latency_ms") is not None for r in [*rep.pareto, *rep.presets])
    cols = ["#", "trial", "MFLOPs", "Mparams", *(["ms"] if has_lat else []), "acc %" if is_acc else "score", "fits"]
    for col in cols:
        t.add_column(col, justify="right", no_wrap=True)
    t.add_column("architecture", overflow="fold")

    def lat(r: dict[str, Any]) -> str:
        if r.get("latency_ms") is None:
            return "-"
        u = r.get("latency_uncertainty_ms")
        return f"{r['latency_ms']:.3g}" + (f"±{u:.2g}" if u is not None else "")

    def acc(r: dict[str, Any]) -> str:
        v = r.get("accuracy") if is_acc else r.get("score")
        return _fmt(v * 100 if (v is not None and is_acc) else v, ".1f" if is_acc else ".2f")

    for i, r in enumerate(rep.pareto, 1):
        t.add_row(str(i), str(r["trial"]), _fmt(r.get("mflops"), ".1f"), _fmt((r.get("params") or 0) / 1e6, ".2f"),
                  *([lat(r)] if has_lat else []), acc(r), "[green]yes[/]", r.get("config_string") or "")
    if rep.presets:
        t.add_section()
        for p in rep.presets:
            beaten = p.get("beaten_by") or []
            note = p["name"] + (f" (beaten by trial {', '.join(map(str, beaten[:3]))})" if beaten else "")
            t.add_row("", "preset", _fmt(p.get("mflops"), ".1f"), _fmt((p.get("params") or 0) / 1e6, ".2f"),
                      *([lat(p)] if has_lat else []), acc(p), "[green]yes[/]" if p.get("feasible") else "[red]no[/]",
                      note)
    console.print(t)
    c = rep.counts
    console.print(f"{c.get('total', 0)} trials: {c['complete']} complete, {c['infeasible']} over budget (not "
                  f"trained), {c['pruned']} pruned, {c['failed']} failed"
                  + (f", {c['running']} running" if c.get("running") else "")
                  + (f"; plots: {', '.join(rep.plots)}" if rep.plots else ""))


def pareto_points(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The non-dominated ``(accuracy, cost)`` points (higher accuracy, lower cost), sorted by cost."""
    out: list[tuple[float, float]] = []
    for a, c in sorted(points, key=lambda p: (p[1], -p[0])):
        if not out or a > out[-1][0]:
            out.append((a, c))
    return out


def hypervolume_2d(points: Sequence[tuple[float, float]], *, reference_cost: float,
                   reference_accuracy: float = 0.0) -> float:
    """Area dominated by ``(accuracy, cost)`` points up to the reference (accuracy above, cost below it).

    Units are accuracy x cost (e.g. fraction x ms); compare values only under one reference point.
    """
    front = [(a, c) for a, c in pareto_points(points) if a > reference_accuracy and c < reference_cost]
    hv = 0.0
    for i, (a, c) in enumerate(front):
        nxt = front[i + 1][1] if i + 1 < len(front) else reference_cost
        hv += (nxt - c) * (a - reference_accuracy)
    return hv


def plot_report(rep: SearchReport, out_dir: "str | Path") -> list[Path]:
    """Write ``accuracy_vs_latency.png`` (when latency is known) and ``accuracy_vs_macs.png`` to ``out_dir``:
    every completed trial, over-budget ones crossed, the front highlighted, presets as labelled stars and
    the budget as a dashed line. Returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    is_acc = rep.metric_names[0] == "accuracy"
    yname = "accuracy" if is_acc else "score"
    scale = 100.0 if is_acc else 1.0
    written = []
    from nas.units import parse_budget

    budgets = []
    for text in rep.budgets:
        try:
            budgets.append(parse_budget(text))
        except Exception:  # a budget text written by another version: just no line
            pass
    for key, label, fname, metric, unit in (("latency_ms", "predicted latency (ms)", "accuracy_vs_latency.png",
                                             "latency_ms", 1.0),
                                            ("mflops", "MFLOPs (mult-adds, millions)", "accuracy_vs_macs.png",
                                             "macs", 1e6)):
        pts = [r for r in rep.trials if r.get(key) is not None and r.get(yname) is not None]
        if not pts:
            continue
        fig, ax = plt.subplots(figsize=(7.5, 5), dpi=110)
        ok = [r for r in pts if r.get("feasible") is not False]
        bad = [r for r in pts if r.get("feasible") is False]
        ax.scatter([r[key] for r in ok], [r[yname] * scale for r in ok], s=14, c="#9aa5b1", label="trials")
        if bad:  # never trained: no accuracy; marked along the bottom edge so they do not stretch the y axis
            ax.scatter([r[key] for r in bad], [0.02] * len(bad), s=14, marker="x", c="#e03131",
                       transform=ax.get_xaxis_transform(), label="over budget (not trained)")
        front = sorted((r for r in rep.pareto if r.get(key) is not None), key=lambda r: r[key])
        if front:
            ax.step([r[key] for r in front], [r[yname] * scale for r in front], where="post", c="#d9480f", lw=1.2)
            ax.scatter([r[key] for r in front], [r[yname] * scale for r in front], s=30, c="#d9480f", zorder=3,
                       label="Pareto front")
        labelled = False
        untrained: dict[float, list[str]] = {}  # x -> names: 2.0x and 2.0x-se sit on one line, one label
        for p in rep.presets:
            if p.get(key) is None:
                continue
            short = p["name"].removeprefix("shufflenetv2-")
            if p.get(yname) is None:  # no proxy score (not trained): mark where it sits on the x axis only
                x = next((u for u in untrained if abs(u - p[key]) <= 0.02 * u), p[key])
                untrained.setdefault(x, []).append(short)
                continue
            ax.scatter([p[key]], [p[yname] * scale], marker="*", s=140, c="black" if p.get("feasible") else "#777777",
                       zorder=4, label=None if labelled else "ShuffleNetV2 presets")
            labelled = True
            ax.annotate(short, (p[key], p[yname] * scale), textcoords="offset points", xytext=(5, 4), fontsize=8)
        for x, names in untrained.items():
            ax.axvline(x, ls=":", c="#999999", lw=0.8)
            ax.annotate(f"{', '.join(names)} (untrained)", (x, 1.0), xycoords=("data", "axes fraction"), rotation=90,
                        va="top", ha="right", fontsize=7, color="#777777")
        for b in budgets:
            if b.metric == metric:
                ax.axvline(b.limit / unit, ls="--", c="#2b8a3e", lw=1, label=f"budget {b.text}")
        xs = [r[key] for r in ok] + [p[key] for p in rep.presets if p.get(key) is not None]
        if xs and min(xs) > 0 and max(xs) / min(xs) > 8:  # presets far beyond the budget: keep the front readable
            from matplotlib.ticker import ScalarFormatter

            ax.set_xscale("log")
            for axis in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):
                fmt = ScalarFormatter()
                fmt.set_scientific(False)
                axis(fmt)
        ax.set_xlabel(label)
        ax.set_ylabel(f"proxy {yname}" + (" (%)" if is_acc else ""))
        ax.set_title(f"{rep.study}: {len(pts)} completed trials", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        path = out / fname
        tmp = path.with_name(f".{path.name}.tmp.png")
        fig.savefig(tmp)
        plt.close(fig)
        tmp.replace(path)  # atomic: a reader never sees half a PNG
        written.append(path)
    rep.plots = [str(p) for p in written]
    return written
