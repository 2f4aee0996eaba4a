"""Budget-aware proposals: repair toward the nearest feasible network, and Pareto-aware regularized evolution.

Two pieces the search's samplers share:

* :func:`repair` turns an over-budget proposal into the nearest network that fits, by stepping single knobs
  down their ordered choices (one index at a time, the step that removes the most excess first). A sampler
  whose proposal was repaired learns from the network that was actually trained, which keeps its model on
  the choices it made rather than on unrelated random draws.
* :func:`evolve` is regularized evolution (Real et al., 2019) made multi-objective: the parent is the winner of
  a small tournament among the most recent trials, ranked by Pareto front (accuracy up, cost down) then
  accuracy; the child changes one or two knobs by one step. The cheap MAC and latency predictions screen
  several children before any training: only feasible networks that were not tried before are proposed.

Everything random comes from the ``rng`` argument; every loop is bounded.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

__all__ = ["Candidate", "repair", "mutate", "evolve", "pareto_ranks", "REPAIR_MAX_STEPS"]

Params = dict[str, Any]
Excess = Callable[[Params], float]
"""``excess(params) -> float``: how far a full assignment is over its budgets (<= 0: it fits)."""

REPAIR_MAX_STEPS = 200  # more single-index steps than any space here has knob positions: the loop is bounded
TOURNAMENT = 5  # parents compete in groups of 5 (regularized evolution used 25 of 100; smaller: short studies)
POPULATION = 40  # only the 40 most recent trials can be parents ("aging": old lucky draws retire)
CHILDREN = 8  # children screened by the cheap predictions per proposal


@dataclass(frozen=True)
class Candidate:
    """A finished trial as evolution sees it: its knob values and its two objectives."""

    params: Mapping[str, Any]
    accuracy: float
    cost: float  # latency ms or MFLOPs: lower is better


def _ordered(choices: Sequence[Any]) -> list[Any]:
    return sorted(choices, key=lambda v: (float(v) if isinstance(v, (bool, int, float)) else str(v)))


def repair(params: Params, knobs: Mapping[str, Sequence[Any]], *, excess: Excess,
           rng: random.Random) -> Params | None:
    """The nearest assignment to ``params`` with ``excess <= 0``, or None if none is reachable.

    Nearest in single-index steps down each knob's ordered choices: each step lowers the knob whose one-step
    decrease removes the most excess (ties broken by ``rng``), so a proposal slightly over budget loses one
    width step, not its whole shape.

    Args:
        params: a full assignment of every knob.
        knobs: each knob's choices (order does not matter; they are sorted).
        excess: the budgets' excess of a full assignment (<= 0 fits).
        rng: breaks ties.

    Returns:
        The repaired assignment (``params`` itself, copied, when it already fits), or None when even every
        knob at its smallest choice is over budget.
    """
    cur = dict(params)
    e = excess(cur)
    order = {k: _ordered(v) for k, v in knobs.items()}
    for _ in range(REPAIR_MAX_STEPS):
        if e <= 0:
            return cur
        best: list[tuple[float, str]] = []
        for k, choices in order.items():
            i = choices.index(cur[k])
            if i == 0:
                continue
            e2 = excess({**cur, k: choices[i - 1]})
            best.append((e2, k))
        if not best:
            return None
        low = min(b[0] for b in best)  # even if no step helps (a non-monotone knob), indices only go down: bounded
        k = rng.choice(sorted(k for v, k in best if v == low))
        cur[k] = order[k][order[k].index(cur[k]) - 1]
        e = low
    return cur if e <= 0 else None


def mutate(params: Params, knobs: Mapping[str, Sequence[Any]], *, rng: random.Random) -> Params:
    """``params`` with one knob (two, one time in three) moved one step along its ordered choices."""
    child = dict(params)
    names = sorted(k for k, v in knobs.items() if len(v) > 1)
    if not names:
        return child
    for k in rng.sample(names, min(len(names), 2 if rng.random() < 1 / 3 else 1)):
        choices = _ordered(knobs[k])
        i = choices.index(child[k])
        steps = [j for j in (i - 1, i + 1) if 0 <= j < len(choices)]
        child[k] = choices[rng.choice(steps)]
    return child


def pareto_ranks(cands: Sequence[Candidate]) -> list[int]:
    """Non-dominated sorting rank of each candidate (0 = on the front): accuracy up, cost down."""
    n = len(cands)
    dominated_by = [0] * n
    dominates: list[list[int]] = [[] for _ in range(n)]
    for i, a in enumerate(cands):
        for j, b in enumerate(cands):
            if i != j and a.accuracy >= b.accuracy and a.cost <= b.cost and (a.accuracy > b.accuracy
                                                                             or a.cost < b.cost):
                dominates[i].append(j)
                dominated_by[j] += 1
    ranks = [0] * n
    layer = [i for i in range(n) if dominated_by[i] == 0]
    r = 0
    while layer:
        nxt = []
        for i in layer:
            ranks[i] = r
            for j in dominates[i]:
                dominated_by[j] -= 1
                if dominated_by[j] == 0:
                    nxt.append(j)
        layer, r = nxt, r + 1
    return ranks


def _key(params: Mapping[str, Any]) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


def evolve(history: Sequence[Candidate], knobs: Mapping[str, Sequence[Any]], *, excess: Excess,
           rng: random.Random, tried: Sequence[Mapping[str, Any]] = ()) -> Params | None:
    """One child of the current population, feasible and new; None when there is no population yet.

    Args:
        history: finished, feasible trials in the order they finished.
        knobs: the space's knobs and choices.
        excess: the budgets' excess of a full assignment (<= 0 fits).
        rng: the proposal's random source.
        tried: assignments already proposed (running or finished), never proposed again.

    Returns:
        A full assignment of every knob, or None when ``history`` is empty or no new feasible child was found
        (the caller then draws at random).
    """
    if not history:
        return None
    pop = list(history[-POPULATION:])
    ranks = pareto_ranks(pop)
    seen = {_key(p) for p in tried} | {_key(c.params) for c in history}
    for _ in range(4):  # four tournaments at most: a parent whose neighbourhood is exhausted yields to another
        group = rng.sample(range(len(pop)), min(TOURNAMENT, len(pop)))
        parent = min(group, key=lambda i: (ranks[i], -pop[i].accuracy, pop[i].cost))
        kids = []
        for _ in range(CHILDREN):
            child = repair(mutate(dict(pop[parent].params), knobs, rng=rng), knobs, excess=excess, rng=rng)
            if child is not None and _key(child) not in seen:
                kids.append(child)
                seen.add(_key(child))
        if kids:
            return rng.choice(kids)
    return None
