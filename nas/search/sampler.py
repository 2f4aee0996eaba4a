"""The budget guard: every network a sampler proposes fits the budgets, by repair rather than replacement.

:class:`RepairSampler` wraps a *proposer* that gives a full knob assignment per trial (an Optuna sampler:
TPE, NSGA-II, GP or random, through :class:`OptunaProposer`; or regularized evolution,
:class:`nas.search.evolution_sampler.EvolutionProposer`). An over-budget proposal is moved to the nearest
feasible network by :func:`nas.search.evolution.repair` (single-index steps down ordered choices, the step
that removes the most excess first), so the sampler learns from a network next to the one it chose, not from
an unrelated random draw (issue 12: the old guard replaced rejected knobs by random draws). The excess is
``max over budgets of value / limit - 1`` (:meth:`nas.search.budgets.Scorer.excess`); every knob at its
smallest choice fits (:func:`nas.search.budgets.check_budgets` refuses budgets below it), so a repair always
succeeds. Constraints are still set on every trial with ``trial.set_constraint`` (by the worker).

How each trial's parameters came about is kept per trial (:meth:`RepairSampler.note`): ``sampled`` (fit as
proposed), ``repaired``, or the evolution proposer's ``initial`` / ``random-init`` / ``evolution``; the worker
stores it as the trial attribute ``proposal``.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, Sequence

from nas.arch import ArchConfig
from nas.errors import UsageError
from nas.search.evolution import repair

if TYPE_CHECKING:  # pragma: no cover
    import optuna

    from nas.search.budgets import Scorer
    from nas.search.settings import SearchSettings
    from nas.space import SearchSpace

__all__ = ["RepairSampler", "OptunaProposer", "Proposer", "base_sampler", "make_sampler", "suggest_config",
           "GP_STARTUP_TRIALS"]

GP_STARTUP_TRIALS = 10  # random trials before the GP is fitted: TPE's default n_startup_trials, for equal footing


class Proposer(Protocol):
    """Gives a full knob assignment for a trial and says how it was made."""

    def propose(self, study: "optuna.Study", trial: "optuna.trial.FrozenTrial") -> tuple[dict[str, Any], str]:
        ...  # pragma: no cover


class OptunaProposer:
    """An Optuna sampler's proposal for every knob: its relative sample, the rest sampled independently."""

    def __init__(self, base: "optuna.samplers.BaseSampler", knobs: Mapping[str, Sequence[Any]]) -> None:
        from optuna.distributions import CategoricalDistribution

        self.base = base
        self.dists = {k: CategoricalDistribution(list(v)) for k, v in knobs.items() if len(v) > 1}
        self.single = {k: v[0] for k, v in knobs.items() if len(v) == 1}

    def propose(self, study: "optuna.Study", trial: "optuna.trial.FrozenTrial") -> tuple[dict[str, Any], str]:
        space = self.base.infer_relative_search_space(study, trial)
        space = {k: d for k, d in space.items() if k in self.dists}
        rel = self.base.sample_relative(study, trial, space) if space else {}
        params = dict(self.single)
        for name, dist in self.dists.items():
            params[name] = rel[name] if name in rel else self.base.sample_independent(study, trial, name, dist)
        return params, "sampled"


def _repair_class() -> type:
    import optuna

    class _Repair(optuna.samplers.BaseSampler):
        def __init__(self, proposer: Proposer, knobs: Mapping[str, Sequence[Any]],
                     excess: Callable[[dict[str, Any]], float], seed: int) -> None:
            from optuna.distributions import CategoricalDistribution

            self.proposer, self.knobs, self.excess, self.seed = proposer, dict(knobs), excess, seed
            self.dists = {k: CategoricalDistribution(list(v)) for k, v in knobs.items() if len(v) > 1}
            self._notes: dict[int, str] = {}
            self._params: dict[int, dict[str, Any]] = {}

        def infer_relative_search_space(self, study, trial):
            return dict(self.dists)  # every knob is proposed at once, so the whole network can be repaired

        def sample_relative(self, study, trial, search_space):
            return {k: v for k, v in self._proposal(study, trial).items() if k in search_space}

        def sample_independent(self, study, trial, param_name, param_distribution):
            params = self._proposal(study, trial)
            if param_name in params:
                return params[param_name]
            return optuna.samplers.RandomSampler(seed=self.seed + trial.number).sample_independent(
                study, trial, param_name, param_distribution)

        def _proposal(self, study, trial) -> dict[str, Any]:
            if trial.number in self._params:
                return self._params[trial.number]
            fixed = dict(trial.system_attrs.get("fixed_params") or {})
            params, kind = self.proposer.propose(study, trial)
            params = {**params, **fixed}
            if self.excess(params) > 0:
                # Fixed (enqueued) knobs stay as given: only the proposed ones are stepped down.
                knobs = {k: ([fixed[k]] if k in fixed else v) for k, v in self.knobs.items()}
                rng = random.Random(f"{self.seed}:{trial.number}:repair")
                fixed_ok = repair(params, knobs, excess=self.excess, rng=rng)
                if fixed_ok is not None:
                    params, kind = fixed_ok, ("repaired" if kind == "sampled" else f"{kind}+repaired")
            self._params[trial.number] = params
            self._notes[trial.number] = kind
            return params

        def note(self, number: int) -> str | None:
            """How trial ``number``'s parameters came about (None: not proposed here, e.g. enqueued)."""
            return self._notes.get(number)

        def before_trial(self, study, trial):
            base = getattr(self.proposer, "base", None)
            if base is not None:
                base.before_trial(study, trial)

        def after_trial(self, study, trial, state, values):
            self._params.pop(trial.number, None)
            base = getattr(self.proposer, "base", None)
            if base is not None:
                base.after_trial(study, trial, state, values)

        def reseed_rng(self):
            base = getattr(self.proposer, "base", None)
            if base is not None:
                base.reseed_rng()

    return _Repair


