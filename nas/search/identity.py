"""Study identity: what a study records about how it was made, its default name, and the refusal to resume
it with other settings.

Re-running the same search loads the study and checks it was made with the same space, objective, budgets,
proxy, data, seed and table (:func:`create_or_load`); the default name (:func:`study_name_for`) follows from
the settings, so the same command resumes the same study.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from typing import TYPE_CHECKING, Any

from nas.errors import UsageError
from nas.search.budgets import DEFAULT_NUM_CLASSES
from nas.search.fidelity import fidelity_info
from nas.search.settings import SearchSettings
from nas.search.storage import ClaimLock, make_storage

if TYPE_CHECKING:  # pragma: no cover
    from nas.latency.table import LatencyTable
    from nas.space import SearchSpace

__all__ = ["study_attrs", "check_same", "study_name_for", "create_or_load"]

def _table_info(table: "LatencyTable | None") -> dict[str, Any] | None:
    if table is None:
        return None
    cal = table.calibration or {}
    doc = {"entries": {k: round(e.ms, 6) for k, e in sorted(table.entries.items())},
           "calibration": [cal.get("model"), cal.get("scale"), cal.get("per_block_ms")],
           "resolution": table.resolution, "num_classes": table.num_classes, "space": table.space_hash}
    fp = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
    return {"path": str(table.path) if table.path else None, "fingerprint": fp, "describe": table.describe(),
            "identity": table.identity, "space_hash": table.space_hash, "resolution": table.resolution,
            "num_classes": table.num_classes}


def _proxy_info(settings: SearchSettings) -> dict[str, Any]:
    s = settings.proxy_settings.to_dict()
    s.pop("threads", None)  # how many cores train a candidate does not change what it measures
    out: dict[str, Any] = {"kind": settings.proxy, "settings": s}
    if settings.proxy == "zero-cost":
        out["method"] = "naswot"
    return out


def study_attrs(space: "SearchSpace", table: "LatencyTable | None", settings: SearchSettings) -> dict[str, Any]:
    from nas import __version__

    return {
        "space_hash": space.hash,
        "space": space.to_dict(),
        "space_name": space.name,
        "table": _table_info(table),
        "budgets": [b.text for b in settings.budgets],
        "objective": settings.objective,
        "seed": settings.seed,
        "nas_version": __version__,
        "proxy": _proxy_info(settings),
        "data": settings.data,
        "num_classes": table.num_classes if table is not None else DEFAULT_NUM_CLASSES,
        "sampler": settings.sampler,
        "fidelity": fidelity_info(settings.fidelity, eta=settings.eta, rungs=settings.rungs,
                                  base=settings.proxy_settings),
        "metric_names": ["accuracy" if settings.proxy == "train" else "score",
                         "latency_ms" if settings.objective == "latency" else "mflops"],
    }


def check_same(name: str, stored: dict[str, Any], now: dict[str, Any]) -> None:
    from nas.units import parse_budget

    def budgets(v: list[str]) -> list[tuple[str, float]]:
        return sorted((b.metric, b.limit) for b in map(parse_budget, v))

    diffs = []
    for key in ("space_hash", "objective", "seed", "data", "num_classes"):
        if stored.get(key) != now[key]:
            diffs.append(f"{key} {stored.get(key)!r} vs {now[key]!r}")
    if budgets(stored.get("budgets") or []) != budgets(now["budgets"]):
        diffs.append(f"budgets {stored.get('budgets')} vs {now['budgets']}")
    if stored.get("proxy") != now["proxy"]:
        diffs.append("proxy settings")
    if (stored.get("fidelity") or {"mode": "single"}) != now["fidelity"]:  # older studies: single fidelity
        diffs.append(f"fidelity {(stored.get('fidelity') or {}).get('mode', 'single')} vs {now['fidelity']['mode']}")
    fp = lambda t: t and t.get("fingerprint")  # noqa: E731
    if fp(stored.get("table")) != fp(now["table"]):
        diffs.append("latency table")
    if diffs:
        raise UsageError(f"study {name!r}: exists with other settings ({'; '.join(diffs)}); re-run it with "
                         "its own settings, or choose another study name", field="study")


def study_name_for(space: "SearchSpace", settings: SearchSettings, *, quick: bool = False) -> str:
    """The default study name: the same command gives the same name (so re-running resumes it).

    Args:
        space: the search space.
        settings: its budgets, objective and proxy name the study.
        quick: ``nas search --quick``'s demo study (suffix ``-quick``).

    Returns:
        ``<space>-<budgets>-<objective>[-<proxy>][-multi][-quick]``, with characters other than ``A-Za-z0-9._-`` as ``_``.
    """
    parts = [space.name, *[b.text for b in settings.budgets], settings.objective]
    if settings.proxy != "train":
        parts.append(settings.proxy)
    if settings.fidelity == "multi":
        parts.append("multi")
    if quick:
        parts.append("quick")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(parts))


def create_or_load(url: str, name: str, attrs: dict[str, Any]) -> None:
    """Create the study (or load it) and record/check its identity, under the claim lock."""
    import optuna

    st = make_storage(url, create=True)
    with ClaimLock(url, name), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.create_study(study_name=name, storage=st, directions=["maximize", "minimize"],
                                    load_if_exists=True)
        stored = study.user_attrs
        if "space_hash" in stored:
            check_same(name, stored, attrs)
        else:
            for k, v in attrs.items():
                study.set_user_attr(k, v)
            study.set_metric_names(list(attrs["metric_names"]))

