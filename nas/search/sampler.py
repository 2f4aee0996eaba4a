"""The budget-guard sampler: no trial is wasted on a budget.

The base Optuna sampler is wrapped (:class:`BudgetGuardSampler`): each knob it proposes is kept only if the
network with every still-unset knob at its smallest choice fits every budget (the analytic MAC counter,
~0.1 ms, and the table's prediction, a few lookups); else the base sampler is asked again (at most
``GUARD_TRIES`` times), then a fitting choice is drawn with the trial's own seeded RNG. The smallest choice of
the current knob reproduces the previous, already checked network, so a fitting choice always exists and the
last check is exact: every sampled network fits, on any budget at or above ``space.smallest()`` (below it is a
:class:`~nas.errors.BudgetError` up front, :func:`nas.search.budgets.check_budgets`). Knobs are suggested in a
per-trial shuffled order (:func:`suggest_config`) so that no knob is always first to take the budget.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, Callable, Sequence

from nas.arch import ArchConfig

if TYPE_CHECKING:  # pragma: no cover
    import optuna

    from nas.space import SearchSpace

__all__ = ["BudgetGuardSampler", "base_sampler", "suggest_config", "GUARD_TRIES"]

GUARD_TRIES = 8  # base-sampler proposals per knob before a fitting choice is drawn directly


class BudgetGuardSampler:
    """Wraps an Optuna sampler so that every network it proposes fits the budgets (see the module docstring).

    Built lazily as a subclass of ``optuna.samplers.BaseSampler`` (optuna is imported only when used);
    create it with :meth:`create`.
    """

    @staticmethod
    def create(base: "optuna.samplers.BaseSampler", fits: Callable[[dict[str, Any]], bool],
               knob_names: Sequence[str], *, seed: int) -> "optuna.samplers.BaseSampler":
        """Args: ``base`` the sampler, ``fits(params)`` the budget check of a partial assignment,
        ``knob_names`` the guarded parameters in canonical order, ``seed`` of the fallback draws."""
        return _guard_class()(base, fits, tuple(knob_names), seed)


def _guard_class() -> type:
    import optuna
    from optuna.distributions import CategoricalDistribution

    class _Guard(optuna.samplers.BaseSampler):
        def __init__(self, base, fits, names, seed):
            self.base, self.fits, self.names, self.seed = base, fits, names, seed
            self._kept: dict[int, dict[str, Any]] = {}  # relative params kept per trial number

        def _rng(self, trial) -> random.Random:
            return random.Random(f"{self.seed}:{trial.number}:guard")

        def infer_relative_search_space(self, study, trial):
            return self.base.infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            if not search_space:
                return {}
            assigned = dict(trial.params)
            rel: dict[str, Any] = {}
            for _ in range(max(1, GUARD_TRIES // 2)):  # relative sampling is the costly kind: fewer tries
                rel = self.base.sample_relative(study, trial, search_space)
                if self.fits({**assigned, **{k: v for k, v in rel.items() if k in self.names}}):
                    self._kept[trial.number] = rel
                    return rel
            kept: dict[str, Any] = {k: v for k, v in rel.items() if k not in self.names}
            for name in self.names:  # keep what still fits, in canonical order; the rest is sampled below
                if name in rel and self.fits({**assigned, **kept, name: rel[name]}):
                    kept[name] = rel[name]
            self._kept[trial.number] = kept
            return kept

        def sample_independent(self, study, trial, param_name, param_distribution):
            if param_name not in self.names or not isinstance(param_distribution, CategoricalDistribution):
                return self.base.sample_independent(study, trial, param_name, param_distribution)
            assigned = {**self._kept.get(trial.number, {}), **trial.params}
            assigned = {k: v for k, v in assigned.items() if k in self.names}
            for _ in range(GUARD_TRIES):
                v = self.base.sample_independent(study, trial, param_name, param_distribution)
                if self.fits({**assigned, param_name: v}):
                    return v
            ok = [c for c in param_distribution.choices if self.fits({**assigned, param_name: c})]
            if not ok:  # only when fixed (enqueued) params already break a budget: the trial is infeasible
                return min(param_distribution.choices)
            return self._rng(trial).choice(ok)

        def before_trial(self, study, trial):
            self.base.before_trial(study, trial)

        def after_trial(self, study, trial, state, values):
            self._kept.pop(trial.number, None)
            self.base.after_trial(study, trial, state, values)

        def reseed_rng(self):
            self.base.reseed_rng()

    return _Guard


def base_sampler(name: str, *, seed: int, n_trials: int) -> "optuna.samplers.BaseSampler":
    import optuna

    if name == "tpe":  # Optuna's default for multi-objective studies; constant liar spreads parallel workers
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    if name == "nsga2":  # a population of a quarter of the trials (4..50): several generations even in short runs
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, n_trials // 4)))
    return optuna.samplers.RandomSampler(seed=seed)


def suggest_config(trial: "optuna.trial.Trial", space: "SearchSpace", *, seed: int) -> ArchConfig:
    knobs = space.knobs()
    names = list(knobs)
    random.Random(f"{seed}:{trial.number}:order").shuffle(names)  # no knob always gets the budget first
    params = {n: trial.suggest_categorical(n, list(knobs[n])) for n in names}
    return space.sample(None, fixed=params)

