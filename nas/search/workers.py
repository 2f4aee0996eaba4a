"""The worker: claims trials of a study one at a time and evaluates each (figures, budgets, proxy, pruning).

* **Exactly N trials.** ``n_trials`` is the study's total (complete + pruned + failed + running), not
  "N more": a trial is claimed under :class:`~nas.search.storage.ClaimLock` only while fewer exist.
* **Over budget is never trained.** A network that still breaks a budget (an enqueued one; the guarded
  sampler proposes none) is recorded infeasible, with accuracy 0, *before* training.
* **Pruning.** Optuna does not prune multi-objective trials, and "below the median accuracy" would kill exactly
  the small, fast networks that belong on the front. A trial is stopped at a report point when at least
  ``PRUNE_MIN_PEERS`` completed trials that are no slower (latency or MACs, known before training) reached a
  higher median accuracy at the same step: it is then dominated at that fidelity. It is recorded PRUNED (its
  partial accuracy in the attributes), so it never enters the front.

* **Multi-fidelity.** Under ``fidelity="multi"`` a claim first asks :func:`nas.search.fidelity.next_promotion`
  (under the same lock) and enqueues the promotion it names; ``n_trials`` counts rung-0 trials then.

Every attribute a worker stores goes through :func:`nas.search.results.record_attrs` (the one schema).
"""

from __future__ import annotations

import math
import os
import random
import statistics
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from nas.arch import ArchConfig
from nas.errors import NasError, TrainingDivergedError
from nas.search.budgets import Figures, Scorer, describe_violation
from nas.search.fidelity import MAX_ATTEMPTS, next_promotion, promotion_attrs, rung_entry, rung_settings
from nas.search.front import rung_of
from nas.search.liveness import Heartbeat, fail_stale, worker_tag
from nas.search.results import record_attrs
from nas.search.sampler import make_sampler, suggest_config
from nas.search.settings import SearchSettings
from nas.search.storage import ClaimLock, make_storage

if TYPE_CHECKING:  # pragma: no cover
    import optuna

    from nas.latency.table import LatencyTable
    from nas.space import SearchSpace

__all__ = ["Job", "Worker", "worker_main", "PRUNE_MIN_PEERS"]

PRUNE_MIN_PEERS = 4  # completed, no-slower trials needed at a report point before a trial may be stopped
BARRIER_TIMEOUT_S = 300  # local workers wait this long for their siblings to load the data, then go on alone


@dataclass(frozen=True)
class Job:
    """What a worker process needs (picklable)."""

    space: "SearchSpace"
    table: "LatencyTable | None"
    settings: SearchSettings
    study: str
    url: str
    threads: int
    deadline: float | None  # time.time() after which no trial is claimed
    parent_pid: int | None = None


def _elapsed(t0: float, digits: int = 3) -> float:
    return round(time.perf_counter() - t0, digits)


