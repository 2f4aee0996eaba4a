"""Reports of a search study: the Pareto front with the ShuffleNetV2 presets for reference, PNG plots, and
the 2-D hypervolume the search benchmark compares samplers by.

Everything is read from the study alone (trial attributes read as :class:`~nas.search.results.TrialRecord`,
study attributes written by :mod:`nas.search.identity` and :mod:`nas.search.presets`), so
``nas report`` works on any storage the study lives in, long after the search ran. The front is Optuna's
constrained Pareto front (``study.best_trials``): feasible, completed trials that no other feasible trial
beats on both accuracy and latency (or MACs).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from nas.search.front import BEAT_Z, accuracy_se, beats, hypervolume_2d, pareto_points, rung_of, rung_result
from nas.search.results import TrialRecord, pareto_records

if TYPE_CHECKING:  # pragma: no cover
    import optuna

__all__ = ["SearchReport", "build_report", "plot_report", "hypervolume_2d", "pareto_points"]


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
             "accuracy", "score", "duration_s", "feasible", "proposal", "rungs", "parent", "candidate")


def _row(rec: TrialRecord, *, val_size: int | None = None) -> dict[str, Any]:
    """A trial as a JSON row: its figures, ``accuracy_se`` (stored, else binomial from ``val_size``) and
    ``fidelity`` (``rung``, ``steps``, ``eval_images``: what the accuracy was measured with)."""
    ua = rec.user_attrs()
    row: dict[str, Any] = {"trial": rec.number, "state": rec.state}
    row.update({k: ua[k] for k in _ROW_KEYS if k in ua})
    if rec.values is not None:
        row["values"] = list(rec.values)
    n = rec.eval_images or val_size
    row["accuracy_se"] = accuracy_se(rec.accuracy, se=rec.accuracy_se, n=n)
    row["fidelity"] = {"rung": rung_of(rec), "steps": rec.rung_steps or rec.total_steps, "eval_images": n}
    return row


def _count(records: Sequence[TrialRecord]) -> dict[str, int]:
    """Trials by outcome; an infeasible trial is COMPLETE in Optuna but counted apart (never trained)."""
    counts = {s: 0 for s in ("complete", "infeasible", "pruned", "failed", "running", "waiting")}
    by_state = {"PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running"}
    for r in records:
        if r.state == "COMPLETE":
            counts["infeasible" if r.feasible is False else "complete"] += 1
        else:
            counts[by_state.get(r.state, "waiting")] += 1
    counts["total"] = len(records)
    return counts


def _presets(stored: dict[str, Any], front: list[TrialRecord], *, by_accuracy: bool, objective: str,
             val_size: int | None) -> list[dict[str, Any]]:
    """The study's scored presets, each with ``beaten_by``: front trials no costlier whose accuracy beats the
    preset's beyond both standard errors (:func:`nas.search.front.beats`), compared at the preset's fidelity
    (rung 0: a front trial promoted to longer training is judged by its rung-0 result). Zero-cost scores
    carry no uncertainty: there a trial beats a preset when its score is at least as high."""
    presets = []
    for name, p in stored.items():
        row = dict(p)
        row.setdefault("name", name)
        acc = row.get("accuracy") if by_accuracy else row.get("score")
        cost = row.get("latency_ms") if objective == "latency" else row.get("mflops")
        se = accuracy_se(acc, se=row.get("accuracy_se"), n=row.get("eval_images") or val_size) if by_accuracy else None
        if by_accuracy:
            row["accuracy_se"] = se
        beaten = []
        for r in front if acc is not None and cost is not None else []:
            if r.values[1] > cost:  # type: ignore[index]
                continue
            if not by_accuracy:
                if r.values[0] >= acc:  # type: ignore[index]
                    beaten.append(r.number)
                continue
            at0 = rung_result(r, 0) or {}
            a0 = at0.get("accuracy")
            se0 = accuracy_se(a0, se=at0.get("accuracy_se"), n=r.eval_images or val_size)
            if a0 is not None and beats(float(a0), float(acc), se_a=se0, se_b=se):
                beaten.append(r.number)
        row["beaten_by"] = beaten
        presets.append(row)
    return presets


def build_report(study: "optuna.Study", *, storage: str = "") -> SearchReport:
    """Summarise ``study`` (written by :func:`nas.search.run_search`).

    Args:
        study: the study (:func:`nas.search.open_study`).
        storage: its URL, recorded in the report.

    Returns:
        A :class:`SearchReport`: the front sorted by cost (latency or MACs, cheapest first); for each preset
        its figures, proxy accuracy (when trained), ``feasible`` and ``beaten_by`` (front trials at least as
        accurate and no costlier).
    """
    ua = study.user_attrs
    objective = ua.get("objective", "latency")
    metric_names = list(ua.get("metric_names") or ["accuracy", "latency_ms" if objective == "latency" else "mflops"])
    records = [TrialRecord.from_trial(t) for t in study.get_trials(deepcopy=False)]
    val_size = ((ua.get("proxy") or {}).get("settings") or {}).get("val_size")
    rows = [_row(r, val_size=val_size) for r in records if r.state == "COMPLETE"]
    front_recs = pareto_records(study)
    front = [_row(r, val_size=val_size) for r in front_recs]
    for r in front:
        r.pop("state", None)
    presets = _presets(ua.get("presets") or {}, front_recs, by_accuracy=metric_names[0] == "accuracy",
                       objective=objective, val_size=val_size)
    table = ua.get("table") or {}
    meta = {"space": ua.get("space_name"), "space_hash": ua.get("space_hash"), "seed": ua.get("seed"),
            "proxy": ua.get("proxy"), "data": ua.get("data"), "sampler": ua.get("sampler"),
            "fidelity": ua.get("fidelity") or {"mode": "single"}, "beats_rule": BEATS_RULE,
            "latency_device": _device_of(table), "proxy_steps": _steps_of(ua.get("proxy") or {}),
            "table": table.get("describe"), "table_path": table.get("path"), "nas_version": ua.get("nas_version")}
    return SearchReport(study=study.study_name, storage=storage, objective=objective, metric_names=metric_names,
                        budgets=list(ua.get("budgets") or []), counts=_count(records), pareto=front,
                        presets=presets, trials=rows, meta=meta)


BEATS_RULE = f"gap > {BEAT_Z:g} * sqrt(se_trial^2 + se_preset^2), at rung 0, no costlier"


def _steps_of(proxy: dict[str, Any]) -> str | None:
    """The rung-0 proxy budget as text (``40`` steps, or ``0.5ep`` when set in epochs)."""
    s = proxy.get("settings") or {}
    if s.get("steps") is not None:
        return str(s["steps"])
    return f"{s['epochs']:g}ep" if s.get("epochs") is not None else None


def _device_of(table: dict[str, Any]) -> str | None:
    """Which device the study's latencies are for: the table's identity (device and CPU model)."""
    ident = table.get("identity") or {}
    if not ident:
        return None
    return " ".join(str(ident[k]) for k in ("device", "cpu_model") if ident.get(k))


# (value key, axis label, file name, budget metric, budget unit in that key's unit)
_PLOTS = (("latency_ms", "predicted latency (ms)", "accuracy_vs_latency.png", "latency_ms", 1.0),
          ("mflops", "MFLOPs (mult-adds, millions)", "accuracy_vs_macs.png", "macs", 1e6))
LOG_X_RATIO = 8  # presets far beyond the budget (x range over 8x): log x axis keeps the front readable
PLOT_SIZE_IN, PLOT_DPI = (7.5, 5), 110
OVER_BUDGET_Y = 0.02  # over-budget trials sit 2 % above the bottom edge (axes fraction): visible, not in the way
SAME_X_REL = 0.02  # untrained presets within 2 % on x share one dotted line and one label (2.0x and 2.0x-se)


def plot_report(rep: SearchReport, out_dir: "str | Path") -> list[Path]:
    """Write ``accuracy_vs_latency.png`` (when latency is known) and ``accuracy_vs_macs.png`` to ``out_dir``:
    every completed trial, over-budget ones crossed, the front highlighted, presets as labelled stars and
    the budget as a dashed line.

    Args:
        rep: from :func:`build_report`; its ``plots`` is set to the paths written.
        out_dir: the folder (created).

    Returns:
        The paths written.

    Raises:
        OSError: the folder cannot be written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nas._io import atomic_write_bytes

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    yname = "accuracy" if rep.metric_names[0] == "accuracy" else "score"
    written = []
    for key, label, fname, metric, unit in _PLOTS:
        pts = [r for r in rep.trials if r.get(key) is not None and r.get(yname) is not None]
        if not pts:
            continue
        fig, ax = plt.subplots(figsize=PLOT_SIZE_IN, dpi=PLOT_DPI)
        _draw(ax, rep, pts, key=key, yname=yname)
        _draw_budgets(ax, rep, metric=metric, unit=unit)
        ax.set_xlabel(label)
        ax.set_ylabel(f"proxy {yname}" + (" (%)" if yname == "accuracy" else ""))
        ax.set_title(f"{rep.study}: {len(pts)} completed trials", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        written.append(atomic_write_bytes(out / fname, buf.getvalue()))  # a reader never sees half a PNG
    rep.plots = [str(p) for p in written]
    return written


def _draw(ax: Any, rep: SearchReport, pts: list[dict[str, Any]], *, key: str, yname: str) -> None:
    """Trials, over-budget ones, the front and the presets on one axis."""
    scale = 100.0 if yname == "accuracy" else 1.0
    ok = [r for r in pts if r.get("feasible") is not False]
    bad = [r for r in pts if r.get("feasible") is False]
    ax.scatter([r[key] for r in ok], [r[yname] * scale for r in ok], s=14, c="#9aa5b1", label="trials")
    if bad:  # never trained: no accuracy; marked along the bottom edge so they do not stretch the y axis
        ax.scatter([r[key] for r in bad], [OVER_BUDGET_Y] * len(bad), s=14, marker="x", c="#e03131",
                   transform=ax.get_xaxis_transform(), label="over budget (not trained)")
    front = sorted((r for r in rep.pareto if r.get(key) is not None), key=lambda r: r[key])
    if front:
        ax.step([r[key] for r in front], [r[yname] * scale for r in front], where="post", c="#d9480f", lw=1.2)
        ax.scatter([r[key] for r in front], [r[yname] * scale for r in front], s=30, c="#d9480f", zorder=3,
                   label="Pareto front")
    _draw_presets(ax, rep, key=key, yname=yname, scale=scale)
    xs = [r[key] for r in ok] + [p[key] for p in rep.presets if p.get(key) is not None]
    if xs and min(xs) > 0 and max(xs) / min(xs) > LOG_X_RATIO:
        from matplotlib.ticker import ScalarFormatter

        ax.set_xscale("log")
        for axis in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):
            fmt = ScalarFormatter()
            fmt.set_scientific(False)
            axis(fmt)


def _draw_presets(ax: Any, rep: SearchReport, *, key: str, yname: str, scale: float) -> None:
    """Trained presets as labelled stars; untrained ones as a dotted line at their x (one label per line)."""
    labelled = False
    untrained: dict[float, list[str]] = {}  # x -> names: 2.0x and 2.0x-se sit on one line, one label
    for p in rep.presets:
        if p.get(key) is None:
            continue
        short = p["name"].removeprefix("shufflenetv2-")
        if p.get(yname) is None:  # no proxy score (not trained): mark where it sits on the x axis only
            x = next((u for u in untrained if abs(u - p[key]) <= SAME_X_REL * u), p[key])
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


def _draw_budgets(ax: Any, rep: SearchReport, *, metric: str, unit: float) -> None:
    from nas.units import parse_budget

    for text in rep.budgets:
        try:
            b = parse_budget(text)
        except Exception:  # a budget text written by another version: just no line
            continue
        if b.metric == metric:
            ax.axvline(b.limit / unit, ls="--", c="#2b8a3e", lw=1, label=f"budget {b.text}")
