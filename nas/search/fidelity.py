"""Multi-fidelity search: asynchronous successive halving (ASHA, Li et al. 2020) over the proxy's rung ladder.

* **Rungs.** Rung ``k`` trains the search's proxy for ``factor_k`` times its steps (:func:`rung_settings`), the
  factors and any other change (today a 2,000-image validation split above rung 0) taken from
  :data:`nas.training.proxy.PROXY_RUNGS` (1x, 4x, 16x quick's steps); the recipe and split seed stay.
* **Candidates and trials.** Every new network starts at rung 0 (``settings.n_trials`` counts these). A
  promotion is a new trial, enqueued with the same parameters and the attributes ``rung``, ``parent`` (the
  trial promoted) and ``candidate`` (the rung-0 trial), because a finished Optuna trial cannot be updated;
  every trial also stores ``rungs``: the candidate's result at each rung so far.
* **Promotion** (:func:`next_promotion`), asynchronous: a candidate at rung ``r`` is promoted when it is among
  the top ``1/eta`` of the rung's finished trials (pruned ones count, as losers) ranked by **Pareto layer** of
  (accuracy up, cost down), then accuracy (:func:`pareto_rank_order`; multi-objective successive halving as in
  Schmucker et al. 2021) **and** near the rung's own front: its accuracy plus one standard error reaches the best
  rung-``r`` accuracy at no higher cost. Higher rungs are promoted first. Until session 9 the rank was accuracy
  alone, which sent every promotion to the front's slow, accurate end: the fast networks a user picks from kept
  their noisy rung-0 accuracies. The decision runs under the study's
  :class:`~nas.search.storage.ClaimLock` with the enqueue, so two workers (SQLite or PostgreSQL) never promote
  one candidate twice. A promotion whose trial failed (e.g. its worker was killed) is retried, at most
  :data:`MAX_ATTEMPTS` times in all: a resumed search loses no rung.
* **The front** takes each candidate at the highest rung it reached (:mod:`nas.search.front`).
* **Samplers** see promotion trials as observations too (same parameters, a higher-fidelity value), which pulls
  TPE/NSGA-II/GP toward promoted regions; the evolution sampler builds its population from rung 0 only.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

from nas.errors import UsageError
from nas.search.front import candidate_of, rung_of

if TYPE_CHECKING:  # pragma: no cover
    from nas.search.results import TrialRecord
    from nas.training.proxy import ProxySettings

__all__ = ["rung_factors", "rung_settings", "next_promotion", "pareto_rank_order", "planned_trials", "fidelity_info",
           "promotion_attrs", "rung_entry", "MAX_ATTEMPTS"]

MAX_ATTEMPTS = 2  # tries of one promotion (a killed or diverged run is retried once, then left)


LOCAL_FACTORS = (1.0, 4.0, 16.0)  # used only if nas.training.proxy has no PROXY_RUNGS: quick's steps x 1, 4, 16


def _ladder() -> list[Any]:
    """The rung ladder: :data:`nas.training.proxy.PROXY_RUNGS` (the one place it is defined), else the quick
    preset with its epochs times :data:`LOCAL_FACTORS`."""
    try:
        from nas.training.proxy import PROXY_RUNGS
    except ImportError:  # pragma: no cover - an older nas.training
        from nas.training.proxy import PROXY_PRESETS

        q = PROXY_PRESETS["quick"]
        return [q.replace(epochs=q.epochs * f) for f in LOCAL_FACTORS]
    return list(PROXY_RUNGS.values())


def _steps(s: "ProxySettings") -> float:
    """Optimizer steps of a proxy setting (epochs over its train subset when set in epochs)."""
    if s.steps is not None:
        return float(s.steps)
    per_epoch = max(1, (s.train_size or 0) // s.batch_size) if s.train_size else None
    return math.ceil(s.epochs * per_epoch) if per_epoch else float(s.epochs)


def rung_factors(rungs: int) -> list[float]:
    """Steps of rung k relative to rung 0, for ``rungs`` rungs.

    Args:
        rungs: how many rungs (2 .. the ladder's length).

    Returns:
        ``[1.0, 4.0, 16.0][:rungs]`` with today's :data:`~nas.training.proxy.PROXY_RUNGS`.

    Raises:
        UsageError: ``rungs`` outside the ladder (``field="rungs"``).
    """
    ladder = _ladder()
    if not isinstance(rungs, int) or isinstance(rungs, bool) or not 2 <= rungs <= len(ladder):
        raise UsageError(f"rungs {rungs!r}: must be an integer from 2 to {len(ladder)}", field="rungs")
    return [_steps(s) / _steps(ladder[0]) for s in ladder[:rungs]]


# Settings a rung of the ladder may change besides its length (e.g. a larger validation split above rung 0).
_RUNG_FIELDS = ("train_size", "val_size", "resolution", "batch_size", "lr", "optimizer", "reports")


def rung_settings(base: "ProxySettings", rung: int, *, rungs: int) -> "ProxySettings":
    """The proxy settings of ``rung``: ``base`` trained ``factor`` times longer, with the ladder's own changes.

    Args:
        base: the search's proxy settings (rung 0).
        rung: the rung index.
        rungs: the ladder's length.

    Returns:
        ``base`` itself at rung 0; above it, ``base``'s steps times the rung's factor and every setting in
        which the ladder's rung differs from its rung 0 (today: a 2,000-image validation split).
    """
    if rung == 0:
        return base
    ladder = _ladder()
    f = rung_factors(rungs)[rung]
    changes = {k: getattr(ladder[rung], k) for k in _RUNG_FIELDS
               if getattr(ladder[rung], k) != getattr(ladder[0], k)}
    if base.steps is not None or base.train_size:
        return base.replace(steps=max(1, round(_steps(base) * f)), **changes)
    return base.replace(epochs=base.epochs * f, **changes)


def planned_trials(n_trials: int, *, eta: int, rungs: int) -> int:
    """About how many trials a multi-fidelity study runs: ``n`` at rung 0, ``n / eta^k`` at rung k."""
    return n_trials + sum(n_trials // eta**k for k in range(1, rungs))


def fidelity_info(mode: str, *, eta: int, rungs: int, base: "ProxySettings") -> dict[str, Any]:
    """The study attribute ``fidelity``: the mode and, for ``multi``, eta and each rung's proxy budget."""
    if mode != "multi":
        return {"mode": "single"}
    ladder = [{"rung": k, "steps": rung_settings(base, k, rungs=rungs).steps,
               "epochs": rung_settings(base, k, rungs=rungs).epochs} for k in range(rungs)]
    return {"mode": "multi", "eta": eta, "rungs": ladder}


def _near_front(c: "TrialRecord", done: Sequence["TrialRecord"]) -> bool:
    """Its accuracy plus one SE reaches the best accuracy of the rung at no higher cost."""
    from nas.search.front import accuracy_se

    acc, cost = c.values[0], c.values[1]  # type: ignore[index]
    best = max(r.values[0] for r in done if r.values[1] <= cost)  # type: ignore[index]  # c itself is in done
    se = accuracy_se(c.accuracy, se=c.accuracy_se, n=c.eval_images) or 0.0
    return acc + se >= best


def pareto_rank_order(done: Sequence["TrialRecord"]) -> list["TrialRecord"]:
    """``done`` ordered by non-dominated layer of (accuracy ``values[0]`` up, cost ``values[1]`` down), then by
    accuracy (higher first), then trial number: the first layer is the rung's own front, fast end included.

    Args:
        done: completed feasible trials of one rung (each with ``values``).

    Returns:
        The same records, best first.
    """
    def dominates(a: "TrialRecord", b: "TrialRecord") -> bool:
        (aa, ac), (ba, bc) = a.values[:2], b.values[:2]  # type: ignore[index]
        return aa >= ba and ac <= bc and (aa > ba or ac < bc)

    left, layers = list(done), []
    while left:
        layer = [r for r in left if not any(dominates(o, r) for o in left if o is not r)]
        layers.append(sorted(layer, key=lambda r: (-r.values[0], r.number)))  # type: ignore[index]
        taken = {id(r) for r in layer}
        left = [r for r in left if id(r) not in taken]
    return [r for layer in layers for r in layer]


def next_promotion(records: Sequence["TrialRecord"], *, eta: int, rungs: int) -> tuple["TrialRecord", int] | None:
    """The next candidate to promote and its new rung, or None (see the module docstring).

    Args:
        records: every trial of the study (any state; WAITING promotions count as made).
        eta: keep the top ``1/eta`` of each rung.
        rungs: the ladder's length.

    Returns:
        ``(trial to promote, its next rung)``: the best-ranked eligible trial of the highest rung first.
    """
    attempts: dict[tuple[int, int], list[str]] = {}
    for r in records:
        if r.parent is not None:
            attempts.setdefault((int(r.parent), rung_of(r)), []).append(r.state)
    for rung in range(rungs - 2, -1, -1):
        at = [r for r in records if rung_of(r) == rung]
        done = [r for r in at if r.state == "COMPLETE" and r.values is not None and r.infeasible_reason() is None]
        finished = len(done) + sum(1 for r in at if r.state == "PRUNED")
        k = finished // eta
        if k == 0:
            continue
        for c in pareto_rank_order(done)[:k]:
            tries = attempts.get((c.number, rung + 1), [])
            if any(s != "FAIL" for s in tries) or len(tries) >= MAX_ATTEMPTS:
                continue  # promoted already (running, waiting or done), or given up
            if _near_front(c, done):
                return c, rung + 1
    return None


def promotion_attrs(parent: "TrialRecord", rung: int) -> dict[str, Any]:
    """The attributes a promotion trial is enqueued with."""
    return {"rung": rung, "parent": parent.number, "candidate": candidate_of(parent)}


def rung_entry(*, rung: int, trial: int, steps: int, accuracy: float, accuracy_se: float | None,
               seconds: float) -> dict[str, Any]:
    """One element of the ``rungs`` attribute."""
    return {"rung": rung, "trial": trial, "steps": steps, "accuracy": accuracy, "accuracy_se": accuracy_se,
            "seconds": round(seconds, 3)}
