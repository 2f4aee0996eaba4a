"""The front of a study, candidate by candidate, and the rule that says when one accuracy beats another.

* **Candidates.** Under multi-fidelity search (:mod:`nas.search.fidelity`) one network is trained at several
  rungs, each rung a trial of its own (finished trials cannot be updated). A candidate is represented by its
  highest-rung completed trial (:func:`leaves`); the front (:func:`front`) is the non-dominated set of those
  (accuracy up, cost down), feasible only. In a single-fidelity study (and any study written before rungs
  existed) every trial is its own candidate at rung 0, and the front equals Optuna's constrained
  ``study.best_trials``.
* **Uncertainty.** Each proxy accuracy carries its binomial standard error from the validation-set size
  (:func:`accuracy_se`; studies that did not store it get it from the stored proxy settings' ``val_size``).
* **Picks.** :func:`front_picks`: the ``k`` front members that together dominate the most of the (accuracy,
  cost) plane (greedy hypervolume subset selection), i.e. the few networks that cover the trade-off a user
  chooses from. "The k most accurate" would take the front's slow end only.
* **"Beats".** :func:`beats`: accuracy ``a`` beats ``b`` only when ``a - b > BEAT_Z * sqrt(se_a² + se_b²)``, a
  two-sided z-test at about 95 % on the difference of two independent binomial estimates (1.96, rounded to 2).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from nas.search.results import TrialRecord

__all__ = ["leaves", "front", "front_picks", "pareto_points", "hypervolume_2d", "accuracy_se", "beats", "rung_of", "candidate_of", "BEAT_Z"]

BEAT_Z = 2.0  # z of the "beats" test: 1.96 (two-sided 95 %) rounded up


def rung_of(rec: "TrialRecord") -> int:
    """The trial's rung (0 when it stored none: single-fidelity and older studies)."""
    return int(rec.rung or 0)


def candidate_of(rec: "TrialRecord") -> int:
    """The rung-0 trial number that started the trial's candidate (the trial itself when not promoted)."""
    return int(rec.candidate) if rec.candidate is not None else rec.number


def _usable(rec: "TrialRecord") -> bool:
    return rec.state == "COMPLETE" and rec.values is not None and rec.infeasible_reason() is None


def leaves(records: Sequence["TrialRecord"]) -> list["TrialRecord"]:
    """Each candidate's highest-rung completed feasible trial (the latest one on a tie), by trial number.

    Args:
        records: a study's trials.

    Returns:
        One record per candidate that completed at least one rung.
    """
    best: dict[int, "TrialRecord"] = {}
    for r in records:
        if not _usable(r):
            continue
        c = candidate_of(r)
        if c not in best or (rung_of(r), r.number) > (rung_of(best[c]), best[c].number):
            best[c] = r
    return sorted(best.values(), key=lambda r: r.number)


def front(records: Sequence["TrialRecord"]) -> list["TrialRecord"]:
    """The feasible Pareto front over candidates (:func:`leaves`), cheapest first.

    Args:
        records: a study's trials.

    Returns:
        The non-dominated leaves (no other leaf at least as accurate and no costlier, better in one).
    """
    pts = leaves(records)
    out = []
    for a in pts:
        a0, a1 = a.values[0], a.values[1]  # type: ignore[index]
        if not any(b is not a and b.values[0] >= a0 and b.values[1] <= a1  # type: ignore[index]
                   and (b.values[0] > a0 or b.values[1] < a1) for b in pts):  # type: ignore[index]
            out.append(a)
    return sorted(out, key=lambda r: (r.values[1], -r.values[0]))  # type: ignore[index]


