"""The paper's ShuffleNetV2 presets scored like the trials, for reference beside the front (cached in the study)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable

from nas.arch import PRESETS, ArchConfig
from nas.errors import MissingEntriesError, TrainingDivergedError
from nas.search.budgets import Figures, Scorer, describe_violation
from nas.search.settings import SearchSettings

if TYPE_CHECKING:  # pragma: no cover
    import optuna

    from nas.latency.table import LatencyTable
    from nas.space import SearchSpace

__all__ = ["evaluate_config", "score_presets"]

def evaluate_config(config: ArchConfig, *, space: "SearchSpace", table: "LatencyTable | None",
                    settings: SearchSettings, train: bool, dataset: Any = None) -> dict[str, Any]:
    """Score one network the way the search scores a trial (figures, feasibility, proxy accuracy).

    Args:
        config: the network (at the table's resolution).
        space, table, settings: as for :func:`nas.search.run_search`.
        train: run the proxy (else ``accuracy`` is None).
        dataset: a loaded :class:`~nas.training.data.Dataset` to reuse (default: loaded from ``settings.data``).

    Returns:
        A dict with ``config``, ``macs``, ``mflops``, ``params``, ``latency_ms``, ``latency_uncertainty_ms``,
        ``feasible``, ``violations`` (list of texts), ``accuracy`` (or ``score`` for the zero-cost proxy),
        ``in_space`` and ``duration_s``.
    """
    from nas.training.proxy import proxy_train
    from nas.training.zero_cost import zero_cost_score

    t0 = time.perf_counter()
    sc = Scorer(space, table, settings.budgets, settings.objective)
    try:
        f = sc.figures(config)
    except MissingEntriesError:  # a preset outside the space: no table entries for its blocks
        from nas.macs import count_macs

        m = count_macs(config, num_classes=sc.num_classes)
        f = Figures(m.macs, m.params, None, None)
    violations = []
    for b in settings.budgets:
        v = {"macs": f.macs, "params": f.params, "latency_ms": f.latency_ms}[b.metric]
        if v is None or v > b.limit:
            violations.append(describe_violation(b, v) if v is not None else f"no latency for {b.text}")
    out: dict[str, Any] = {"config": config.to_dict(), "macs": f.macs, "mflops": round(f.macs / 1e6, 3),
                           "params": f.params, "latency_ms": f.latency_ms,
                           "latency_uncertainty_ms": f.latency_uncertainty_ms, "feasible": not violations,
                           "violations": violations, "in_space": space.contains(config), "accuracy": None}
    if train:
        if dataset is None:
            from nas.training.data import load_data

            dataset = load_data(settings.data, image_size=settings.proxy_settings.resolution)
        if settings.proxy == "zero-cost":
            out["score"] = zero_cost_score(config, data=dataset, settings=settings.proxy_settings, seed=settings.seed)
        else:
            try:
                r = proxy_train(config, data=dataset, settings=settings.proxy_settings, seed=settings.seed,
                                device=settings.device)
                out["accuracy"] = r.accuracy
                out["accuracy_se"] = getattr(r, "accuracy_se", None)  # older nas.training: the report derives it
                out["eval_images"] = getattr(r, "eval_images", None)
            except TrainingDivergedError as e:
                out["failure"] = str(e)
    out["duration_s"] = round(time.perf_counter() - t0, 3)
    return out


def score_presets(study: "optuna.Study", *, space: "SearchSpace", table: "LatencyTable | None",
                  settings: SearchSettings, threads: int | None = None,
                  progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Score the paper's ShuffleNetV2 presets like the trials, cached in the study (attribute ``presets``).

    A preset is trained once per study (a resumed or joined run reuses the stored score); which presets are
    trained follows ``settings.presets``.

    Args:
        study: the study (its ``presets`` attribute is the cache, updated after each preset).
        space, table, settings: as for :func:`nas.search.run_search`.
        threads: torch threads while training (default: leave torch's setting).
        progress: called with a line before each preset is trained.

    Returns:
        One dict per preset (see :func:`evaluate_config`) plus ``name``.

    Raises:
        DataError: the data cannot be loaded.
    """
    import torch

    cache: dict[str, Any] = dict(study.user_attrs.get("presets") or {})
    resolution = table.resolution if table is not None else space.resolution[0]
    out = []
    dataset = None
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        for name, p in PRESETS.items():
            cfg = p.with_resolution(resolution)
            want = settings.presets == "all"
            row = evaluate_config(cfg, space=space, table=table, settings=settings, train=False)
            want = want or (settings.presets == "feasible" and row["feasible"])
            cached = cache.get(name) or {}
            scored = any(cached.get(k) is not None for k in ("accuracy", "score", "failure"))
            if scored:  # trained by an earlier or another run of this study: reuse, never retrain
                row = {**row, **{k: cached[k] for k in ("accuracy", "accuracy_se", "eval_images", "score", "failure",
                                                           "duration_s") if k in cached}}
            elif want:
                if progress:
                    progress(f"training preset {name} for reference")
                if dataset is None:
                    from nas.training.data import load_data

                    dataset = load_data(settings.data, image_size=settings.proxy_settings.resolution)
                row = evaluate_config(cfg, space=space, table=table, settings=settings, train=True, dataset=dataset)
            row = {"name": name, **row}
            if row != cached:
                cache[name] = row
                study.set_user_attr("presets", cache)  # after each: an interrupted run keeps what it finished
            out.append(row)
    finally:
        torch.set_num_threads(old)
    return out
