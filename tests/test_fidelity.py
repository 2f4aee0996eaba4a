"""Multi-fidelity search on the tiny real space: rung promotion (successive halving), every rung recorded,
the front at each candidate's highest rung, and kill -9 + resume with two workers (no promotion twice, no rung
lost). Real proxy training on the bundled data (a few steps per rung)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nas.cli import main
from nas.errors import UsageError
from nas.search import SearchSettings, TrialRecord, open_study, pareto_records, search
from nas.search.fidelity import next_promotion, pareto_rank_order, rung_factors, rung_settings
from nas.search.front import leaves
from nas.space import load_space
from nas.latency.table import load_table
from nas.units import parse_budget
from search_study import BUDGET, TINY_PROXY, tiny_env

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return tiny_env(tmp_path_factory)


def _records(study) -> list[TrialRecord]:
    return [TrialRecord.from_trial(t) for t in study.get_trials(deepcopy=False)]


def _check_ladder(recs: list[TrialRecord], *, n: int, eta: int = 3, rungs: int = 3) -> None:
    """n rung-0 candidates; each promotion has its parent's params, one rung up, 4x its steps, its rung history
    extending the parent's; no candidate promoted twice to one rung; nothing left to promote."""
    by = {r.number: r for r in recs}
    assert sum(1 for r in recs if (r.rung or 0) == 0) == n
    made = set()
    for r in recs:
        if not r.rung:
            continue
        p = by[r.parent]
        assert r.rung == (p.rung or 0) + 1 and r.candidate == (p.candidate if p.candidate is not None else p.number)
        assert r.config == p.config and r.proposal == "promotion"
        if r.state == "COMPLETE":
            assert r.rung_steps == 4 * p.rung_steps and r.history[-1][0] == r.rung_steps
            assert r.rungs[:-1] == p.rungs and r.rungs[-1]["rung"] == r.rung and r.rungs[-1]["trial"] == r.number
            assert set(r.rungs[-1]) == {"rung", "trial", "steps", "accuracy", "accuracy_se", "seconds"}
            assert (r.parent, r.rung) not in made, "promoted twice"
            made.add((r.parent, r.rung))
    assert made, "something was promoted"
    assert next_promotion(recs, eta=eta, rungs=rungs) is None


def _rec(number: int, accuracy: float, cost: float, **kw) -> TrialRecord:
    return TrialRecord(number=number, state="COMPLETE", values=(accuracy, cost), accuracy=accuracy,
                       accuracy_se=0.012, feasible=True, **kw)


def test_promotion_ranks_by_pareto_layer_so_the_fast_end_is_promoted_too():
    # Three slow accurate networks and three fast ones; the front is {0 (most accurate), 3 (fastest)}. With six
    # finished and eta 3, two are promoted: ranked by accuracy alone they would be 0 and 1 (1 is within one SE
    # of 0, so "near the front" lets it through); ranked by Pareto layer, 0 and then the fast front member 3.
    recs = [_rec(0, 0.80, 3.0), _rec(1, 0.79, 3.1), _rec(2, 0.78, 3.2),
            _rec(3, 0.60, 1.0), _rec(4, 0.55, 1.2), _rec(5, 0.50, 2.0)]
    assert [r.number for r in pareto_rank_order(recs)] == [0, 3, 1, 4, 2, 5]
    first = next_promotion(recs, eta=3, rungs=3)
    assert first is not None and (first[0].number, first[1]) == (0, 1)
    made = [TrialRecord(number=6, state="RUNNING", rung=1, parent=0, candidate=0)]
    second = next_promotion(recs + made, eta=3, rungs=3)
    assert second is not None and (second[0].number, second[1]) == (3, 1)
    made.append(TrialRecord(number=7, state="WAITING", rung=1, parent=3, candidate=3))
    assert next_promotion(recs + made, eta=3, rungs=3) is None  # k = 6 // 3 = 2 promotions, both made


