"""The search: one multi-objective Optuna study per run, resumable, shared by any number of workers.

Objectives: maximise proxy accuracy (:func:`nas.training.proxy.proxy_train`, or a zero-cost score), minimise the
latency predicted from a measured table (:func:`nas.latency.prediction.predict`) or, with ``objective="flops"``, the
MACs (the baseline the paper argues against). Budgets (:func:`nas.units.parse_budget`) are hard constraints set
with ``trial.set_constraint``; Optuna's Pareto front (``study.best_trials``) and its TPE and NSGA-II samplers
honour them.

This module orchestrates; the parts live beside it: :mod:`~nas.search.settings`, :mod:`~nas.search.storage`
(URLs, the claim lock), :mod:`~nas.search.budgets`, :mod:`~nas.search.sampler` (the budget guard),
:mod:`~nas.search.identity` (resume checks), :mod:`~nas.search.liveness` and :mod:`~nas.search.workers`,
:mod:`~nas.search.presets`, :mod:`~nas.search.results` (the trial record) and :mod:`~nas.search.report`.

**Resume.** Re-running the same search loads the study, checks it was made with the same settings, fails trials
left RUNNING by dead workers and continues to the requested total.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence

from nas.errors import NasError, UsageError
from nas.search.budgets import check_budgets
from nas.search.fidelity import planned_trials
from nas.search.identity import create_or_load, study_attrs, study_name_for
from nas.search.presets import score_presets
from nas.search.results import Progress, SearchResult, SearchStatus, TrialRecord, pareto_records
from nas.search.settings import SearchSettings
from nas.search.storage import default_storage, open_study
from nas.search.workers import Job, Worker, worker_main
from nas.training.proxy import ProxySettings
from nas.units import Budget

if TYPE_CHECKING:  # pragma: no cover
    import optuna

    from nas.latency.table import LatencyTable
    from nas.space import SearchSpace

__all__ = ["run_search", "search"]

# One torch thread per worker by default: oneDNN's threads spin-wait at every barrier, and with other processes
# on the cores a 40-step proxy run of ShuffleNetV2 1x took 310 s at 2 threads vs 21-28 s at 1 (2-core VM under
# load). More cores are used with more workers, which are immune to that.
DEFAULT_THREADS = 1
POLL_ROUNDS = 10**7  # bound of the parent's poll loop over its workers (about a second each): never reached
JOIN_AFTER_INTERRUPT_S = 30  # a worker failing its trial after Ctrl-C gets this long before it is terminated


def run_search(space: "SearchSpace", *, budgets: "Sequence[Budget | str]", table: "LatencyTable | None",
               n_trials: int, study: str | None = None, storage: str | None = None,
               out_dir: "str | Path | None" = None, objective: Literal["latency", "flops"] = "latency",
               sampler: Literal["tpe", "nsga2", "gp", "random", "evolution"] = "evolution", seed: int = 0,
               proxy: Literal["train", "zero-cost"] = "train", proxy_settings: "ProxySettings | str" = "quick",
               data: str = "bundled", timeout_s: float | None = None, workers: int = 1, device: str = "cpu",
               prune: bool = True, presets: Literal["all", "feasible", "none"] = "all", threads: int | None = None,
               progress: Progress | None = None, fidelity: Literal["single", "multi"] | None = None, eta: int = 3,
               rungs: int = 2) -> SearchResult:
    """Search ``space`` under ``budgets``: the Python entry point (``nas search`` does the same).

    Args:
        space: the search space (:func:`nas.load_space`).
        budgets: hard budgets, as :class:`~nas.units.Budget` or text (``"150MFLOPs"``, ``"5ms"``, ``"3Mparams"``).
        table: the latency table of ``space`` (:func:`nas.load_table`); None only with ``objective="flops"``
            and MAC/param budgets.
        n_trials: the study's total number of trials (re-running with a larger total continues it).
        study: the study name; default from the space, budgets and objective (the same call resumes it).
        storage: an Optuna storage URL or SQLite path; default SQLite ``study.db`` in ``out_dir``.
        out_dir: the results folder (default ``runs/<study>``).
        objective, sampler, seed, proxy, data, timeout_s, workers, device, prune, presets, fidelity, eta, rungs: see
            :class:`~nas.search.settings.SearchSettings`.
        proxy_settings: a :class:`~nas.training.proxy.ProxySettings` or a preset name (``"quick"``, ...).
        threads: torch threads per worker (default 1).
        progress: called with a :class:`~nas.search.results.SearchStatus` as trials finish.

    Returns:
        A :class:`~nas.search.results.SearchResult` whose ``pareto`` holds the feasible front as
        :class:`~nas.search.results.TrialRecord` (cheapest first).

    Raises:
        BudgetError: a budget cannot be parsed or is below the space's smallest network.
        UsageError: a bad setting, latency without a table, a study made with other settings.
        StorageError: the storage cannot be reached.
        TableMismatchError: the table belongs to another space or resolution.
        DataError: the data cannot be loaded.
    """
    from nas.training.proxy import proxy_settings as proxy_preset
    from nas.units import parse_budget

    parsed = tuple(b if isinstance(b, Budget) else parse_budget(b) for b in budgets)
    ps = proxy_preset(proxy_settings) if isinstance(proxy_settings, str) else proxy_settings
    settings = SearchSettings(budgets=parsed, n_trials=n_trials, objective=objective, sampler=sampler, seed=seed,
                              proxy=proxy, proxy_settings=ps, data=data, timeout_s=timeout_s, workers=workers,
                              device=device, prune=prune, presets=presets, fidelity=fidelity, eta=eta, rungs=rungs)
    name = study or study_name_for(space, settings)
    return search(space, settings=settings, study=name, table=table, storage=storage, out_dir=out_dir,
                  threads=threads, progress=progress)


def search(space: "SearchSpace", *, settings: SearchSettings, study: str, table: "LatencyTable | None" = None,
           storage: str | None = None, out_dir: "str | Path | None" = None, threads: int | None = None,
           progress: Progress | None = None) -> SearchResult:
    """Run (or resume, or join) a search until the study holds ``settings.n_trials`` trials.

    Args:
        space: the search space.
        settings: budgets, trial count, objective, sampler, proxy (see :class:`SearchSettings`).
        study: the study name; re-using it resumes (settings must match).
        table: the latency table of ``space`` (required for the latency objective or a latency budget).
        storage: an Optuna storage URL (``sqlite:///...``, ``postgresql://...``) or an SQLite path;
            None = :func:`~nas.search.storage.default_storage` under ``out_dir``.
        out_dir: the results folder (default ``runs/<study>``).
        threads: torch threads per worker (default 1; see ``DEFAULT_THREADS``: use workers for cores).
        progress: called with a :class:`SearchStatus` after each trial (one worker) or about once a
            second (several), and while presets are scored.

    Returns:
        A :class:`SearchResult`; the study itself holds every trial and its attributes.

    Raises:
        BudgetError: a budget below the space's smallest network.
        UsageError: latency asked for without a table, a study made with other settings, bad settings.
        StorageError: the storage cannot be reached.
        TableMismatchError: the table belongs to another space or resolution.
        DataError: the data cannot be loaded.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _check_table(space, table)
    check_budgets(space, settings.budgets, table, objective=settings.objective)
    url = storage or default_storage(study=study, out_dir=out_dir)
    create_or_load(url, study, study_attrs(space, table, settings))
    start = time.time()
    deadline = start + settings.timeout_s if settings.timeout_s else None
    threads = threads or DEFAULT_THREADS
    job = Job(space=space, table=table, settings=settings, study=study, url=url, threads=threads, deadline=deadline)
    view = open_study(study=study, storage=url)

    total = settings.n_trials if settings.fidelity == "single" else planned_trials(
        settings.n_trials, eta=settings.eta, rungs=settings.rungs)  # promotions come on top of the candidates

    def report(phase: str = "search", message: str = "") -> None:
        if progress is not None:
            progress(_status(view, total, phase, message))

    report()
    if settings.workers == 1:
        Worker(job, index=0, on_trial=report).run()
    else:
        _run_processes(job, settings.workers, report)
    presets = score_presets(view, space=space, table=table, settings=settings, threads=threads,
                            progress=lambda msg: report("presets", msg))
    report("done")
    st = _status(view, settings.n_trials)
    counts = {"complete": st.complete, "infeasible": st.infeasible, "pruned": st.pruned, "failed": st.failed,
              "running": st.running}
    return SearchResult(study_name=study, storage=url, n_trials=settings.n_trials, counts=counts,
                        elapsed_s=time.time() - start, presets=presets, pareto=pareto_records(view))


def _check_table(space: "SearchSpace", table: "LatencyTable | None") -> None:
    """The table must be of this space and at its one resolution."""
    if table is None:
        return
    table.check_space(space)
    if tuple(space.resolution) != (table.resolution,):
        raise UsageError(f"table: measured at {table.resolution}px but the space offers resolutions "
                         f"{list(space.resolution)}; use a space with resolution = [{table.resolution}]",
                         field="table")


def _status(study: "optuna.Study", total: int, phase: str = "search", message: str = "") -> SearchStatus:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    by = {s: 0 for s in TrialState}
    for t in trials:
        by[t.state] += 1
    infeasible = sum(1 for t in trials
                     if t.state == TrialState.COMPLETE and TrialRecord.from_trial(t).feasible is False)
    front = pareto_records(study)
    best = max(front, key=lambda t: (t.values[0], -t.values[1]), default=None)  # type: ignore[index]
    return SearchStatus(phase=phase, done=by[TrialState.COMPLETE] + by[TrialState.PRUNED] + by[TrialState.FAIL],
                        total=total, running=by[TrialState.RUNNING], complete=by[TrialState.COMPLETE] - infeasible,
                        pruned=by[TrialState.PRUNED], failed=by[TrialState.FAIL], infeasible=infeasible,
                        front=len(front), best_accuracy=best.values[0] if best else None,  # type: ignore[index]
                        best_cost=best.values[1] if best else None, message=message)


def _run_processes(job: Job, workers: int, report: Callable[[], None]) -> None:
    """Run ``workers`` local processes to the end; a library error in any of them is raised here, once.

    Raises:
        NasError: the first error a worker reported (e.g. the data cannot be read), as its own class.
    """
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # fork after torch/optuna/SQLAlchemy have started threads is unsafe
    barrier = ctx.Barrier(workers)
    errors = ctx.Queue()
    procs = [ctx.Process(target=worker_main, args=(replace(job, parent_pid=os.getpid()), i, barrier, errors),
                         daemon=False) for i in range(workers)]
    for p in procs:
        p.start()
    try:
        for _ in range(POLL_ROUNDS):  # bounded poll: ends when every worker has exited
            if all(not p.is_alive() for p in procs):
                break
            report()
            for p in procs:
                p.join(timeout=1.0 / workers)
    except KeyboardInterrupt:  # the workers got the same SIGINT: each fails its trial and exits
        for p in procs:
            p.join(timeout=JOIN_AFTER_INTERRUPT_S)
        raise
    finally:
        for p in procs:
            if p.is_alive():  # pragma: no cover - only after an interrupt that a worker ignored
                p.terminate()
                p.join(timeout=5)
    _raise_worker_error(errors)


def _raise_worker_error(errors: Any) -> None:
    """Re-raise the first error a worker put on ``errors`` (the same class from nas.errors, same field)."""
    import queue

    from nas import errors as err_mod

    try:
        name, message, field = errors.get(timeout=0.5)
    except queue.Empty:
        return
    cls = getattr(err_mod, name, None)
    if not (isinstance(cls, type) and issubclass(cls, NasError)):
        cls = NasError
    raise cls(message, field=field)
