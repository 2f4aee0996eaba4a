"""nas: platform-aware neural architecture search over ShuffleNetV2-style spaces.

Latency is measured on the target device (block lookup tables), not estimated from FLOPs.
"FLOPs" everywhere in this project means multiply-adds, as in the ShuffleNetV2 paper (see :mod:`nas.units`).
Heavy modules (torch, onnxruntime, optuna) are imported lazily so ``import nas`` and ``nas --help`` stay fast.
The search and export entry points live in :mod:`nas.search.run` and :mod:`nas.export.formats` (module names, so not
re-exported here).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "ArchConfig",
    "StageConfig",
    "BlockKey",
    "PRESETS",
    "preset",
    "load_config",
    "Budget",
    "parse_budget",
    "NasError",
    "build_model",
    "build_block",
    "count_macs",
    "SearchSpace",
    "load_space",
    "build_table",
    "load_table",
    "proxy_train",
    "load_data",
    "load_checkpoint",
]

from nas.arch import PRESETS, ArchConfig, BlockKey, StageConfig, load_config, preset
from nas.errors import NasError
from nas.units import Budget, parse_budget

_LAZY = {
    "build_model": "nas.builder",
    "build_block": "nas.builder",
    "count_macs": "nas.macs",
    "SearchSpace": "nas.space",
    "load_space": "nas.space",
    "build_table": "nas.latency.table",
    "load_table": "nas.latency.table",
    "proxy_train": "nas.training.proxy",
    "load_data": "nas.training.data",
    "load_checkpoint": "nas.export.formats",
}

if TYPE_CHECKING:  # pragma: no cover
    from nas.builder import build_block, build_model
    from nas.macs import count_macs
    from nas.training.data import load_data
    from nas.export.formats import load_checkpoint
    from nas.training.proxy import proxy_train
    from nas.space import SearchSpace, load_space
    from nas.latency.table import build_table, load_table


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nas' has no attribute {name!r}")
