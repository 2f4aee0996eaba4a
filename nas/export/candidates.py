"""What to export: a :class:`Candidate` is a config plus where it came from (a trial of a search study, a config
file, a preset). Trials are read as :class:`~nas.search.results.TrialRecord`, the search's own schema."""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from nas.arch import ArchConfig, load_config
from nas.errors import BudgetError, ConfigError, ExportError, StorageError, UsageError
from nas.latency.paths import portable_source
from nas.search.results import TrialRecord, pareto_records

if TYPE_CHECKING:  # pragma: no cover
    import optuna

__all__ = ["Candidate", "candidate_from_config", "candidates_from_study", "safe_name"]

# Trial attributes copied into the provenance (a selection of the TrialRecord schema).
_TRIAL_KEYS = ("macs", "mflops", "params", "latency_ms", "latency_uncertainty_ms", "accuracy", "score", "seed",
               "duration_s")
# The search's own seed, version and head width are kept as search_*; the export records its own.
_STUDY_KEYS = ("space_hash", "space_name", "table", "budgets", "objective", "seed", "nas_version", "proxy", "data",
               "num_classes", "metric_names")
_RENAMED = ("seed", "nas_version", "num_classes")
_BUDGET_ATTR = {"latency_ms": "latency_ms", "macs": "macs", "params": "params"}  # budget metric -> trial attribute


