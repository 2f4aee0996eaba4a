"""Reports of a real tiny search study (tests/search_study.py): the front and its order, counts, presets,
the JSON object, PNG plots, `nas report` exit codes; hypervolume arithmetic."""

from __future__ import annotations

import json

import pytest
from search_study import STUDY, tiny_study

from nas.cli import main
from nas.cli.search import print_report
from nas.errors import StorageError
from nas.search import (TrialRecord, build_report, hypervolume_2d, open_study, pareto_points, pareto_records,
                        plot_report)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_study(tmp_path_factory)


def test_front_counts_and_presets(tiny):
    study = open_study(study=STUDY, storage=tiny.url)
    rep = build_report(study, storage=tiny.url)
    records = [TrialRecord.from_trial(t) for t in study.get_trials()]
    front = pareto_records(study)
    assert front and [r["trial"] for r in rep.pareto] == [r.number for r in front]
    costs = [r["values"][1] for r in rep.pareto]
    assert costs == sorted(costs)  # cheapest first
    for r in rep.pareto:  # nothing feasible dominates a front trial
        rec = next(x for x in records if x.number == r["trial"])
        assert rec.feasible and rec.infeasible_reason() is None
        assert not any(o.feasible and o.state == "COMPLETE" and o.values[0] > r["values"][0]
                       and o.values[1] < r["values"][1] for o in records)
    by_state = {s: sum(1 for r in records if r.state == s) for s in ("COMPLETE", "PRUNED", "FAIL")}
    infeasible = sum(1 for r in records if r.state == "COMPLETE" and r.feasible is False)
    assert infeasible == 1  # the enqueued largest network
    assert rep.counts == {"complete": by_state["COMPLETE"] - infeasible, "infeasible": infeasible,
                          "pruned": by_state["PRUNED"], "failed": by_state["FAIL"], "running": 0, "waiting": 0,
                          "total": len(records)}
    presets = {p["name"]: p for p in rep.presets}
    assert "shufflenetv2-1.0x" in presets and all(p["accuracy"] is not None for p in rep.presets)
    for p in rep.presets:  # no preset's blocks are in the tiny table: no latency, so nothing can beat it
        assert p["latency_ms"] is None and p["beaten_by"] == [] and p["feasible"] is False
    doc = rep.to_dict()
    json.dumps(doc)
    for row in doc["pareto"]:
        assert {"trial", "config", "mflops", "params", "latency_ms", "accuracy"} <= set(row)
        assert isinstance(row["config"], dict) and row["config"]["stages"]
        # every figure carries its uncertainty (binomial, 128 validation images) and its fidelity
        p = row["accuracy"]
        assert row["accuracy_se"] == pytest.approx((p * (1 - p) / 128) ** 0.5)
        assert row["fidelity"] == {"rung": 0, "steps": 4, "eval_images": 128}
    assert doc["fidelity"] == {"mode": "single"} and "sqrt" in doc["beats_rule"] and doc["latency_device"]


def test_beaten_by_needs_a_gap_beyond_the_combined_uncertainty():
    from nas.search.front import beats

    se = (0.7 * 0.3 / 1000) ** 0.5  # 1.45 points at 70 % on 1,000 images
    assert not beats(0.71, 0.70, se_a=se, se_b=se)  # one point: inside the noise (issue 12's "beaten by trial 6")
    assert beats(0.75, 0.70, se_a=se, se_b=se)  # five points > 2 * sqrt(2) * 1.45 = 4.1
    assert beats(0.701, 0.70, se_a=None, se_b=None)  # no uncertainty known (zero-cost scores): plain comparison