class RepairSampler:
    """An Optuna sampler proposing whole networks, each repaired onto the budgets (see the module docstring).

    Built lazily as a subclass of ``optuna.samplers.BaseSampler`` (optuna is imported only when used).
    """

    @staticmethod
    def create(proposer: Proposer, knobs: Mapping[str, Sequence[Any]], *,
               excess: Callable[[dict[str, Any]], float], seed: int) -> "optuna.samplers.BaseSampler":
        """Args: ``proposer`` of full assignments, ``knobs`` the space's choices, ``excess(params)`` the budgets'
        excess of a full assignment (<= 0 fits), ``seed`` of the repair's tie-breaks.

        Returns: the sampler (with ``note(trial_number)``)."""
        return _repair_class()(proposer, knobs, excess, seed)


def base_sampler(name: str, *, seed: int, n_trials: int) -> "optuna.samplers.BaseSampler":
    """The Optuna sampler named ``name`` (``tpe``, ``nsga2``, ``gp`` or ``random``), seeded.

    Args:
        name: the sampler.
        seed: its seed.
        n_trials: the study's total (sizes NSGA-II's population).

    Returns:
        The sampler.

    Raises:
        UsageError: ``gp`` without scipy installed (``field="sampler"``).
    """
    import optuna

    if name == "tpe":  # Optuna's default for multi-objective studies; constant liar spreads parallel workers
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    if name == "nsga2":  # a population of a quarter of the trials (4..50): several generations even in short runs
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, n_trials // 4)))
    if name == "gp":  # log-EHVI, constrained by the trials' set_constraint values (Optuna >= 4.5)
        import importlib.util

        if importlib.util.find_spec("scipy") is None:
            raise UsageError("sampler 'gp' needs scipy (Optuna's GPSampler): pip install scipy", field="sampler")
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=GP_STARTUP_TRIALS,
                                         warn_independent_sampling=False)
    return optuna.samplers.RandomSampler(seed=seed)


def make_sampler(settings: "SearchSettings", space: "SearchSpace", scorer: "Scorer", *,
                 sampler_seed: int) -> "optuna.samplers.BaseSampler":
    """The search's sampler: ``settings.sampler``'s proposals, repaired onto the budgets.

    Args:
        settings: the search settings (sampler name, seed, trials).
        space: the search space.
        scorer: the budgets' figures (its ``excess``).
        sampler_seed: the proposer's seed (differs per worker and resumed run).

    Returns:
        A :class:`RepairSampler`.
    """
    knobs = space.knobs()
    if settings.sampler == "evolution":
        from nas.search.evolution_sampler import EvolutionProposer

        def macs_and_latency(params: dict[str, Any]) -> tuple[float, float | None]:
            f = scorer.figures(space.sample(None, fixed={**scorer.mins, **params}))
            return f.macs, f.latency_ms

        # The latency-efficient initial design only where latency is the objective (a MACs-guided search's
        # front of MACs against MACs would be one network).
        proposer: Proposer = EvolutionProposer(
            space, knobs, excess=scorer.excess, seed=settings.seed,
            macs_and_latency=macs_and_latency if settings.objective == "latency" and scorer.table else None)
    else:
        proposer = OptunaProposer(base_sampler(settings.sampler, seed=sampler_seed, n_trials=settings.n_trials),
                                  knobs)
    return RepairSampler.create(proposer, knobs, excess=scorer.excess, seed=settings.seed)


def suggest_config(trial: "optuna.trial.Trial", space: "SearchSpace", *, seed: int) -> ArchConfig:
    """The trial's network: every knob suggested (in a per-trial shuffled order, as before repair existed).

    Args:
        trial: the running trial.
        space: the search space.
        seed: the search seed (the order's).

    Returns:
        The config.
    """
    knobs = space.knobs()
    names = list(knobs)
    random.Random(f"{seed}:{trial.number}:order").shuffle(names)
    params = {n: trial.suggest_categorical(n, list(knobs[n])) for n in names}
    return space.sample(None, fixed=params)
