"""Build ``torch.nn.Module``s from an :class:`~nas.arch.ArchConfig` or a single :class:`~nas.arch.BlockKey`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Mapping

from torch import nn

from nas.arch import ArchConfig, BlockKey, load_config
from nas.blocks import BasicUnit, DownUnit, Head, Stem
from nas.errors import ConfigError

__all__ = ["ShuffleNetV2", "build_model", "build_block"]


class ShuffleNetV2(nn.Module):
    """stem -> stages of ShuffleNetV2 units -> head. ``blocks`` lists the same units as ``config.blocks()``."""

    def __init__(self, config: ArchConfig, *, num_classes: int = 1000, in_channels: int = 3,
                 stem: Literal["imagenet", "cifar"] = "imagenet") -> None:
        super().__init__()
        self.config = config
        self.stem = Stem(in_channels, config.stem_channels, kind=stem)
        stages = []
        cin = config.stem_channels
        for st in config.stages:
            units: list[nn.Module] = [DownUnit(cin, st.width, kernel=st.kernel, se=st.se, extra_dw=config.extra_dw)]
            units += [
                BasicUnit(st.width, split_ratio=st.split_ratio, kernel=st.kernel, se=st.se,
                          residual=config.residual, extra_dw=config.extra_dw)
                for _ in range(st.depth - 1)
            ]
            stages.append(nn.Sequential(*units))
            cin = st.width
        self.stages = nn.Sequential(*stages)
        self.head = Head(cin, config.head_channels, num_classes)

    def forward(self, x):
        return self.head(self.stages(self.stem(x)))


def build_model(config: "ArchConfig | Mapping[str, Any] | str | Path", num_classes: int = 1000, *,
                in_channels: int = 3, stem: Literal["imagenet", "cifar"] = "imagenet") -> ShuffleNetV2:
    """Build the network for ``config``.

    Args:
        config: an :class:`ArchConfig`, its JSON dict, a path to a JSON file (plain or as written by
            ``nas export``), or a preset name such as ``"shufflenetv2-1.0x"``.
        num_classes: classifier outputs.
        in_channels: input image channels (1 for grayscale).
        stem: ``"imagenet"`` (stride 2 + max-pool, the paper's) or ``"cifar"`` (stride 1, no pool) for 32² inputs.

    Raises:
        ConfigError: the config is invalid; the message names the field.
    """
    cfg = load_config(config)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes={num_classes!r}: must be a positive integer")
    return ShuffleNetV2(cfg, num_classes=num_classes, in_channels=in_channels, stem=stem)


def build_block(key: BlockKey, *, num_classes: int = 1000) -> nn.Module:
    """The module for one table entry; its input is ``(B, key.in_channels, key.resolution, key.resolution)``."""
    if key.kind == "stem":
        return Stem(key.in_channels, key.out_channels)
    if key.kind == "down":
        return DownUnit(key.in_channels, key.out_channels, kernel=key.kernel, se=key.se, extra_dw=key.extra_dw)
    if key.kind == "basic":
        return BasicUnit(key.out_channels, split_ratio=key.split_ratio, kernel=key.kernel, se=key.se,
                         residual=key.residual, extra_dw=key.extra_dw)
    if key.kind == "head":
        return Head(key.in_channels, key.out_channels, num_classes)
    raise ConfigError(f"block kind {key.kind!r}: unknown; expected stem, down, basic or head")
