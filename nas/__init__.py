"""nas: platform-aware neural architecture search over ShuffleNetV2-style spaces.

Latency is measured on the target device (block lookup tables), not estimated from FLOPs. "FLOPs" everywhere
in this project means multiply-adds, as in the ShuffleNetV2 paper (see :mod:`nas.units`).

The public API, for a notebook or a script (every function keyword-only past its first argument, typed, with
Args/Returns/Raises in its docstring)::

    import nas
    space = nas.load_space("search_spaces/shufflenetv2.toml")
    table = nas.build_table(space, nas.get_backend("cpu"), out="latency_tables/mine.json")   # or nas.load_table()
    nas.predict(nas.preset("1.0x"), table).latency_ms
    result = nas.run_search(space, budgets=["150MFLOPs"], table=table, n_trials=40, study="demo")
    nas.export_candidate(result.pareto[0], study=result.study_name, out_dir="found", formats=("json", "onnx"))
    nas.train("found/trial_0007.json", data="fashion-mnist", out_dir="runs/t7")

Stages live in subpackages (``backends latency training search export paper agent cli``; see the README's
architecture section). Heavy modules (torch, onnxruntime, optuna) are imported on first use, so ``import nas``
and ``nas --help`` stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nas._lazy import lazy_exports
from nas.arch import PRESETS, ArchConfig, BlockKey, StageConfig, load_config, preset
from nas.errors import (AgentError, BackendUnavailableError, BudgetError, ConfigError, DataError, ExportError,
                        MeasurementError, MissingEntriesError, NasError, SpaceError, StorageError, TableError,
                        TableMismatchError, TrainingDivergedError, UsageError)
from nas.units import Budget, parse_budget

__version__ = "0.1.0"

# name -> module it lives in (imported on first use)
_LAZY = {
    "build_model": "nas.builder",
    "build_block": "nas.builder",
    "count_macs": "nas.macs",
    "SearchSpace": "nas.space",
    "load_space": "nas.space",
    "get_backend": "nas.backends.registry",
    "available_backends": "nas.backends.registry",
    "build_table": "nas.latency.build",
    "load_table": "nas.latency.table",
    "LatencyTable": "nas.latency.table",
    "predict": "nas.latency.prediction",
    "Prediction": "nas.latency.prediction",
    "validate_table": "nas.latency.validate",
    "transfer_table": "nas.latency.transfer",
    "proxy_train": "nas.training.proxy",
    "ProxySettings": "nas.training.proxy",
    "load_data": "nas.training.data",
    "train": "nas.training.train",
    "TrainSettings": "nas.training.train",
    "run_search": "nas.search.run",
    "SearchResult": "nas.search.results",
    "TrialRecord": "nas.search.results",
    "open_study": "nas.search.storage",
    "export_candidate": "nas.export.formats",
    "load_checkpoint": "nas.checkpoint",
}

__all__ = [
    "__version__",
    # the core
    "ArchConfig", "StageConfig", "BlockKey", "PRESETS", "preset", "load_config", "Budget", "parse_budget",
    "build_model", "build_block", "count_macs", "SearchSpace", "load_space",
    # stages
    *[n for n in _LAZY if n not in ("build_model", "build_block", "count_macs", "SearchSpace", "load_space")],
    # errors
    "NasError", "UsageError", "SpaceError", "ConfigError", "BudgetError", "TableError", "TableMismatchError",
    "MissingEntriesError", "BackendUnavailableError", "MeasurementError", "DataError", "TrainingDivergedError",
    "AgentError", "StorageError", "ExportError",
]

if TYPE_CHECKING:  # pragma: no cover
    from nas.backends.registry import available_backends, get_backend
    from nas.builder import build_block, build_model
    from nas.checkpoint import load_checkpoint
    from nas.export.formats import export_candidate
    from nas.latency.build import build_table
    from nas.latency.prediction import Prediction, predict
    from nas.latency.table import LatencyTable, load_table
    from nas.latency.transfer import transfer_table
    from nas.latency.validate import validate_table
    from nas.macs import count_macs
    from nas.search.results import SearchResult, TrialRecord
    from nas.search.run import run_search
    from nas.search.storage import open_study
    from nas.space import SearchSpace, load_space
    from nas.training.data import load_data
    from nas.training.proxy import ProxySettings, proxy_train
    from nas.training.train import TrainSettings, train


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
