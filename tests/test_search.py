"""The search on a tiny real space at 32 px with a real latency table (onnxruntime), real proxy training on
the bundled data (a few steps), real Optuna storages (SQLite files, PostgreSQL when reachable) and real
subprocesses (kill -9 and resume, several workers)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas.cli import main
from nas.errors import BudgetError, StorageError, UsageError
from nas.macs import count_macs
from nas.arch import ArchConfig
from nas.search import (SearchSettings, TrialRecord, check_budgets, default_storage, open_study, pareto_records,
                        search)
from nas.search.results import TRIAL_ATTRS
from nas.space import load_space
from nas.latency.table import load_table
from nas.units import parse_budget
from search_study import BUDGET, TINY_PROXY, tiny_env

REPO = Path(__file__).resolve().parents[1]
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"

# Attributes every finished trial carries (a subset of the one schema, nas.search.results.TRIAL_ATTRS).
ALWAYS = {"config", "macs", "mflops", "params", "latency_ms", "latency_uncertainty_ms", "accuracy", "duration_s",
          "feasible", "seed", "worker"}
STUDY_ATTRS = {"space_hash", "space", "table", "budgets", "objective", "seed", "nas_version", "proxy", "data"}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return tiny_env(tmp_path_factory)


def _cli(env: Path, out: Path, *extra: str) -> list[str]:
    return ["search", "--space", str(env / "small.toml"), "--table", str(env / "small.json"), "--budget", BUDGET,
            "--proxy-steps", "4", "--threads", "1", "--presets", "none", "--out", str(out), "--fidelity", "single",
            *extra]


def _finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]


def _settings(n: int, **kw) -> SearchSettings:
    # single fidelity: these tests count trials (multi-fidelity's promotions come on top: tests/test_fidelity.py)
    return SearchSettings(budgets=(parse_budget(BUDGET),), n_trials=n, proxy_settings=TINY_PROXY,
                          presets="none", **{"fidelity": "single", **kw})


# ----------------------------------------------------------------------------------------- budgets
def test_feasible_trials_fit_and_over_budget_ones_are_never_trained(env, tmp_path):
    space = load_space(env / "small.toml")
    table = load_table(env / "small.json", space=space)
    out = tmp_path / "run"
    search(space, settings=_settings(2), study="b", table=table, out_dir=out, threads=1)
    study = open_study(study="b", storage=None, out_dir=out)
    largest = space.params_of(space.largest())  # 0.150 M MACs: over the budget
    study.enqueue_trial(largest)
    study.enqueue_trial({**largest, "head_channels": 32})
    res = search(space, settings=_settings(8), study="b", table=table, out_dir=out, threads=1)
    assert res.n_trials == 8
    trials = _finished(study)
    assert len(trials) == len(study.trials) == 8
    assert set(STUDY_ATTRS) <= set(study.user_attrs) and study.user_attrs["budgets"] == [BUDGET]
    over = []
    for t in trials:
        assert set(t.user_attrs) <= set(TRIAL_ATTRS), "every stored name is in the TrialRecord schema"
        rec = TrialRecord.from_trial(t)
        assert ALWAYS <= rec.stored, rec.stored
        assert rec.user_attrs() == t.user_attrs  # the record gives back exactly what is stored
        macs = count_macs(ArchConfig.from_dict(rec.config)).macs
        assert macs == rec.macs
        if rec.feasible:
            assert macs <= 0.13e6 and t.constraints[BUDGET] <= 0 and rec.infeasible_reason() is None
            assert rec.trained is True
        else:
            over.append(t)
            assert macs > 0.13e6 and t.constraints[BUDGET] > 0
            assert rec.trained is False and "history" not in rec.stored
            assert rec.accuracy == 0.0 and rec.values[0] == 0.0 and "budget" in rec.infeasible
    # Exactly the two enqueued networks broke the budget: the guarded sampler proposed none.
    assert sorted(t.number for t in over) == [2, 3]
    assert all(t.user_attrs["feasible"] for t in study.best_trials)
    assert [r.number for r in res.pareto] == [r.number for r in pareto_records(study)]
    assert res.pareto and all(r.feasible for r in res.pareto)


def test_impossible_budget_is_an_error_up_front():
    space = load_space()
    with pytest.raises(BudgetError) as e:
        check_budgets(space, [parse_budget("10MFLOPs")], None, objective="flops")
    assert e.value.field == "budget"
    with pytest.raises(UsageError) as e:
        check_budgets(space, [parse_budget("5ms")], None, objective="flops")
    assert e.value.field == "table"


@pytest.mark.parametrize("change, field", [
    ({"budgets": ()}, "budget"), ({"n_trials": 0}, "trials"), ({"objective": "speed"}, "objective"),
    ({"sampler": "annealing"}, "sampler"), ({"proxy": "oracle"}, "proxy"), ({"workers": 0}, "workers"),
    ({"timeout_s": -1.0}, "timeout"), ({"presets": "some"}, "presets"),
])
def test_bad_settings_name_their_field(change, field):
    kw = {"budgets": (parse_budget(BUDGET),), "n_trials": 1, **change}
    with pytest.raises(UsageError) as e:
        SearchSettings(**kw)
    assert e.value.field == field


# ----------------------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("extra", [
    ["--budget", "150"],
    ["--budget", "-5ms"],
    ["--budget", "150MB"],
    ["--budget", "0.05MFLOPs"],  # below the smallest network of the space (0.107 M)
    ["--sampler", "annealing"],
    ["--table", "OTHER"],
    ["--storage", "postgresql://nobody@127.0.0.1:1/x"],
    ["--trials", "0"],
    ["--workers", "0"],
], ids=["no-unit", "negative", "unknown-unit", "below-smallest", "sampler", "other-space-table", "storage",
        "trials", "workers"])
def test_bad_inputs_are_one_line_exit_2(env, tmp_path, capsys, extra):
    extra = [str(env / "other.json") if x == "OTHER" else x for x in extra]
    args = _cli(env, tmp_path / "bad", *extra)
    if extra[0] == "--budget":  # replace the valid budget
        i = args.index("--budget")
        del args[i:i + 2]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    assert not (tmp_path / "bad" / "study.db").exists()  # refused before any study (so any training) exists


def test_a_data_error_in_the_workers_is_one_line(env, tmp_path, capfd):
    """Issue 14: both workers fail to read the data; the user sees one error line, no worker traceback."""
    args = _cli(env, tmp_path / "d", "--trials", "2", "--workers", "2", "--proxy", "zero-cost", "--data",
                f"cifar10:{tmp_path / 'nonexistent'}")
    assert main(args) == 2
    err = capfd.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("nas: error: --data"), err[-2000:]


def test_resume_with_other_settings_is_refused_and_missing_study_is_a_storage_error(env, tmp_path):
    out = tmp_path / "r"
    assert main(_cli(env, out, "--trials", "2", "--study", "r")) == 0
    args = _cli(env, out, "--trials", "3", "--study", "r")
    args[args.index(BUDGET)] = "0.14MFLOPs"
    assert main(args) == 2
    space = load_space(env / "small.toml")
    with pytest.raises(UsageError) as e:  # the same refusal through the library names its field
        search(space, settings=SearchSettings(budgets=(parse_budget("0.14MFLOPs"),), n_trials=3),
               study="r", table=load_table(env / "small.json", space=space), out_dir=out)
    assert e.value.field == "study"
    with pytest.raises(StorageError) as e:
        open_study(study="nope", storage=None, out_dir=out)
    assert e.value.field == "study"
    with pytest.raises(StorageError) as e:
        open_study(study="r", storage=None, out_dir=tmp_path / "missing")
    assert e.value.field == "storage"
    assert default_storage(study="r", out_dir=out) == f"sqlite:///{(out / 'study.db').absolute()}"


# ----------------------------------------------------------------------------------------- failures, pruning
def test_diverging_candidates_are_recorded_failed_and_the_search_goes_on(env, tmp_path):
    space = load_space(env / "small.toml")
    table = load_table(env / "small.json", space=space)
    settings = SearchSettings(budgets=(parse_budget(BUDGET),), n_trials=3, presets="none",
                              proxy_settings=TINY_PROXY.replace(lr=1e12, warmup_fraction=0.0))
    res = search(space, settings=settings, study="nan", table=table, out_dir=tmp_path, threads=1)
    study = open_study(study="nan", storage=None, out_dir=tmp_path)
    assert res.counts["failed"] == 3 and len(study.trials) == 3
    for t in study.trials:
        assert t.state == TrialState.FAIL and "loss became" in t.user_attrs["failure"]


def test_dominated_candidates_are_pruned_at_a_report_point(env, tmp_path):
    space = load_space(env / "small.toml")
    table = load_table(env / "small.json", space=space)
    search(space, settings=_settings(1), study="p", table=table, out_dir=tmp_path, threads=1)
    study = open_study(study="p", storage=None, out_dir=tmp_path)
    # Four completed, faster-than-anything trials that reached 99 % at both report points (steps 2 and 4).
    cfg = space.smallest()
    for _ in range(4):
        study.add_trial(optuna.trial.create_trial(
            values=[0.99, 0.0], params={}, distributions={},
            user_attrs={"feasible": True, "history": [[2, 0.99], [4, 0.99]], "config": cfg.to_dict()},
            system_attrs={"constraints:" + BUDGET: -1.0}))
    search(space, settings=_settings(7), study="p", table=table, out_dir=tmp_path, threads=1)
    new = [t for t in study.get_trials(deepcopy=False) if t.number >= 5]
    assert len(new) == 2
    for t in new:
        assert t.state == TrialState.PRUNED and t.user_attrs["pruned"] is True and t.user_attrs["steps"] == 2
        assert len(t.user_attrs["history"]) == 1
    assert all(t.state != TrialState.PRUNED for t in study.best_trials)


def test_zero_cost_proxy_and_flops_objective_without_a_table(env, tmp_path, capsys):
    args = ["search", "--space", str(env / "small.toml"), "--budget", BUDGET, "--objective", "flops", "--proxy",
            "zero-cost", "--trials", "3", "--threads", "1", "--presets", "none", "--out", str(tmp_path), "--json"]
    assert main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["metric_names"] == ["score", "mflops"] and doc["pareto"]
    for row in doc["pareto"]:
        assert row["score"] is not None and row["latency_ms"] is None and row["mflops"] <= 0.13
    # --best-under on a zero-cost study (accuracy None) ranks by the score instead of crashing
    from nas.export.candidates import candidates_from_study

    study = open_study(study=doc["study"], storage=doc["storage"])
    best = candidates_from_study(study, best_under=BUDGET)[0]
    assert best.provenance["trial"] == max(doc["pareto"], key=lambda r: r["score"])["trial"]


# ----------------------------------------------------------------------------------------- kill, workers
def _subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _complete_trials(db: Path) -> int:
    """COMPLETE trials in the SQLite file, read-only: opening it with Optuna would create its tables, racing
    the search that is creating them."""
    import sqlite3

    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return con.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
    except sqlite3.Error:  # no tables yet
        return 0


def test_kill_9_then_the_same_command_keeps_every_completed_trial_and_reaches_the_total(env, tmp_path):
    out = tmp_path / "k"
    args = _cli(env, out, "--trials", "8", "--study", "k")
    proc = subprocess.Popen([sys.executable, "-m", "nas", *args], cwd=tmp_path, env=_subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    db = out / "study.db"
    before: dict[int, tuple] = {}
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.3)
            if _complete_trials(db) >= 3:
                break
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    study = open_study(study="k", storage=None, out_dir=out)
    before = {t.number: (t.state, t.values, t.user_attrs.get("config")) for t in study.get_trials()
              if t.state.is_finished()}
    assert len(before) >= 3 and len(before) < 8
    assert main(args) == 0  # the same command again
    study = open_study(study="k", storage=None, out_dir=out)
    trials = study.get_trials()
    assert len(trials) == 8 and sorted(t.number for t in trials) == list(range(8))
    assert all(t.state.is_finished() for t in trials)
    after = {t.number: (t.state, t.values, t.user_attrs.get("config")) for t in trials}
    for n, v in before.items():
        assert after[n] == v
    # the trial in flight when the worker was killed is failed, with the reason, and counts toward the total
    for t in trials:
        if t.state == TrialState.FAIL:
            assert "died" in t.user_attrs["failure"]


def _check_exact(study: optuna.Study, n: int) -> None:
    trials = study.get_trials()
    numbers = [t.number for t in trials]
    assert len(trials) == n and sorted(numbers) == list(range(n)) and len(set(numbers)) == n
    assert all(t.state.is_finished() for t in trials)
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both workers ran trials


# The worker tests use the zero-cost proxy: what they check is the claim protocol, and each spawned worker
# then starts seconds sooner (no optimizer, so no torch._dynamo import).
def test_two_workers_on_the_default_storage_finish_with_exactly_n_trials(env, tmp_path):
    out = tmp_path / "w"
    assert main(_cli(env, out, "--trials", "6", "--study", "w", "--workers", "2", "--proxy", "zero-cost")) == 0
    _check_exact(open_study(study="w", storage=None, out_dir=out), 6)


def _pg_reachable() -> bool:
    try:
        import sqlalchemy as sa

        eng = sa.create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg2://"),
                               connect_args={"connect_timeout": 2})
        with eng.connect():
            return True
    except Exception:
        return False


@pytest.mark.postgres
def test_two_workers_on_postgresql_finish_with_exactly_n_trials(env, tmp_path):
    if not _pg_reachable():
        if os.environ.get("NAS_REQUIRE_POSTGRES"):  # set by .ci/run: CI has PostgreSQL, so this must run there
            pytest.fail(f"PostgreSQL not reachable at {PG_URL} (NAS_REQUIRE_POSTGRES is set)")
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}")
    name = f"nas-test-{uuid.uuid4().hex[:10]}"
    try:
        assert main(_cli(env, tmp_path, "--trials", "6", "--study", name, "--workers", "2",
                         "--proxy", "zero-cost", "--storage", PG_URL)) == 0
        _check_exact(open_study(study=name, storage=PG_URL), 6)
    finally:
        try:
            optuna.delete_study(study_name=name, storage=PG_URL.replace("postgresql://", "postgresql+psycopg2://"))
        except Exception:
            pass