def test_plots_and_table(tiny, tmp_path):
    from rich.console import Console

    rep = build_report(open_study(study=STUDY, storage=tiny.url), storage=tiny.url)
    paths = plot_report(rep, tmp_path / "plots")
    assert sorted(p.name for p in paths) == ["accuracy_vs_latency.png", "accuracy_vs_macs.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000
    assert not list((tmp_path / "plots").glob(".*.tmp")), "atomic writes leave no temp files"
    console = Console(record=True, width=120)
    print_report(rep, console)
    text = console.export_text()
    assert "shufflenetv2-1.0x" in text and "Pareto front" in text


def test_nas_report_cli(tiny, tmp_path, capsys):
    front = [r.number for r in pareto_records(open_study(study=STUDY, storage=tiny.url))]
    assert main(["report", "--study", STUDY, "--storage", tiny.url, "--out", str(tmp_path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["trial"] for r in doc["pareto"]] == front and len(doc["plots"]) == 2
    # default storage under --out
    assert main(["report", "--study", STUDY, "--out", str(tiny.out_dir), "--no-plots"]) == 0
    assert main(["report", "--study", "missing", "--storage", tiny.url, "--no-plots"]) == 2
    assert main(["report", "--study", STUDY, "--storage", "postgresql://nobody@127.0.0.1:1/x"]) == 2


def test_missing_study_and_storage_name_their_field(tiny, tmp_path):
    with pytest.raises(StorageError) as e:
        open_study(study="missing", storage=tiny.url)
    assert e.value.field == "study"
    with pytest.raises(StorageError) as e:
        open_study(study=STUDY, storage=None, out_dir=tmp_path / "none")
    assert e.value.field == "storage"


def test_hypervolume_and_pareto_points():
    pts = [(0.8, 4.0), (0.78, 6.0), (0.86, 7.0), (0.9, 12.0)]
    assert pareto_points(pts) == [(0.8, 4.0), (0.86, 7.0), (0.9, 12.0)]
    # rectangles to cost 20: 0.8 x (7-4) + 0.86 x (12-7) + 0.9 x (20-12)
    assert hypervolume_2d(pts, reference_cost=20.0) == pytest.approx(0.8 * 3 + 0.86 * 5 + 0.9 * 8)
    assert hypervolume_2d(pts, reference_cost=20.0, reference_accuracy=0.85) == pytest.approx(0.01 * 5 + 0.05 * 8)
    assert hypervolume_2d([], reference_cost=1.0) == 0.0
    assert hypervolume_2d([(0.5, 3.0)], reference_cost=2.0) == 0.0  # beyond the reference: nothing


def test_infeasible_trials_never_reach_the_front(tiny):
    import warnings

    study = open_study(study=STUDY, storage=tiny.url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert all(t.user_attrs["feasible"] for t in study.best_trials)


def test_front_picks_cover_the_trade_off_not_just_its_slow_end():
    """The k front networks that add the most hypervolume: a fast network at nearly the best accuracy is picked
    before a third slow one, dominated and repeated networks never, and the picks' area is the best pair's."""
    from itertools import combinations

    from nas.search.front import front_picks

    pts = {0: (0.80, 4.0), 1: (0.795, 3.9), 2: (0.79, 3.8), 3: (0.77, 1.5), 4: (0.60, 1.45), 5: (0.70, 3.0)}
    recs = [TrialRecord(number=n, state="COMPLETE", values=v, config_string=f"net{n}", feasible=True)
            for n, v in pts.items()]
    recs.append(TrialRecord(number=9, state="COMPLETE", values=(0.80, 4.0), config_string="net0", feasible=True))
    recs.append(TrialRecord(number=8, state="COMPLETE", values=(0.99, 0.5), config_string="over", feasible=False))
    picks = front_picks(recs, 2, reference_accuracy=0.1, reference_cost=6.0)
    assert [r.number for r in picks] == [3, 0]  # the fast accurate one first, then the most accurate
    best = max(hypervolume_2d([pts[a], pts[b]], reference_cost=6.0, reference_accuracy=0.1)
               for a, b in combinations([0, 1, 2, 3, 4], 2))
    assert hypervolume_2d([r.values for r in picks], reference_cost=6.0, reference_accuracy=0.1) == pytest.approx(best)
    assert 5 not in [r.number for r in front_picks(recs, 6, reference_accuracy=0.1, reference_cost=6.0)]
    assert len(front_picks(recs, 9, reference_accuracy=0.1, reference_cost=6.0)) == 5  # net0 once, 'over' never
