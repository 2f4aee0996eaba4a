"""Regularized evolution as a search sampler (``sampler="evolution"``): a proposer for
:class:`nas.search.sampler.RepairSampler`.

Per trial, deterministic given the search seed, the trial number and the study's trials so far:

1. **Initial design**: the ShuffleNetV2 presets that lie in the space and fit the budgets
   (``space.params_of``), each once, in :data:`nas.arch.PRESETS` order;
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

__all__ = ["EvolutionProposer", "MIN_POPULATION"]

MIN_POPULATION = 10  # finished feasible trials before evolution starts: TPE's default startup, for equal footing


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
                 excess: Callable[[dict[str, Any]], float], seed: int) -> None:
        self.knobs, self.excess, self.seed = dict(knobs), excess, seed
        self.initial = self._initial_design(space)

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

    def propose(self, study: "optuna.Study", trial: "optuna.trial.FrozenTrial") -> tuple[dict[str, Any], str]:
        """Args: the study and the new trial. Returns: ``(params, kind)``, kind one of ``initial``,
        ``random-init``, ``evolution``."""
        from optuna.trial import TrialState

        rng = random.Random(f"{self.seed}:{trial.number}:evolution")
        trials = [t for t in study.get_trials(deepcopy=False) if t.number != trial.number]
        tried = [dict(t.params) for t in trials if t.params]
        seen = {_key(p) for p in tried}
        for params in self.initial:
            if _key(params) not in seen:
                return dict(params), "initial"
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
