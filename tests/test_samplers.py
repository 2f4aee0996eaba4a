"""The samplers: every proposal repaired onto the budgets (never a random replacement), each sampler
selectable and seeded (same seed, same proposals), on the default space's real MAC counts and on a real
tiny search."""

from __future__ import annotations

import warnings

import optuna
import pytest

from nas.macs import count_macs
from nas.search import SearchSettings, open_study, search
from nas.search.budgets import Scorer
from nas.search.sampler import make_sampler, suggest_config
from nas.search.settings import SAMPLERS
from nas.space import load_space
from nas.latency.table import load_table
from nas.units import parse_budget
from search_study import BUDGET, TINY_PROXY, tiny_env

OPTUNA_KINDS = {"sampled", "repaired"}
EVOLUTION_KINDS = {"initial", "efficient", "random-init", "evolution"}


def _ask_tell(sampler_name: str, *, seed: int, n: int) -> tuple[list[dict], list[int], list[str]]:
    """``n`` proposals of a sampler on the default space under 150 MFLOPs, told a cheap stand-in accuracy
    (depth): no training, real MAC counts."""
    space = load_space()
    budget = parse_budget("150MFLOPs")
    settings = SearchSettings(budgets=(budget,), n_trials=n, objective="flops", sampler=sampler_name, seed=seed)
    sc = Scorer(space, None, [budget], "flops")
    sampler = make_sampler(settings, space, sc, sampler_seed=seed)
    params, macs, kinds = [], [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
        for _ in range(n):
            trial = study.ask()
            cfg = suggest_config(trial, space, seed=seed)
            m = count_macs(cfg).macs
            trial.set_constraint(budget.text, budget.slack(m))
            trial.set_user_attr("feasible", m <= budget.limit)
            params.append(dict(trial.params))
            macs.append(m)
            kinds.append(sampler.note(trial.number))
            study.tell(trial, [len(cfg.blocks()) / 30.0, m / 1e6])
    return params, macs, kinds


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_proposal_fits_a_tight_budget_by_repair_not_replacement(name):
    """150 MFLOPs in a space of 20..2218 MFLOPs: unrepaired, most draws break it."""
    n = 12 if name == "gp" else 24  # GP: past its 10 random start-up trials, two fitted proposals (~5-10 s each)
    params, macs, kinds = _ask_tell(name, seed=1, n=n)
    assert max(macs) <= 150e6
    assert set(kinds) <= (EVOLUTION_KINDS if name == "evolution" else OPTUNA_KINDS), kinds
    if name != "evolution":
        assert "repaired" in kinds  # the budget is tight: some proposals needed repair
    assert sorted(macs)[len(macs) // 2] > 50e6  # not collapsed onto the smallest network (20.5 M)
    if name == "evolution":
        assert kinds[0] == "initial" and "evolution" in kinds  # presets first, then evolution after 10


@pytest.mark.parametrize("name", ["tpe", "nsga2", "random", "evolution"])
def test_same_seed_same_proposals(name):
    a, _, _ = _ask_tell(name, seed=3, n=14)
    b, _, _ = _ask_tell(name, seed=3, n=14)
    c, _, _ = _ask_tell(name, seed=4, n=14)
    assert a == b and a != c


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return tiny_env(tmp_path_factory)


@pytest.mark.parametrize("name", ["tpe", "evolution"])
def test_real_search_under_a_tight_budget_is_feasible_and_repeatable(env, tmp_path, name):
    """Two real tiny searches with one seed propose the same networks, every one within the budget."""
    space = load_space(env / "small.toml")
    table = load_table(env / "small.json", space=space)
    budget = "0.12MFLOPs"  # the space spans 0.107 .. 0.150 M MACs: about half its networks break it
    settings = SearchSettings(budgets=(parse_budget(budget),), n_trials=12, sampler=name, proxy_settings=TINY_PROXY,
                              presets="none", seed=5, fidelity="single")
    seqs = []
    for run in ("a", "b"):
        search(space, settings=settings, study="s", table=table, out_dir=tmp_path / run, threads=1)
        trials = open_study(study="s", storage=None, out_dir=tmp_path / run).get_trials()
        assert len(trials) == 12
        for t in trials:
            assert t.user_attrs["feasible"] is True and t.constraints[budget] <= 0
            assert t.user_attrs["proposal"] in (EVOLUTION_KINDS if name == "evolution" else OPTUNA_KINDS)
        seqs.append([t.params for t in trials])
    assert seqs[0] == seqs[1]
