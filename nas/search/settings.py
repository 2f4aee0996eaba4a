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


@dataclass(frozen=True)
class SearchSettings:
    """Everything that fixes a search except the space, the table and where the study lives.

    Attributes:
        budgets: hard constraints (at least one), e.g. ``parse_budget("150MFLOPs")``.
        n_trials: the study's total number of trials (complete + pruned + failed), not "N more".
        objective: ``"latency"`` (predicted from the table) or ``"flops"`` (MACs) as the second objective.
        sampler: ``"tpe"`` (Optuna's multi-objective default), ``"nsga2"``, ``"gp"`` (Optuna's GPSampler),
            ``"random"`` or ``"evolution"`` (regularized evolution seeded by the presets,
            :mod:`nas.search.evolution_sampler`); every proposal is repaired onto the budgets
            (:mod:`nas.search.sampler`).
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
    """

    budgets: tuple[Budget, ...]
    n_trials: int
    objective: Literal["latency", "flops"] = "latency"
    sampler: Literal["tpe", "nsga2", "gp", "random", "evolution"] = "tpe"
    seed: int = 0
    proxy: Literal["train", "zero-cost"] = "train"
    proxy_settings: ProxySettings = PROXY_PRESETS["quick"]
    data: str = "bundled"
    timeout_s: float | None = None
    workers: int = 1
    device: str = "cpu"
    prune: bool = True
    presets: Literal["all", "feasible", "none"] = "all"

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