def safe_name(text: str) -> str:
    """``text`` as a file stem: runs of other characters than letters, digits, ``._-`` become ``-``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "model"


@dataclass(frozen=True)
class Candidate:
    """A config to export and where it came from.

    Attributes:
        config: the architecture.
        name: file stem of the exported files (``mystudy-trial12``, ``shufflenetv2-1.0x``, ``found``).
        provenance: what is known about its origin (trial attributes, study attributes, source file).
    """

    config: ArchConfig
    name: str
    provenance: dict[str, Any] = field(default_factory=dict)


def candidate_from_config(source: "ArchConfig | Mapping[str, Any] | str | Path", *,
                          name: str | None = None) -> Candidate:
    """A :class:`Candidate` from a config object, a JSON file (plain or exported) or a preset name.

    Args:
        source: the config, a config file, or a preset name (``"shufflenetv2-1.0x"``, ``"0.5x"``).
        name: the file stem (default: the file's stem, the preset's or the config's name).

    Returns:
        The candidate; an exported file's provenance is kept.

    Raises:
        ConfigError: the file or preset is invalid or missing.
    """
    cfg = load_config(source)
    prov: dict[str, Any] = {}
    if isinstance(source, (str, Path)):
        p = Path(source)
        if p.suffix == ".json" or p.is_file():
            with contextlib.suppress(OSError, ValueError):
                doc = json.loads(p.read_text())
                if isinstance(doc, dict) and isinstance(doc.get("provenance"), dict):
                    prov.update(doc["provenance"])  # re-exporting keeps the original provenance
            prov["source"] = portable_source(str(p))  # this file, without machine-local directories
            stem = p.name.removesuffix(".json")
        else:
            prov["preset"] = cfg.name or str(source)
            stem = cfg.name or str(source)
    else:
        stem = cfg.name or f"config-{cfg.hash()[:8]}"
    return Candidate(config=cfg, name=safe_name(name or stem), provenance=prov)


def _check_exportable(rec: TrialRecord, study_name: str) -> None:
    where = f"trial {rec.number} of study {study_name!r}"
    if rec.state == "FAIL":
        why = rec.failure or "no reason recorded"
        raise ExportError(f"{where} failed ({str(why).splitlines()[0][:160]}); nothing to export, pick a "
                          "completed trial (e.g. one of the Pareto front)", field="trial")
    if rec.state == "PRUNED":
        raise ExportError(f"{where} was pruned (its proxy accuracy is incomplete); pick a completed trial",
                          field="trial")
    if rec.state != "COMPLETE":
        raise ExportError(f"{where} has not finished (state {rec.state}); wait for it or pick another", field="trial")
    reason = rec.infeasible_reason()
    if reason:
        raise ExportError(f"{where} is infeasible: {reason}; pick a feasible trial (e.g. one of the Pareto front)",
                          field="trial")
    if not isinstance(rec.config, Mapping):
        raise ExportError(f"{where} has no 'config' user attribute; it was not written by the search", field="trial")


def _trial_candidate(study: "optuna.Study", rec: TrialRecord) -> Candidate:
    _check_exportable(rec, study.study_name)
    try:
        cfg = ArchConfig.from_dict(rec.config)  # type: ignore[arg-type]
    except ConfigError as e:
        raise ExportError(f"trial {rec.number} of study {study.study_name!r}: stored config is invalid ({e})",
                          field="trial") from None
    prov: dict[str, Any] = {"study": study.study_name, "trial": rec.number}
    ua = rec.user_attrs()
    prov.update({k: ua[k] for k in _TRIAL_KEYS if k in ua})
    if "accuracy" not in prov and rec.values:
        prov["accuracy"] = rec.values[0]
    sattrs = study.user_attrs
    for k in _STUDY_KEYS:
        if k in sattrs:
            prov[("search_" + k) if k in _RENAMED else k] = sattrs[k]
    prov["values"] = list(rec.values or [])
    return Candidate(config=cfg, name=safe_name(f"{study.study_name}-trial{rec.number}"), provenance=prov)


def candidates_from_study(study: "optuna.Study", *, trial: int | None = None, pareto: bool = False,
                          best_under: "str | None" = None) -> list[Candidate]:
    """Pick trials of a finished (or running) search study to export.

    Args:
        study: the study (:func:`nas.search.open_study`).
        trial: a trial number; or
        pareto: every trial of the Pareto front (``study.best_trials``, constraints honoured, infeasible
            trials left out); or
        best_under: a budget such as ``5ms``, ``150MFLOPs`` or ``3Mparams``: the most accurate feasible trial
            within it. Exactly one of the three.

    Returns:
        The candidates, Pareto trials in trial-number order.

    Raises:
        UsageError: not exactly one selector.
        StorageError: the trial does not exist.
        ExportError: the trial failed, was pruned, is unfinished or infeasible; the front is empty.
        BudgetError: the budget cannot be parsed, or no trial meets it.
    """
    if sum([trial is not None, bool(pareto), best_under is not None]) != 1:
        raise UsageError("choose exactly one of trial (a number), pareto or best_under (a budget)", field="trial")
    name = study.study_name
    if trial is not None:
        records = [TrialRecord.from_trial(t) for t in study.get_trials(deepcopy=False)]
        found = [r for r in records if r.number == trial]
        if not found:
            span = f"trials 0..{max(r.number for r in records)}" if records else "no trials yet"
            raise StorageError(f"trial {trial}: study {name!r} has no such trial ({span})", field="trial")
        return [_trial_candidate(study, found[0])]
    if pareto:
        front = [r for r in pareto_records(study) if isinstance(r.config, Mapping)]
        if not front:
            raise ExportError(f"study {name!r}: no completed feasible trial yet, so no Pareto front to export",
                              field="pareto")
        return [_trial_candidate(study, r) for r in sorted(front, key=lambda r: r.number)]
    return [_trial_candidate(study, _best_under(study, str(best_under)))]


def _best_under(study: "optuna.Study", text: str) -> TrialRecord:
    """The most accurate completed feasible trial within the budget ``text`` (then the cheapest, the oldest)."""
    from nas.units import parse_budget

    budget = parse_budget(text)
    key = _BUDGET_ATTR[budget.metric]
    from nas.search.front import leaves

    # Each candidate once, at the highest rung it reached (multi-fidelity): its best-trained accuracy.
    records = leaves([TrialRecord.from_trial(t) for t in study.get_trials(deepcopy=False)])
    ok = [r for r in records if isinstance(r.config, Mapping) and getattr(r, key) is not None
          and float(getattr(r, key)) <= budget.limit]
    if not ok:
        raise BudgetError(f"best_under {budget.text}: no completed feasible trial of study {study.study_name!r} is "
                          "within it", field="best_under")

    def rank(r: TrialRecord) -> tuple[float, float, int]:
        # A zero-cost study stores accuracy=None: rank by its score (objective 0) instead.
        acc = next((v for v in (r.accuracy, r.score, r.values[0] if r.values else None) if v is not None),
                   float("-inf"))
        return (-float(acc), float(getattr(r, key)), r.number)  # most accurate, then cheapest, then oldest

    return min(ok, key=rank)