class Worker:
    """One process's loop: claim a trial, evaluate it, tell the study; until the total or the deadline."""

    def __init__(self, job: Job, *, index: int, on_trial: Callable[[], None] | None = None) -> None:
        import optuna

        self.job, self.s = job, job.settings
        self.storage = make_storage(job.url, create=False)
        existing = len(self.storage.get_all_trials(self.storage.get_study_id_from_name(job.study), deepcopy=False))
        # Differs per worker and per resumed run, so a resumed run does not replay the same random draws.
        sampler_seed = random.Random(f"{self.s.seed}:{index}:{existing}").randrange(2**31)
        self.scorer = Scorer(job.space, job.table, self.s.budgets, self.s.objective)
        sampler = make_sampler(self.s, job.space, self.scorer, sampler_seed=sampler_seed)
        self.sampler = sampler
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.study = optuna.load_study(study_name=job.study, storage=self.storage, sampler=sampler)
        self.lock = ClaimLock(job.url, job.study)
        self.tag = worker_tag()
        self.on_trial = on_trial
        self.dataset = None

    def _claim(self) -> "optuna.trial.Trial | None":
        """Under the claim lock: a promotion if one is due (multi-fidelity), else a new trial while fewer than
        ``n_trials`` exist (rung-0 trials, under multi-fidelity); None when the study is done."""
        from optuna.trial import TrialState

        from nas.search.results import TrialRecord

        with self.lock:
            fail_stale(self.study, self.storage)
            trials = self.study.get_trials(deepcopy=False)
            if self.s.fidelity == "multi":
                records = [TrialRecord.from_trial(t) for t in trials]
                promo = next_promotion(records, eta=self.s.eta, rungs=self.s.rungs)
                if promo is not None:
                    parent, rung = promo
                    self.study.enqueue_trial(dict(next(t for t in trials if t.number == parent.number).params),
                                             user_attrs=promotion_attrs(parent, rung), skip_if_exists=False)
                    return self._ask()
                trials = [t for t, r in zip(trials, records) if rung_of(r) == 0]
            taken = [t for t in trials if t.state != TrialState.WAITING]
            if len(taken) >= self.s.n_trials:
                return None
            return self._ask()

    def _ask(self) -> "optuna.trial.Trial":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "heartbeat is supposed to be used with optimize": we beat
            trial = self.study.ask()
        record_attrs(trial, {"worker": self.tag})
        if self.s.fidelity == "multi" and "rung" not in trial.user_attrs:
            record_attrs(trial, {"rung": 0, "candidate": trial.number})
        return trial

    def run(self, *, barrier: Any = None) -> int:
        """Claim and run trials until the study holds ``n_trials``, the deadline passes or the parent is gone;
        returns how many this worker ran."""
        import torch

        torch.set_num_threads(self.job.threads)
        if barrier is not None:  # local workers start claiming together, each with its data loaded
            self._data()
            try:
                barrier.wait(timeout=BARRIER_TIMEOUT_S)
            except Exception:  # a sibling failed to start: go on alone
                pass
        ran = 0
        # a cap on passes, not a plan: promotions are at most n per rung above 0, each tried MAX_ATTEMPTS times
        bound = self.s.n_trials * (1 + (self.s.rungs - 1) * MAX_ATTEMPTS if self.s.fidelity == "multi" else 1)
        for _ in range(bound):  # each pass claims one trial, or stops
            if self.job.deadline is not None and time.time() >= self.job.deadline:
                break
            if self.job.parent_pid is not None and os.getppid() != self.job.parent_pid:
                break  # the search that started this worker is gone: stop claiming
            trial = self._claim()
            if trial is None:
                break
            self._run_trial(trial)
            ran += 1
            if self.on_trial is not None:
                self.on_trial()
        return ran

    def _data(self) -> Any:
        if self.dataset is None:
            from nas.training.data import load_data

            self.dataset = load_data(self.s.data, image_size=self.s.proxy_settings.resolution)
        return self.dataset

    def _run_trial(self, trial: "optuna.trial.Trial") -> None:
        t0 = time.perf_counter()
        with Heartbeat(self.storage, trial._trial_id):
            try:
                self._evaluate(trial, t0)
            except TrainingDivergedError as e:  # recorded failed; the search goes on
                self._fail(trial, str(e), t0)
            except KeyboardInterrupt:
                self._fail(trial, "interrupted (Ctrl-C)", t0)
                raise
            except NasError as e:  # e.g. the data set cannot be read: every trial would fail the same way
                self._fail(trial, str(e), t0)
                raise
            except (RuntimeError, MemoryError) as e:  # e.g. out of memory for this one candidate
                self._fail(trial, f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}", t0)

    def _evaluate(self, trial: "optuna.trial.Trial", t0: float) -> None:
        """Sample the network, record its figures and constraints, then score it (or refuse it: over budget)."""
        s = self.s
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. TPE's "sampled independently" when the guard drops a knob
            config = suggest_config(trial, self.job.space, seed=s.seed)
        rung = int(trial.user_attrs.get("rung") or 0)
        proposal = "promotion" if rung > 0 else (self.sampler.note(trial.number) or "enqueued")
        f = self.scorer.figures(config)
        cost = self.scorer.cost(f)
        slacks = self.scorer.slacks(f)
        for name, v in slacks.items():
            trial.set_constraint(name, v)
        feasible = all(v <= 0 for v in slacks.values())
        record_attrs(trial, {"config": config.to_dict(), "config_string": config.to_string(),
                             "macs": f.macs, "mflops": round(f.macs / 1e6, 3), "params": f.params,
                             "latency_ms": f.latency_ms, "latency_uncertainty_ms": f.latency_uncertainty_ms,
                             "seed": s.seed, "feasible": feasible, "proposal": proposal})
        if not feasible:
            self._tell_infeasible(trial, f, slacks, cost, t0)
        elif s.proxy == "zero-cost":
            self._tell_zero_cost(trial, config, cost, t0)
        else:
            self._tell_trained(trial, config, cost, t0)

    def _tell_infeasible(self, trial: "optuna.trial.Trial", f: Figures, slacks: dict[str, float], cost: float,
                         t0: float) -> None:
        """Recorded before any training is spent on it: accuracy 0, the violations as text."""
        why = "; ".join(describe_violation(b, self.scorer.value(b, f)) for b in self.s.budgets if slacks[b.text] > 0)
        record_attrs(trial, {"infeasible": why, "accuracy": 0.0, "trained": False, "duration_s": _elapsed(t0, 4)})
        self.study.tell(trial, [0.0, cost])

    def _tell_zero_cost(self, trial: "optuna.trial.Trial", config: ArchConfig, cost: float, t0: float) -> None:
        from nas.training.zero_cost import zero_cost_score

        s = self.s
        score = zero_cost_score(config, data=self._data(), settings=s.proxy_settings, seed=s.seed)
        score = score if math.isfinite(score) else 0.0
        record_attrs(trial, {"score": score, "accuracy": None, "trained": False, "duration_s": _elapsed(t0)})
        self.study.tell(trial, [score, cost])

    def _tell_trained(self, trial: "optuna.trial.Trial", config: ArchConfig, cost: float, t0: float) -> None:
        from optuna.trial import TrialState

        from nas.training.proxy import proxy_train

        s = self.s
        rung = int(trial.user_attrs.get("rung") or 0)
        history: list[list[float]] = []
        # A promoted candidate was already selected by its rung: it is trained to the end.
        prune = s.prune and rung == 0
        cb = self._pruner(cost, history) if prune else (lambda step, acc: history.append([step, acc]))
        ps = rung_settings(s.proxy_settings, rung, rungs=s.rungs) if s.fidelity == "multi" else s.proxy_settings
        r = proxy_train(config, data=self._data(), settings=ps, seed=s.seed, callback=cb, device=s.device)
        se, n_eval = _uncertainty(r, ps)
        record_attrs(trial, {"accuracy": r.accuracy, "accuracy_se": se, "eval_images": n_eval,
                             "history": [list(h) for h in r.history], "steps": r.steps,
                             "total_steps": r.total_steps, "pruned": r.pruned, "trained": True,
                             "train_s": round(r.train_seconds, 3), "duration_s": _elapsed(t0)})
        if s.fidelity == "multi" and not r.pruned:
            self._record_rungs(trial, rung, r, ps)
        if r.pruned:
            self.study.tell(trial, state=TrialState.PRUNED)
        else:
            self.study.tell(trial, [r.accuracy, cost])

    def _record_rungs(self, trial: "optuna.trial.Trial", rung: int, r: Any, ps: Any) -> None:
        """``rung_steps`` and ``rungs``: the parent's rung results plus this one (multi-fidelity)."""
        from nas.search.results import TrialRecord

        before: list[dict[str, Any]] = []
        parent = trial.user_attrs.get("parent")
        if parent is not None:
            prec = TrialRecord.from_trial(self.study._storage.get_trial(
                self.study._storage.get_trial_id_from_study_id_trial_number(self.study._study_id, int(parent))))
            before = list(prec.rungs or [])
        entry = rung_entry(rung=rung, trial=trial.number, steps=r.total_steps, accuracy=r.accuracy,
                           accuracy_se=_uncertainty(r, ps)[0], seconds=r.train_seconds)
        record_attrs(trial, {"rung_steps": r.total_steps, "rungs": [*before, entry]})

    def _fail(self, trial: Any, why: str, t0: float) -> None:
        from optuna.trial import TrialState

        try:
            record_attrs(trial, {"failure": why, "duration_s": _elapsed(t0)})
        finally:
            self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)

    def _pruner(self, cost: float, history: list[list[float]]) -> Callable[[int, float], bool]:
        """Stop when enough completed, no-slower trials had a higher median accuracy at this step."""
        from optuna.trial import TrialState

        from nas.search.results import TrialRecord

        def cb(step: int, acc: float) -> bool:
            history.append([step, acc])
            peers = []
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
                rec = TrialRecord.from_trial(t)
                if not rec.feasible or rec.values is None or rec.values[1] > cost:
                    continue
                at = {int(h[0]): float(h[1]) for h in rec.history or []}
                if step in at:
                    peers.append(at[step])
            if len(peers) >= PRUNE_MIN_PEERS and acc < statistics.median(peers):
                return True  # proxy_train ignores a stop at its last report: the run completes normally
            return False

        return cb


def _uncertainty(r: Any, settings: Any) -> tuple[float | None, int | None]:
    """The proxy result's standard error and evaluation images (``ProxyResult.accuracy_se``/``eval_images``;
    a result without them -- an older nas.training -- gets the binomial SE over ``settings.val_size``)."""
    from nas.search.front import accuracy_se

    n = getattr(r, "eval_images", None) or (settings.val_size if settings is not None else None)
    return accuracy_se(r.accuracy, se=getattr(r, "accuracy_se", None), n=n), n


def worker_main(job: Job, index: int, barrier: Any = None, errors: Any = None) -> None:
    """Entry point of a worker process (``multiprocessing`` spawn).

    Args:
        job: what to run.
        index: the worker's index (seeds its sampler).
        barrier: shared by the local workers (start together).
        errors: a queue; a :class:`~nas.errors.NasError` (e.g. the data cannot be read) is put there as
            ``(class name, message, field)`` instead of a traceback, and the parent raises it once.
    """
    try:
        Worker(job, index=index).run(barrier=barrier)
    except KeyboardInterrupt:
        pass
    except NasError as e:
        if errors is None:
            raise
        errors.put((type(e).__name__, str(e), getattr(e, "field", None)))
