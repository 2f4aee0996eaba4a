"""The ``.pt`` checkpoint format of a network with its config: written by full training and by export.

A checkpoint is a plain dict (tensors, strings and numbers only, so ``torch.load(path, weights_only=True)``
reads it): ``format`` (:data:`CHECKPOINT_FORMAT`), ``config`` (the :class:`~nas.arch.ArchConfig` JSON),
``num_classes``, ``in_channels``, ``stem``, ``state_dict`` (``build_model``'s keys) and ``provenance`` (JSON).
It lives in the core because both :mod:`nas.training` (which writes trained weights) and :mod:`nas.export`
(which writes and reads them) use it, and neither may import the other.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from nas.arch import ArchConfig
from nas.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

__all__ = ["CHECKPOINT_FORMAT", "checkpoint_dict", "read_checkpoint", "load_checkpoint"]

CHECKPOINT_FORMAT = "nas-state-dict/1"


def checkpoint_dict(model: "nn.Module", config: ArchConfig, *, num_classes: int, in_channels: int, stem: str,
                    provenance: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``.pt`` payload for ``model`` (built by ``build_model`` from ``config``; plain keys, any device).

    Args:
        model: the network (its ``state_dict`` is copied to the CPU).
        config: its architecture.
        num_classes / in_channels / stem: what ``build_model`` needs besides the config to rebuild it.
        provenance: JSON-able facts about where the weights come from (training run, search trial).

    Returns:
        The dict to ``torch.save``.
    """
    return {
        "format": CHECKPOINT_FORMAT,
        "config": config.to_json(indent=None),
        "num_classes": int(num_classes),
        "in_channels": int(in_channels),
        "stem": stem,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "provenance": json.dumps(dict(provenance or {}), default=str),
    }


def read_checkpoint(path: "str | Path") -> dict[str, Any]:
    """The checkpoint dict stored at ``path`` (CPU tensors), checked to be of :data:`CHECKPOINT_FORMAT`.

    Raises:
        ConfigError: missing, unreadable, or not a nas checkpoint (``field="weights"``).
    """
    import torch

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: checkpoint not found", field="weights")
    try:
        ck = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a corrupt or foreign file
        raise ConfigError(f"{p}: not a readable checkpoint ({str(e).splitlines()[0][:120]})", field="weights") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"{p}: not a nas checkpoint (format {CHECKPOINT_FORMAT}); write one with an export to "
                          "the pt format or a full training run", field="weights")
    return ck


def load_checkpoint(path: "str | Path") -> "nn.Module":
    """Rebuild the network stored at ``path`` (written by an export to ``pt`` or by full training), in eval mode.

    Args:
        path: the ``.pt`` file.

    Returns:
        The network with its weights.

    Raises:
        ConfigError: the file is missing, corrupt, not a nas checkpoint, or its weights do not fit its config
            (``field="weights"``).
    """
    from nas.builder import build_model

    ck = read_checkpoint(path)
    model = build_model(ArchConfig.from_json(ck["config"]), ck["num_classes"], in_channels=ck["in_channels"],
                        stem=ck["stem"])
    try:
        model.load_state_dict(ck["state_dict"])
    except RuntimeError as e:
        raise ConfigError(f"{path}: weights do not fit the stored config ({str(e).splitlines()[0][:120]})",
                          field="weights") from None
    return model.eval()
