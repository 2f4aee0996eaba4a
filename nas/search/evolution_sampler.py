"""Regularized evolution as a search sampler (``sampler="evolution"``): a proposer for
:class:`nas.search.sampler.RepairSampler`.

Per trial, deterministic given the search seed, the trial number and the study's trials so far:

1. **Initial design**: the ShuffleNetV2 presets that lie in the space and fit the budgets
   (``space.params_of``), each once, in :data:`nas.arch.PRESETS` order; then, when a latency predictor is given
   (a latency-guided search), :data:`EFFICIENT_INITIAL` *latency-efficient* networks: of
   :data:`EFFICIENT_POOL` seeded uniform draws repaired onto the budgets, the Pareto front of (MACs up,
   predicted latency down), the fastest at each of evenly spaced MAC levels (the front's slow tail, a few
   MACs more for much more latency, is left out). They cost no training to find (the table and
   the MAC count are microseconds), and they start the population where the paper says speed is decided:
   the most multiply-adds per predicted millisecond, rather than the fewest MACs;
2. **random feasible draws** (uniform, then repaired onto the budgets) until :data:`MIN_POPULATION` feasible
   trials have finished;
3. then :func:`nas.search.evolution.evolve` over the finished feasible trials (Pareto-aware tournament, one or
   two knob steps, screened by the cheap MAC/latency predictions, never a network already tried).

Only rung-0 results feed the population under multi-fidelity search: accuracies of one fidelity compare.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from nas.search.evolution import Candidate, evolve, repair

if TYPE_CHECKING:  # pragma: no cover
    import optuna

    from nas.space import SearchSpace

__all__ = ["EvolutionProposer", "MIN_POPULATION", "EFFICIENT_INITIAL", "EFFICIENT_POOL"]

MIN_POPULATION = 10  # finished feasible trials before evolution starts: TPE's default startup, for equal footing
EFFICIENT_INITIAL = 6  # latency-efficient networks in the initial design (with ~2 presets: under MIN_POPULATION)
EFFICIENT_POOL = 400  # draws they are chosen from (~1 s with the default space's table)


def _key(params: Mapping[str, Any]) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


class EvolutionProposer:
    """Proposes full assignments by the three phases of the module docstring.

    Args:
        space: the search space (its presets are the initial design).
        knobs: its knobs and choices.
        excess: the budgets' excess of a full assignment (<= 0 fits).
        seed: the search seed.
    """

    def __init__(self, space: "SearchSpace", knobs: Mapping[str, Sequence[Any]], *,
                 excess: Callable[[dict[str, Any]], float], seed: int,
                 macs_and_latency: Callable[[dict[str, Any]], tuple[float, float | None]] | None = None) -> None:
        self.knobs, self.excess, self.seed = dict(knobs), excess, seed
        self.initial = self._initial_design(space)
        self.efficient: set[tuple] = set()
        if macs_and_latency is not None:
            seen = {_key(q) for q in self.initial}
            more = [p for p in self._efficient(macs_and_latency) if _key(p) not in seen]
            self.efficient = {_key(p) for p in more}
            self.initial += more

    def _initial_design(self, space: "SearchSpace") -> list[dict[str, Any]]:
        from nas.arch import PRESETS

        out = []
        for p in PRESETS.values():
            cfg = p.with_resolution(space.resolution[0])
            if space.contains(cfg):
                params = space.params_of(cfg)
                if self.excess(params) <= 0 and _key(params) not in {_key(q) for q in out}:
                    out.append(params)
        return out

    def _efficient(self, macs_and_latency: Callable[[dict[str, Any]], tuple[float, float | None]]
                   ) -> list[dict[str, Any]]:
        """:data:`EFFICIENT_INITIAL` networks from the (MACs up, latency down) front of seeded feasible draws: the
        fastest with at least ``i / k`` of the front's MAC range, ``i = 0 .. k-1``; none without a latency
        prediction."""
        rng = random.Random(f"{self.seed}:efficient")
        pool: dict[tuple, tuple[float, float, dict[str, Any]]] = {}
        for _ in range(EFFICIENT_POOL):
            draw = {k: rng.choice(list(v)) for k, v in self.knobs.items()}
            params = repair(draw, self.knobs, excess=self.excess, rng=rng)
            if params is None:
                continue
            macs, ms = macs_and_latency(params)
            if ms is None:
                return []
            pool[_key(params)] = (float(macs), float(ms), params)
        pts = sorted(pool.values(), key=lambda x: (x[1], -x[0]))
        front, best = [], -1.0
        for macs, ms, params in pts:  # fastest first: on the front when it has more MACs than every faster one
            if macs > best:
                front.append((ms, macs, params))
                best = macs
        if len(front) <= EFFICIENT_INITIAL:
            return [p for _, _, p in front]
        lo, hi = front[0][1], front[-1][1]
        out: list[dict[str, Any]] = []
        for i in range(EFFICIENT_INITIAL):  # the fastest with at least 0, 1/k, ..., (k-1)/k of the MAC range
            target = lo + (hi - lo) * i / EFFICIENT_INITIAL
            ms, macs, params = next(f for f in front if f[1] >= target)
            if _key(params) not in {_key(q) for q in out}:
                out.append(params)
        return out

    def propose(self, study: "optuna.Study", trial: "optuna.trial.FrozenTrial") -> tuple[dict[str, Any], str]:
        """Args: the study and the new trial. Returns: ``(params, kind)``, kind one of ``initial`` (a preset),
        ``efficient`` (the latency-efficient initial design), ``random-init``, ``evolution``."""
        from optuna.trial import TrialState

        rng = random.Random(f"{self.seed}:{trial.number}:evolution")
        trials = [t for t in study.get_trials(deepcopy=False) if t.number != trial.number]
        tried = [dict(t.params) for t in trials if t.params]
        seen = {_key(p) for p in tried}
        for params in self.initial:
            if _key(params) not in seen:
                return dict(params), ("efficient" if _key(params) in self.efficient else "initial")
        history = [Candidate(params=dict(t.params), accuracy=t.values[0], cost=t.values[1])
                   for t in sorted(trials, key=lambda t: t.number)
                   if t.state == TrialState.COMPLETE and t.values is not None and t.user_attrs.get("feasible")
                   and int(t.user_attrs.get("rung") or 0) == 0]
        if len(history) >= MIN_POPULATION:
            child = evolve(history, self.knobs, excess=self.excess, rng=rng, tried=tried)
            if child is not None:
                return child, "evolution"
        return self._random(rng, seen), "random-init"

    def _random(self, rng: random.Random, seen: set) -> dict[str, Any]:
        """A uniform draw repaired onto the budgets; a few redraws avoid a network already tried."""
        params: dict[str, Any] = {}
        for _ in range(8):  # 8 redraws: a repeat after that is allowed (tiny spaces run out of new networks)
            draw = {k: rng.choice(list(v)) for k, v in self.knobs.items()}
            params = repair(draw, self.knobs, excess=self.excess, rng=rng) or draw
            if _key(params) not in seen:
                break
        return params