def test_default_is_multi_fidelity_on_two_rungs_and_single_for_the_zero_cost_proxy():
    # the default chosen on ground truth (benchmarks/bench_search_guidance.py, session 9)
    s = SearchSettings(budgets=(parse_budget(BUDGET),), n_trials=3)
    assert (s.fidelity, s.rungs, s.eta, s.sampler) == ("multi", 2, 3, "evolution")
    assert SearchSettings(budgets=(parse_budget(BUDGET),), n_trials=3, proxy="zero-cost").fidelity == "single"


def test_rung_ladder_follows_the_proxy_rungs():
    assert rung_factors(3) == [1.0, 4.0, 16.0]
    assert rung_settings(TINY_PROXY, 2, rungs=3).steps == 64
    with pytest.raises(UsageError) as e:
        SearchSettings(budgets=(parse_budget(BUDGET),), n_trials=3, fidelity="multi", proxy="zero-cost")
    assert e.value.field == "fidelity"
    with pytest.raises(UsageError) as e:
        SearchSettings(budgets=(parse_budget(BUDGET),), n_trials=3, fidelity="multi", rungs=7)
    assert e.value.field == "rungs"


def test_promotion_records_every_rung_and_the_front_takes_the_highest(env, tmp_path):
    space = load_space(env / "small.toml")
    table = load_table(env / "small.json", space=space)
    # The rung counts below follow from TPE's proposals on this small space (the mechanics under test do not
    # depend on the sampler; the evolution default is run multi-fidelity by the kill -9 test below).
    settings = SearchSettings(budgets=(parse_budget("0.14MFLOPs"),), n_trials=9, proxy_settings=TINY_PROXY,
                              presets="none", fidelity="multi", seed=1, sampler="tpe", rungs=3)
    res = search(space, settings=settings, study="m", table=table, out_dir=tmp_path, threads=1)
    study = open_study(study="m", storage=res.storage)
    recs = _records(study)
    _check_ladder(recs, n=9)
    assert max(r.rung or 0 for r in recs) == 2  # 9 candidates, eta 3: promotions reach rung 2
    front = pareto_records(study)
    leaf = {r.number for r in leaves(recs)}
    assert front and all(r.number in leaf for r in front)  # no candidate on the front below its highest rung
    assert [r.number for r in res.pareto] == [r.number for r in front]
    assert study.user_attrs["fidelity"]["mode"] == "multi" and study.user_attrs["fidelity"]["eta"] == 3


def _subprocess_env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def _promotions_done(db: Path) -> int:
    import sqlite3

    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return con.execute("SELECT count(*) FROM trial_user_attributes a JOIN trials t USING (trial_id) "
                               "WHERE a.key = 'rung_steps' AND t.state = 'COMPLETE' AND a.value_json = '16'"
                               ).fetchone()[0]
    except sqlite3.Error:
        return 0


def test_kill_9_then_resume_with_two_workers_loses_no_rung(env, tmp_path):
    out = tmp_path / "k"
    args = ["search", "--space", str(env / "small.toml"), "--table", str(env / "small.json"), "--budget",
            "0.14MFLOPs", "--proxy-steps", "4", "--threads", "1", "--presets", "none", "--out", str(out),
            "--trials", "6", "--study", "k", "--fidelity", "multi"]
    proc = subprocess.Popen([sys.executable, "-m", "nas", *args], cwd=tmp_path, env=_subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180  # a bound on waiting, not an assertion on speed
        while time.monotonic() < deadline and proc.poll() is None and _promotions_done(out / "study.db") < 1:
            time.sleep(0.3)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    study = open_study(study="k", storage=None, out_dir=out)
    before = {r.number: (r.state, r.values, r.rungs) for r in _records(study) if r.state == "COMPLETE"}
    assert any(v[2] and len(v[2]) >= 2 for v in before.values())  # a rung-1 result existed before the kill
    assert main([*args, "--workers", "2"]) == 0  # the same command again, now with two workers sharing the lock
    recs = _records(open_study(study="k", storage=None, out_dir=out))
    after = {r.number: (r.state, r.values, r.rungs) for r in recs}
    for n, v in before.items():
        assert after[n] == v  # every completed rung kept
    _check_ladder(recs, n=6, rungs=2)  # the CLI's default ladder
    assert all(r.state in ("COMPLETE", "FAIL", "PRUNED") for r in recs)
