"""nas.search.evolution: repair never leaves a network over budget, evolution proposes only feasible new
networks near the parent, and the same seed gives the same proposals. Real MAC counts of the default space."""

from __future__ import annotations

import random

import pytest

from nas.macs import count_macs
from nas.search.evolution import Candidate, evolve, mutate, pareto_ranks, repair
from nas.space import load_space

LIMIT = 150e6  # 150 MFLOPs


@pytest.fixture(scope="module")
def space():
    return load_space(None)


def _excess(space):
    def excess(params):
        return count_macs(space.sample(None, fixed=params)).macs / LIMIT - 1.0
    return excess


def test_repair_reaches_the_budget_from_any_draw_in_few_steps(space):
    knobs, excess, rng = space.knobs(), _excess(space), random.Random(0)
    over = 0
    for _ in range(40):
        p = space.params_of(space.sample(rng))
        fixed = repair(p, knobs, excess=excess, rng=rng)
        assert fixed is not None and excess(fixed) <= 0
        changed = sum(fixed[k] != p[k] for k in p)
        if excess(p) > 0:
            over += 1
            assert changed >= 1
        else:
            assert fixed == p  # a feasible proposal is left alone
    assert over >= 5  # the draws did exercise the repair


def test_repair_gives_up_on_an_impossible_budget(space):
    knobs = space.knobs()
    p = space.params_of(space.largest())
    assert repair(p, knobs, excess=lambda q: 1.0, rng=random.Random(0)) is None


def test_mutate_moves_one_or_two_knobs_by_one_step(space):
    knobs, rng = space.knobs(), random.Random(1)
    p = space.params_of(space.sample(rng))
    for _ in range(50):
        c = mutate(p, knobs, rng=rng)
        diff = [k for k in p if c[k] != p[k]]
        assert 1 <= len(diff) <= 2
        for k in diff:
            order = sorted(knobs[k], key=float)
            assert abs(order.index(c[k]) - order.index(p[k])) == 1


def test_pareto_ranks():
    c = [Candidate({}, 0.9, 2.0), Candidate({}, 0.8, 1.0), Candidate({}, 0.7, 1.5), Candidate({}, 0.6, 3.0)]
    assert pareto_ranks(c) == [0, 0, 1, 2]


def test_evolve_is_feasible_new_and_seeded(space):
    knobs, excess = space.knobs(), _excess(space)
    rng = random.Random(2)
    hist = []
    while len(hist) < 10:
        p = space.params_of(space.sample(rng))
        if excess(p) <= 0:
            hist.append(Candidate(p, accuracy=rng.random(), cost=excess(p) + 1))
    a = [evolve(hist, knobs, excess=excess, rng=random.Random(7)) for _ in range(2)]
    assert a[0] == a[1] and a[0] is not None  # same seed, same child
    tried = [c.params for c in hist]
    for s in range(20):
        child = evolve(hist, knobs, excess=excess, rng=random.Random(s))
        assert child is not None and excess(child) <= 0 and child not in tried
    assert evolve([], knobs, excess=excess, rng=random.Random(0)) is None


def test_latency_efficient_initial_design_is_feasible_on_the_macs_latency_front_and_seeded(space):
    """The evolution sampler's initial design adds, after the presets, networks from the (MACs up, predicted
    latency down) front of seeded draws, spread over its latency range; a stand-in latency (MACs plus a per-stage
    cost, so the front is not trivial) keeps this test fast; the real table is used by search tests."""
    from nas.search.evolution_sampler import EFFICIENT_INITIAL, EvolutionProposer

    excess = _excess(space)

    def figures(params):
        cfg = space.sample(None, fixed=params)
        macs = count_macs(cfg).macs
        return macs, macs / 1e8 + sum(s.depth * (1.5 if s.se else 1.0) for s in cfg.stages) * 0.05

    a = EvolutionProposer(space, space.knobs(), excess=excess, seed=3, macs_and_latency=figures)
    b = EvolutionProposer(space, space.knobs(), excess=excess, seed=3, macs_and_latency=figures)
    plain = EvolutionProposer(space, space.knobs(), excess=excess, seed=3)
    extra = a.initial[len(plain.initial):]
    assert a.initial == b.initial and len(extra) == EFFICIENT_INITIAL == len(a.efficient)
    assert all(excess(p) <= 0 for p in extra)
    pts = [figures(p) for p in extra]
    assert len({ms for _, ms in pts}) == len(pts)  # spread: no two at the same latency
    for m, ms in pts:  # one front: none of the chosen is both bigger and faster than another
        assert not any(m2 > m and ms2 < ms for m2, ms2 in pts)
    assert EvolutionProposer(space, space.knobs(), excess=excess, seed=3,
                             macs_and_latency=lambda p: (1, None)).initial == plain.initial  # no latency: none
