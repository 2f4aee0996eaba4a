"""Reports from a real SQLite study whose trials carry the attributes `nas search` writes: the front and its
order, presets beaten or not, the JSON object, PNG plots, `nas report` exit codes; hypervolume arithmetic."""

from __future__ import annotations

import json
import warnings

import optuna
import pytest

from nas.arch import PRESETS
from nas.cli import main
from nas.search.report import build_report, hypervolume_2d, pareto_points, plot_report, print_report
from nas.search.run import default_storage, open_study
from nas.space import load_space

BUDGET = "150MFLOPs"


@pytest.fixture()
def study_dir(tmp_path):
    """A study with 6 feasible trials (3 on the front), 1 over budget, 1 pruned, 1 failed, and two presets."""
    space = load_space()
    url = default_storage(study="rep", out_dir=tmp_path)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="rep", storage=url, directions=["maximize", "minimize"])
    study.set_user_attr("objective", "latency")
    study.set_user_attr("budgets", [BUDGET])
    study.set_user_attr("metric_names", ["accuracy", "latency_ms"])
    study.set_user_attr("space_name", space.name)
    # (accuracy, latency ms, MFLOPs): front = trials 0, 2, 4 (each beats the others at its latency)
    points = [(0.80, 4.0, 60.0), (0.78, 6.0, 90.0), (0.86, 7.0, 110.0), (0.84, 9.0, 140.0), (0.90, 12.0, 149.0),
              (0.70, 13.0, 120.0)]
    rng = __import__("random").Random(0)
    for acc, lat, mf in points:
        cfg = space.sample(rng)
        study.add_trial(optuna.trial.create_trial(
            values=[acc, lat], system_attrs={"constraints:" + BUDGET: mf * 1e6 - 150e6},
            user_attrs={"config": cfg.to_dict(), "config_string": cfg.to_string(), "mflops": mf, "macs": int(mf * 1e6),
                        "params": 1_000_000, "latency_ms": lat, "latency_uncertainty_ms": 0.2, "accuracy": acc,
                        "duration_s": 1.0, "feasible": True, "seed": 0}))
    big = space.largest()
    study.add_trial(optuna.trial.create_trial(  # over budget: never trained, accuracy 0, not on the front
        values=[0.0, 40.0], system_attrs={"constraints:" + BUDGET: 2000e6},
        user_attrs={"config": big.to_dict(), "mflops": 2150.0, "latency_ms": 40.0, "accuracy": 0.0, "feasible": False}))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, user_attrs={"pruned": True}))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, user_attrs={"failure": "nan"}))
    p05, p10 = PRESETS["shufflenetv2-0.5x"], PRESETS["shufflenetv2-1.0x"]
    study.set_user_attr("presets", {
        "shufflenetv2-0.5x": {"name": "shufflenetv2-0.5x", "config": p05.to_dict(), "mflops": 41.0, "params": 1366792,
                              "latency_ms": 5.0, "accuracy": 0.75, "feasible": True},
        "shufflenetv2-1.0x": {"name": "shufflenetv2-1.0x", "config": p10.to_dict(), "mflops": 146.0, "params": 2278604,
                              "latency_ms": 11.0, "accuracy": 0.95, "feasible": True},
    })
    return tmp_path, url


def test_front_counts_and_presets(study_dir):
    _, url = study_dir
    rep = build_report(open_study(study="rep", storage=url), storage=url)
    assert [r["trial"] for r in rep.pareto] == [0, 2, 4]  # cheapest first
    assert rep.counts == {"complete": 6, "infeasible": 1, "pruned": 1, "failed": 1, "running": 0, "waiting": 0,
                          "total": 9}
    presets = {p["name"]: p for p in rep.presets}
    assert presets["shufflenetv2-0.5x"]["beaten_by"] == [0]  # 80 % at 4 ms beats 75 % at 5 ms
    assert presets["shufflenetv2-1.0x"]["beaten_by"] == []
    doc = rep.to_dict()
    json.dumps(doc)
    for row in doc["pareto"]:
        assert {"trial", "config", "mflops", "params", "latency_ms", "accuracy"} <= set(row)
        assert isinstance(row["config"], dict) and row["config"]["stages"]


def test_plots_and_table(study_dir, tmp_path):
    from rich.console import Console

    out, url = study_dir
    rep = build_report(open_study(study="rep", storage=url), storage=url)
    paths = plot_report(rep, tmp_path / "plots")
    assert sorted(p.name for p in paths) == ["accuracy_vs_latency.png", "accuracy_vs_macs.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000
    console = Console(record=True, width=120)
    print_report(rep, console)
    text = console.export_text()
    assert "shufflenetv2-1.0x" in text and "Pareto front" in text


def test_nas_report_cli(study_dir, capsys):
    out, url = study_dir
    assert main(["report", "--study", "rep", "--storage", url, "--out", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["trial"] for r in doc["pareto"]] == [0, 2, 4] and len(doc["plots"]) == 2
    assert main(["report", "--study", "rep", "--out", str(out), "--no-plots"]) == 0  # default storage under --out
    assert main(["report", "--study", "missing", "--storage", url, "--no-plots"]) == 2
    assert main(["report", "--study", "rep", "--storage", "postgresql://nobody@127.0.0.1:1/x"]) == 2


def test_hypervolume_and_pareto_points():
    pts = [(0.8, 4.0), (0.78, 6.0), (0.86, 7.0), (0.9, 12.0)]
    assert pareto_points(pts) == [(0.8, 4.0), (0.86, 7.0), (0.9, 12.0)]
    # rectangles to cost 20: 0.8 x (7-4) + 0.86 x (12-7) + 0.9 x (20-12)
    assert hypervolume_2d(pts, reference_cost=20.0) == pytest.approx(0.8 * 3 + 0.86 * 5 + 0.9 * 8)
    assert hypervolume_2d(pts, reference_cost=20.0, reference_accuracy=0.85) == pytest.approx(0.01 * 5 + 0.05 * 8)
    assert hypervolume_2d([], reference_cost=1.0) == 0.0
    assert hypervolume_2d([(0.5, 3.0)], reference_cost=2.0) == 0.0  # beyond the reference: nothing


def test_infeasible_trials_never_reach_the_front(study_dir):
    _, url = study_dir
    study = open_study(study="rep", storage=url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert all(t.user_attrs["feasible"] for t in study.best_trials)
