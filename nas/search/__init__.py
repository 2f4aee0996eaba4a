"""The multi-objective search: an Optuna study over a space under hard budgets.

Modules: ``settings`` (SearchSettings), ``storage`` (URLs, open_study, the claim lock), ``budgets`` (figures and
feasibility), ``sampler`` (the budget guard: repair onto the budgets), ``evolution`` and ``evolution_sampler``
(regularized evolution), ``front`` (candidates, the front, the "beats" rule), ``fidelity`` (successive halving), ``identity`` (what a study records; resume checks), ``liveness``
and ``workers`` (the worker loop), ``presets`` (the reference networks), ``run`` (``run_search``), ``results``
(the typed trial record) and ``report`` (front, plots, hypervolume).

Names are re-exported lazily: ``import nas.search`` imports neither optuna nor torch.
"""

from __future__ import annotations

from nas._lazy import lazy_exports

_EXPORTS = {
    "run_search": "nas.search.run",
    "search": "nas.search.run",
    "SearchSettings": "nas.search.settings",
    "SearchResult": "nas.search.results",
    "SearchStatus": "nas.search.results",
    "TrialRecord": "nas.search.results",
    "pareto_records": "nas.search.results",
    "open_study": "nas.search.storage",
    "default_storage": "nas.search.storage",
    "check_budgets": "nas.search.budgets",
    "RepairSampler": "nas.search.sampler",
    "make_sampler": "nas.search.sampler",
    "EvolutionProposer": "nas.search.evolution_sampler",
    "study_name_for": "nas.search.identity",
    "evaluate_config": "nas.search.presets",
    "score_presets": "nas.search.presets",
    "SearchReport": "nas.search.report",
    "build_report": "nas.search.report",
    "plot_report": "nas.search.report",
    "hypervolume_2d": "nas.search.front",
    "pareto_points": "nas.search.front",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