def pareto_points(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The non-dominated ``(accuracy, cost)`` points (higher accuracy, lower cost), sorted by cost."""
    out: list[tuple[float, float]] = []
    for a, c in sorted(points, key=lambda p: (p[1], -p[0])):
        if not out or a > out[-1][0]:
            out.append((a, c))
    return out


def hypervolume_2d(points: Sequence[tuple[float, float]], *, reference_cost: float,
                   reference_accuracy: float = 0.0) -> float:
    """Area dominated by ``(accuracy, cost)`` points up to the reference (accuracy above, cost below it).

    Units are accuracy x cost (e.g. fraction x ms); compare values only under one reference point.
    """
    pts = [(a, c) for a, c in pareto_points(points) if a > reference_accuracy and c < reference_cost]
    hv = 0.0
    for i, (a, c) in enumerate(pts):
        nxt = pts[i + 1][1] if i + 1 < len(pts) else reference_cost
        hv += (nxt - c) * (a - reference_accuracy)
    return hv


def front_picks(records: Sequence["TrialRecord"], k: int, *, reference_accuracy: float,
                reference_cost: float) -> list["TrialRecord"]:
    """The ``k`` distinct networks of the front that add the most hypervolume, chosen greedily.

    Greedy selection is within ``1 - 1/e`` of the best subset (hypervolume is monotone submodular), and in two
    dimensions it is exact for ``k = 1``. Ties go to the more accurate network.

    Args:
        records: a study's trials (the front is taken from them, :func:`front`).
        k: how many networks.
        reference_accuracy: below it a network adds nothing (e.g. chance accuracy).
        reference_cost: at or above it a network adds nothing (in the front's cost unit: ms or MACs).

    Returns:
        Up to ``k`` records (a network proposed twice counts once), in the order picked.
    """
    cands, seen = [], set()
    for r in sorted(front(records), key=lambda r: -r.values[0]):  # type: ignore[index]
        if r.config_string not in seen:
            seen.add(r.config_string)
            cands.append(r)
    picked: list["TrialRecord"] = []
    pts: list[tuple[float, float]] = []
    hv = lambda ps: hypervolume_2d(ps, reference_cost=reference_cost,  # noqa: E731
                                   reference_accuracy=reference_accuracy)
    while cands and len(picked) < k:
        base = hv(pts)
        gains = [hv(pts + [(r.values[0], r.values[1])]) - base for r in cands]  # type: ignore[index]
        i = max(range(len(cands)), key=lambda j: (gains[j], cands[j].values[0]))  # type: ignore[index]
        r = cands.pop(i)
        picked.append(r)
        pts.append((r.values[0], r.values[1]))  # type: ignore[index]
    return picked


def accuracy_se(accuracy: float | None, *, se: float | None = None, n: int | None = None) -> float | None:
    """The standard error of a proxy accuracy: the stored one, else binomial from ``n`` images, else None.

    Args:
        accuracy: the accuracy in [0, 1] (None: no accuracy, no SE).
        se: a stored standard error (returned as is).
        n: the validation images it was measured on.

    Returns:
        ``sqrt(p (1 - p) / n)`` or the stored value; None when neither is known.
    """
    if accuracy is None:
        return None
    if se is not None:
        return float(se)
    if n:
        p = min(max(float(accuracy), 0.0), 1.0)
        return math.sqrt(p * (1.0 - p) / int(n))
    return None


def beats(a: float, b: float, *, se_a: float | None, se_b: float | None) -> bool:
    """True when accuracy ``a`` is better than ``b`` beyond their combined uncertainty.

    Args:
        a, b: the accuracies.
        se_a, se_b: their standard errors (None: unknown, taken as 0 -- e.g. zero-cost scores carry none).

    Returns:
        ``a - b > BEAT_Z * sqrt(se_a² + se_b²)`` (with both unknown: ``a > b``).
    """
    return a - b > BEAT_Z * math.sqrt((se_a or 0.0) ** 2 + (se_b or 0.0) ** 2)


def rung_result(rec: "TrialRecord", rung: int) -> dict[str, Any] | None:
    """The candidate's result at ``rung`` (from its ``rungs`` list, or the trial itself at its own rung)."""
    for r in rec.rungs or []:
        if int(r.get("rung", -1)) == rung:
            return r
    if rung_of(rec) == rung and rec.values is not None:
        return {"rung": rung, "trial": rec.number, "steps": rec.rung_steps or rec.total_steps,
                "accuracy": rec.accuracy if rec.accuracy is not None else rec.values[0],
                "accuracy_se": rec.accuracy_se}
    return None
