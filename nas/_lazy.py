"""Lazy re-exports: a package names what it offers without importing it, so ``import nas`` and ``nas --help``
stay free of torch, onnxruntime and optuna (tests/test_architecture.py). The one implementation of the
module-level ``__getattr__``/``__dir__`` pair every package ``__init__`` uses."""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Mapping

__all__ = ["lazy_exports"]


def lazy_exports(module: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for the module named ``module``.

    Args:
        module: the package's ``__name__``.
        exports: public name -> the module that defines it (imported on first access).

    Returns:
        The two functions, to be bound as the module's ``__getattr__`` and ``__dir__``.
    """

    def __getattr__(name: str) -> Any:
        home = exports.get(name)
        if home is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        return getattr(importlib.import_module(home), name)

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[module])) | set(exports))

    return __getattr__, __dir__
