"""What a search leaves behind: the typed trial record, the live status and the result of a run.

:class:`TrialRecord` is the one schema of the per-trial attributes: :mod:`nas.search.workers` writes them
(:func:`record_attrs` refuses a name outside the schema), :mod:`nas.search.report`, :mod:`nas.export` and the
tests read them back with :meth:`TrialRecord.from_trial`. The names stored in the Optuna study are the field
names below and never change, so studies written by earlier versions still load.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping

if TYPE_CHECKING:  # pragma: no cover
    import optuna

__all__ = ["TrialRecord", "TRIAL_ATTRS", "record_attrs", "pareto_records", "SearchStatus", "SearchResult", "Progress"]


@dataclass(frozen=True)
class TrialRecord:
    """One trial of a search study: Optuna's number, state and values plus the attributes the search wrote.

    Attribute fields are None when the trial does not carry them; :attr:`stored` tells "absent" from a stored
    None (a zero-cost trial stores ``accuracy=None``), so :meth:`user_attrs` gives back exactly what is stored.

    Attributes:
        number, state, values, constraints: from Optuna (``state`` is the ``TrialState`` name; ``constraints``
            maps a budget text to its slack, feasible when <= 0).
        worker: ``host:pid:start`` of the worker that claimed the trial.
        config, config_string: the network (``ArchConfig.to_dict()`` and its compact string).
        macs, mflops, params: analytic figures at the searched head (mult-adds; MFLOPs = MACs / 1e6).
        latency_ms, latency_uncertainty_ms: predicted from the study's latency table (None without one).
        seed: the search seed the proxy ran with.
        feasible, infeasible: within every budget; if not, the violations as text (never trained then).
        accuracy, score: the proxy's accuracy in [0, 1] (0.0 when infeasible) or the zero-cost score.
        trained: the proxy training ran.
        history, steps, total_steps, pruned, train_s: the proxy run's ``[step, accuracy]`` reports, steps
            done of the planned total, whether it was stopped early, and its training time (s).
        duration_s: the whole trial's wall time (s).
        failure: why a FAIL trial failed.
        proposal: how the sampler made the network: ``sampled`` (fit as proposed), ``repaired`` (moved to the
            nearest feasible network), ``initial`` / ``efficient`` / ``random-init`` / ``evolution`` (the evolution sampler),
            ``enqueued`` (given by hand or a promotion).
        accuracy_se, eval_images: the accuracy's binomial standard error and the validation images it was
            measured on.
        rung, rung_steps, parent, candidate, rungs: multi-fidelity (:mod:`nas.search.fidelity`): this trial's
            rung (0 = cheapest), its planned proxy steps, the trial it was promoted from, the rung-0 trial
            that started the candidate, and every rung result of the candidate up to this one (dicts with
            ``rung``, ``trial``, ``steps``, ``accuracy``, ``accuracy_se``, ``seconds``). Absent in
            single-fidelity studies and studies written before multi-fidelity existed: read as rung 0.
        stored: which attribute names the trial carries.
    """

    number: int
    state: str
    values: tuple[float, ...] | None = None
    constraints: Mapping[str, float] = field(default_factory=dict)
    worker: str | None = None
    config: dict[str, Any] | None = None
    config_string: str | None = None
    macs: int | None = None
    mflops: float | None = None
    params: int | None = None
    latency_ms: float | None = None
    latency_uncertainty_ms: float | None = None
    seed: int | None = None
    feasible: bool | None = None
    infeasible: str | None = None
    accuracy: float | None = None
    score: float | None = None
    trained: bool | None = None
    history: list[list[float]] | None = None
    steps: int | None = None
    total_steps: int | None = None
    pruned: bool | None = None
    train_s: float | None = None
    duration_s: float | None = None
    failure: str | None = None
    proposal: str | None = None
    accuracy_se: float | None = None
    eval_images: int | None = None
    rung: int | None = None
    rung_steps: int | None = None
    parent: int | None = None
    candidate: int | None = None
    rungs: list[dict[str, Any]] | None = None
    stored: frozenset[str] = frozenset()

    @classmethod
    def from_trial(cls, trial: "optuna.trial.FrozenTrial") -> "TrialRecord":
        """The record of an Optuna trial; attributes outside the schema (another tool's) are ignored."""
        ua = trial.user_attrs
        known = {k: ua[k] for k in TRIAL_ATTRS if k in ua}
        return cls(number=trial.number, state=trial.state.name,
                   values=tuple(trial.values) if trial.values is not None else None,
                   constraints=dict(trial.constraints or {}), stored=frozenset(known), **known)

    def user_attrs(self) -> dict[str, Any]:
        """The stored attributes, by their names in the study (exactly those in :attr:`stored`)."""
        return {k: getattr(self, k) for k in TRIAL_ATTRS if k in self.stored}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: ``trial``, ``state``, ``values`` (when set) and the stored attributes."""
        d: dict[str, Any] = {"trial": self.number, "state": self.state, **self.user_attrs()}
        if self.values is not None:
            d["values"] = list(self.values)
        return d

    def infeasible_reason(self) -> str | None:
        """Why the trial breaks a budget (its ``infeasible`` text or its positive constraints), else None."""
        if self.feasible is False:
            return str(self.infeasible or "it broke the search's budget (feasible=false)")
        bad = {k: v for k, v in self.constraints.items() if v > 0}
        if bad:
            return "constraint(s) violated: " + ", ".join(f"{k}={v:g}" for k, v in bad.items())
        return None


_NOT_ATTRS = ("number", "state", "values", "constraints", "stored")
TRIAL_ATTRS: tuple[str, ...] = tuple(f.name for f in fields(TrialRecord) if f.name not in _NOT_ATTRS)


def record_attrs(trial: "optuna.trial.Trial", attrs: Mapping[str, Any]) -> None:
    """Store ``attrs`` on a running trial under their schema names.

    Raises:
        KeyError: a name that is not a :class:`TrialRecord` attribute (a programming error, not a user's).
    """
    unknown = set(attrs) - set(TRIAL_ATTRS)
    if unknown:
        raise KeyError(f"not TrialRecord attributes: {sorted(unknown)}")
    for k, v in attrs.items():
        trial.set_user_attr(k, v)


@dataclass(frozen=True)
class SearchStatus:
    """A snapshot for a live view (passed to the ``progress`` callback of :func:`search`)."""

    phase: Literal["search", "presets", "done"]
    done: int  # finished trials in the study (complete + pruned + failed)
    total: int
    running: int = 0
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    infeasible: int = 0
    front: int = 0  # trials on the Pareto front
    best_accuracy: float | None = None  # best feasible objective-0 value (accuracy, or zero-cost score)
    best_cost: float | None = None  # the objective-1 value (latency ms or MFLOPs) of that trial
    message: str = ""


@dataclass(frozen=True)
class SearchResult:
    """What :func:`nas.search.run_search` returns.

    Attributes:
        study_name, storage: where the study lives (``nas.search.open_study`` reopens it).
        n_trials: the study's requested total.
        counts: trials by outcome (complete, infeasible, pruned, failed, running).
        elapsed_s: wall time of this run (s).
        presets: the ShuffleNetV2 presets scored for reference (see :func:`nas.search.presets.score_presets`).
        pareto: the feasible Pareto front (Optuna's constrained ``best_trials``), cheapest first;
            :func:`nas.search.report.build_report` gives tables and plots of the whole study.
    """

    study_name: str
    storage: str
    n_trials: int
    counts: dict[str, int]
    elapsed_s: float
    presets: list[dict[str, Any]] = field(default_factory=list)
    pareto: list[TrialRecord] = field(default_factory=list)  # feasible front trials, cheapest first


Progress = Callable[[SearchStatus], None]


def pareto_records(study: "optuna.Study") -> list[TrialRecord]:
    """The feasible Pareto front of ``study`` over candidates, cheapest first (:func:`nas.search.front.front`:
    each candidate at the highest rung it reached; in a single-fidelity study, Optuna's constrained
    ``best_trials``)."""
    from nas.search.front import front

    return front([TrialRecord.from_trial(t) for t in study.get_trials(deepcopy=False)])
