"""The settings of a search: everything that fixes it except the space, the table and where the study lives."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from nas.errors import UsageError
from nas.training.proxy import PROXY_PRESETS, ProxySettings
from nas.units import Budget

__all__ = ["SearchSettings", "SAMPLERS", "OBJECTIVES", "PRESET_CHOICES"]

SAMPLERS = ("tpe", "nsga2", "gp", "random", "evolution")
OBJECTIVES = ("latency", "flops")
PROXIES = ("train", "zero-cost")
PRESET_CHOICES = ("all", "feasible", "none")
FIDELITIES = ("single", "multi")


@dataclass(frozen=True)
class SearchSettings:
    """Everything that fixes a search except the space, the table and where the study lives.

    Attributes:
        budgets: hard constraints (at least one), e.g. ``parse_budget("150MFLOPs")``.
        n_trials: the study's total number of trials (complete + pruned + failed), not "N more".
        objective: ``"latency"`` (predicted from the table) or ``"flops"`` (MACs) as the second objective.
        sampler: ``"evolution"`` (the default: regularized evolution seeded by the presets and, in a
            latency-guided search, latency-efficient networks, :mod:`nas.search.evolution_sampler`; the best
            mean on ground truth in ``benchmarks/bench_search_guidance.py``; with the multi-fidelity default it beats
            random and MACs guidance beyond the seed spread, session 9), ``"tpe"`` (Optuna's multi-objective
            default), ``"nsga2"``, ``"gp"`` (Optuna's GPSampler) or ``"random"``; every proposal is repaired
            onto the budgets (:mod:`nas.search.sampler`).
        seed: seeds the sampler, the knob order and every proxy run (all candidates share it: common random
            numbers make their accuracies comparable).
        proxy: ``"train"`` (short training, accuracy in [0, 1]) or ``"zero-cost"`` (NASWOT score at init).
        proxy_settings: the proxy's budget and recipe.
        data: the data spec the proxy trains on (:func:`nas.training.data.load_data`).
        timeout_s: stop claiming new trials after this many seconds of this run (None: no limit).
        workers: processes on this machine; others may join from anywhere with the same storage and study.
        device: where the proxy trains (``cpu`` or ``cuda``).
        prune: stop dominated candidates early (see :mod:`nas.search.workers`).
        presets: which ShuffleNetV2 presets get a proxy accuracy for reference: ``all``, ``feasible`` (those
            within every budget) or ``none``; MACs and latency are always given.
        fidelity: ``"multi"`` (the default with the trained proxy since session 9: successive halving over rungs
            of 1x, 4x (, 16x) its steps, promotion by Pareto layer, :mod:`nas.search.fidelity`; ``n_trials``
            then counts rung-0 candidates, promotions come on top) or ``"single"`` (every candidate trained with
            ``proxy_settings``; the default, and the only choice, with the zero-cost proxy). None: that default.
        eta: multi-fidelity: the top ``1/eta`` of a rung is promoted.
        rungs: multi-fidelity: rungs on the ladder (2, the default since session 9, or 3).
    """

    budgets: tuple[Budget, ...]
    n_trials: int
    objective: Literal["latency", "flops"] = "latency"
    sampler: Literal["tpe", "nsga2", "gp", "random", "evolution"] = "evolution"
    seed: int = 0
    proxy: Literal["train", "zero-cost"] = "train"
    proxy_settings: ProxySettings = PROXY_PRESETS["quick"]
    data: str = "bundled"
    timeout_s: float | None = None
    workers: int = 1
    device: str = "cpu"
    prune: bool = True
    presets: Literal["all", "feasible", "none"] = "all"
    fidelity: Literal["single", "multi"] | None = None
    eta: int = 3
    rungs: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "budgets", tuple(self.budgets))
        if not self.budgets:
            raise UsageError("budget: give at least one, e.g. parse_budget('150MFLOPs')", field="budget")
        if not isinstance(self.n_trials, int) or self.n_trials < 1:
            raise UsageError(f"trials {self.n_trials!r}: must be a positive integer", field="trials")
        if self.objective not in OBJECTIVES:
            raise UsageError(f"objective {self.objective!r}: unknown; choose one of {list(OBJECTIVES)}",
                             field="objective")
        if self.sampler not in SAMPLERS:
            raise UsageError(f"sampler {self.sampler!r}: unknown; choose one of {list(SAMPLERS)}", field="sampler")
        if self.proxy not in PROXIES:
            raise UsageError(f"proxy {self.proxy!r}: unknown; choose train or zero-cost", field="proxy")
        if not isinstance(self.workers, int) or self.workers < 1:
            raise UsageError(f"workers {self.workers!r}: must be a positive integer", field="workers")
        if self.timeout_s is not None and not (self.timeout_s > 0):
            raise UsageError(f"timeout {self.timeout_s!r}: must be a positive number of seconds", field="timeout")
        if self.presets not in PRESET_CHOICES:
            raise UsageError(f"presets {self.presets!r}: choose all, feasible or none", field="presets")
        if self.fidelity is None:  # the measured default (benchmarks/bench_search_guidance.py, session 9)
            object.__setattr__(self, "fidelity", "multi" if self.proxy == "train" else "single")
        if self.fidelity not in FIDELITIES:
            raise UsageError(f"fidelity {self.fidelity!r}: choose single or multi", field="fidelity")
        if not isinstance(self.eta, int) or isinstance(self.eta, bool) or self.eta < 2:
            raise UsageError(f"eta {self.eta!r}: must be an integer of at least 2", field="eta")
        from nas.search.fidelity import rung_factors

        rung_factors(self.rungs)  # raises UsageError(field="rungs") off the ladder
        if self.fidelity == "multi" and self.proxy != "train":
            raise UsageError("fidelity 'multi' trains candidates longer at each rung; the zero-cost proxy has no "
                             "training to lengthen: use fidelity 'single'", field="fidelity")
