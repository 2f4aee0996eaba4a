"""ShuffleNetV2 building blocks (Ma et al., 2018, Fig. 3c/3d), with the space's extra knobs.

Basic unit (stride 1), input ``c`` channels, split ratio ``r``:

    x ─split─> x1 (c - c·r channels, untouched)
            └> x2 (c·r channels) ─1x1─BN─ReLU─ dw k×k ─BN─ 1x1─BN─ReLU ─[SE]─[+x2 if residual]─> y
    out = shuffle(concat(x1, y))

Down-sampling unit (stride 2, no split): two branches of ``c_out/2`` channels each; the left one is
``dw k×k s2 ─BN─ 1x1─BN─ReLU``, the right one is the basic branch with a stride-2 depthwise conv and
(if on) SE. Split ratios apply to basic units only.

Channel shuffle is always the paper's two-group shuffle of the concatenated output: reshape to
(N, 2, C/2, H, W), swap the two group axes, flatten. With the paper's r = 0.5 the two groups are exactly
[x1 | y], so every unit mixes identity and branch channels half and half. With r != 0.5 the halves are
cut at C/2 of [x1 | y], not at the split point, so the shuffle still interleaves two equal halves (the same
three cheap ops, no gather), and the next unit's branch (the last c·r channels after the shuffle) still
receives channels from both halves. ShuffleNetV2* (``extra_dw``) adds a 3x3 depthwise conv + BN before the
first 1x1 of each right branch, as in the paper's detection variant.
"""

from __future__ import annotations

import torch
from torch import nn

from nas.arch import SE_REDUCTION

__all__ = ["conv_bn", "SqueezeExcite", "channel_shuffle", "concat_shuffle", "Stem", "DownUnit", "BasicUnit", "Head"]


def conv_bn(cin: int, cout: int, kernel: int = 1, stride: int = 1, *, groups: int = 1, relu: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return layers


def dw_bn(c: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return conv_bn(c, c, kernel, stride, groups=c, relu=False)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation on ``channels``: global pool, 1x1 down by 4, ReLU, 1x1 up, sigmoid gate."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        mid = max(1, channels // SE_REDUCTION)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, mid, 1)
        self.act = nn.ReLU(inplace=True)
        self.expand = nn.Conv2d(mid, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


def channel_shuffle(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Two-group channel shuffle of ``x`` (already concatenated): reshape, swap groups, flatten."""
    return x.reshape(x.shape[0], 2, channels // 2, -1).transpose(1, 2).reshape(x.shape)


def concat_shuffle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``channel_shuffle(cat(a, b))`` for two equal halves, as one interleave: stack on a new axis after the
    channels and flatten. Same function, but the exported graph has no Transpose (a full copy) and no
    Shape/Gather chain per reshape: ~6 % faster end to end in onnxruntime (benchmarks/bench_onnx_lean.py)."""
    return torch.stack((a, b), 2).flatten(1, 2)


def _branch(cin: int, cout: int, kernel: int, stride: int, se: bool, extra_dw: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    if extra_dw:
        layers += dw_bn(cin, 3)
    layers += conv_bn(cin, cout, 1)
    layers += dw_bn(cout, kernel, stride)
    layers += conv_bn(cout, cout, 1)
    if se:
        layers.append(SqueezeExcite(cout))
    return nn.Sequential(*layers)


class Stem(nn.Module):
    """``imagenet``: 3x3 conv s2 + BN + ReLU + 3x3 max-pool s2 (224 -> 56). ``cifar``: 3x3 conv s1 + BN + ReLU,
    no pool, for small inputs (32 -> 32) so the last stage is not squeezed to 1x1."""

    def __init__(self, cin: int, cout: int, *, kind: str = "imagenet") -> None:
        super().__init__()
        if kind not in ("imagenet", "cifar"):
            raise ValueError(f"stem={kind!r}: must be 'imagenet' or 'cifar'")
        stride = 2 if kind == "imagenet" else 1
        self.conv = nn.Sequential(*conv_bn(cin, cout, 3, stride))
        self.pool = nn.MaxPool2d(3, 2, 1) if kind == "imagenet" else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(x))


class DownUnit(nn.Module):
    def __init__(self, cin: int, cout: int, *, kernel: int = 3, se: bool = False, extra_dw: bool = False) -> None:
        super().__init__()
        half = cout // 2
        self.out_channels = cout
        self.branch1 = nn.Sequential(*dw_bn(cin, kernel, 2), *conv_bn(cin, half, 1))
        self.branch2 = _branch(cin, half, kernel, 2, se, extra_dw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return concat_shuffle(self.branch1(x), self.branch2(x))


class BasicUnit(nn.Module):
    def __init__(self, channels: int, *, split_ratio: float = 0.5, kernel: int = 3, se: bool = False,
                 residual: bool = False, extra_dw: bool = False) -> None:
        super().__init__()
        self.channels = channels
        self.branch_channels = int(round(channels * split_ratio))
        self.residual = residual
        self.branch2 = _branch(self.branch_channels, self.branch_channels, kernel, 1, se, extra_dw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.split((self.channels - self.branch_channels, self.branch_channels), 1)
        y = self.branch2(x2)
        if self.residual:
            y = y + x2
        if 2 * self.branch_channels == self.channels:
            return concat_shuffle(x1, y)
        return channel_shuffle(torch.cat((x1, y), 1), self.channels)


class Head(nn.Module):
    """conv5 (1x1 conv-BN-ReLU), global average pool, fully connected classifier."""

    def __init__(self, cin: int, channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(*conv_bn(cin, channels, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.conv(x)), 1))
