"""Analytic MAC and parameter counts from a config alone (no model built), for use inside the search.

MACs are the paper's "FLOPs" (see :mod:`nas.units`): multiply-adds of every convolution and the fully
connected layer, exactly what ``torch.utils.flop_counter.FlopCounterMode`` counts divided by two (it counts
2 flops per multiply-add and nothing for BN, ReLU, pooling, SE's multiply or the shuffle). Params are
trainable parameters (conv and FC weights and biases, BN's weight and bias; BN running stats are buffers).
Tests check both against PyTorch on every preset and on hundreds of sampled configs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from nas.arch import SE_REDUCTION, ArchConfig, BlockKey, conv_out

__all__ = ["MacCount", "count_macs", "block_macs"]


@dataclass(frozen=True)
class MacCount:
    macs: int
    params: int

    def __add__(self, other: "MacCount") -> "MacCount":
        return MacCount(self.macs + other.macs, self.params + other.params)

    @property
    def mflops(self) -> float:
        """MACs in millions (the paper's MFLOPs)."""
        return self.macs / 1e6


def _conv(cin: int, cout: int, k: int, out_hw: int, groups: int = 1, bias: bool = False, bn: bool = True) -> MacCount:
    w = cout * (cin // groups) * k * k
    return MacCount(w * out_hw * out_hw, w + (cout if bias else 0) + (2 * cout if bn else 0))


def _se(c: int) -> MacCount:
    mid = max(1, c // SE_REDUCTION)
    return _conv(c, mid, 1, 1, bias=True, bn=False) + _conv(mid, c, 1, 1, bias=True, bn=False)


def _branch(cin: int, cout: int, k: int, res_in: int, res_out: int, se: bool, extra_dw: bool) -> MacCount:
    m = MacCount(0, 0)
    if extra_dw:
        m += _conv(cin, cin, 3, res_in, groups=cin)
    m += _conv(cin, cout, 1, res_in)
    m += _conv(cout, cout, k, res_out, groups=cout)
    m += _conv(cout, cout, 1, res_out)
    if se:
        m += _se(cout)
    return m


@lru_cache(maxsize=65536)
def block_macs(key: BlockKey, num_classes: int = 1000, stem_stride: int = 2) -> MacCount:
    """MACs/params of one block (cached: the search asks for the same blocks again and again)."""
    r = key.resolution
    if key.kind == "stem":
        return _conv(key.in_channels, key.out_channels, 3, conv_out(r, stem_stride))
    if key.kind == "down":
        half = key.out_channels // 2
        ro = conv_out(r)
        left = _conv(key.in_channels, key.in_channels, key.kernel, ro, groups=key.in_channels)
        left += _conv(key.in_channels, half, 1, ro)
        return left + _branch(key.in_channels, half, key.kernel, r, ro, key.se, key.extra_dw)
    if key.kind == "basic":
        cb = int(round(key.out_channels * key.split_ratio))
        return _branch(cb, cb, key.kernel, r, r, key.se, key.extra_dw)
    if key.kind == "head":
        conv = _conv(key.in_channels, key.out_channels, 1, r)
        fc = MacCount(key.out_channels * num_classes, key.out_channels * num_classes + num_classes)
        return conv + fc
    raise ValueError(f"block kind {key.kind!r}")


def count_macs(config: ArchConfig, *, num_classes: int = 1000, in_channels: int = 3,
               stem: Literal["imagenet", "cifar"] = "imagenet") -> MacCount:
    """Total MACs and params of ``build_model(config, num_classes, in_channels=..., stem=...)`` at
    ``config.resolution``, computed from the config alone (microseconds; no torch)."""
    blocks = config.blocks()
    if stem == "cifar":  # stride-1 stem, no pool: every later block sees a 4x larger input side
        r = config.resolution
        shifted = []
        for b in blocks[1:]:
            shifted.append(BlockKey(b.kind, r, b.in_channels, b.out_channels, b.split_ratio, b.se, b.kernel,
                                    b.residual, b.extra_dw))
            r = shifted[-1].out_resolution
        stem_key = BlockKey("stem", config.resolution, in_channels, config.stem_channels)
        total = block_macs(stem_key, num_classes, 1)
        blocks = shifted
    else:
        stem_key = BlockKey("stem", config.resolution, in_channels, config.stem_channels)
        total = block_macs(stem_key, num_classes)
        blocks = blocks[1:]
    for b in blocks:
        total += block_macs(b, num_classes)
    return total
