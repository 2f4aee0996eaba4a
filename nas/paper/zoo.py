"""The Table 8 reference networks that ``nas`` can build: ShuffleNetV2 presets, MobileNetV1/V2, ShuffleNetV1
(g=3), with the paper's published columns, and the paper's complexity groups.

The registry :data:`REFERENCES` is filled when this module is imported (no file is read); it refuses a
duplicate name. Conv-BN(-ReLU) layers are :func:`nas.blocks.conv_bn`, the one helper of the package.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

from nas.errors import ConfigError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

__all__ = ["COMPLEXITY_GROUPS_MFLOPS", "REFERENCES", "ReferenceNet", "complexity_group", "mobilenet_v1",
           "mobilenet_v2", "reference_nets", "shufflenet_v1"]


def _cbr(ci: int, co: int, k: int, stride: int = 1, *, groups: int = 1, act: str | None = "relu") -> list["nn.Module"]:
    """:func:`nas.blocks.conv_bn` with the activation these networks use: ReLU, ReLU6 (MobileNetV2) or none."""
    from torch import nn

    from nas.blocks import conv_bn

    layers = conv_bn(ci, co, k, stride, groups=groups, relu=act == "relu")
    if act == "relu6":
        layers.append(nn.ReLU6(inplace=True))
    return layers


def _classifier_net(features: list["nn.Module"], channels: int, num_classes: int) -> "nn.Module":
    from torch import nn

    return nn.Sequential(*features, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)).eval()


def mobilenet_v1(width: float = 1.0, *, num_classes: int = 1000) -> "nn.Module":
    """MobileNetV1 (Howard et al., 2017): 3x3 conv s2, 13 depthwise-separable blocks, pool, FC.

    Channels are ``int(c * width)``, at least 8 (TF-slim's ``depth``). 1.0: 569 M MACs, 4.2 M params.
    """
    def ch(cc: int) -> int:
        return max(8, int(cc * width))

    plan = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    cin = ch(32)
    layers = _cbr(3, cin, 3, 2)
    for cout, s in plan:
        layers += _cbr(cin, cin, 3, s, groups=cin) + _cbr(cin, ch(cout), 1)
        cin = ch(cout)
    return _classifier_net(layers, cin, num_classes)


def _make_divisible(v: float, divisor: int = 8) -> int:
    # MobileNetV2 / torchvision rule: round to a multiple of 8, never below 90 % of v.
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def mobilenet_v2(width: float = 1.0, *, num_classes: int = 1000) -> "nn.Module":
    """MobileNetV2 (Sandler et al., 2018) as in torchvision: inverted residuals, ReLU6, linear bottlenecks.

    1.0 at 224x224: 300 M MACs, 3.5 M params.
    """
    import torch
    from torch import nn

    class InvertedResidual(nn.Module):
        def __init__(self, ci: int, co: int, stride: int, t: int) -> None:
            super().__init__()
            hidden = round(ci * t)
            layers = _cbr(ci, hidden, 1, act="relu6") if t != 1 else []
            layers += _cbr(hidden, hidden, 3, stride, groups=hidden, act="relu6") + _cbr(hidden, co, 1, act=None)
            self.conv = nn.Sequential(*layers)
            self.use_res = stride == 1 and ci == co

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.conv(x) if self.use_res else self.conv(x)

    plan = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    cin = _make_divisible(32 * width)
    last = _make_divisible(1280 * max(1.0, width))
    layers: list[nn.Module] = _cbr(3, cin, 3, 2, act="relu6")
    for t, c, n, s in plan:
        cout = _make_divisible(c * width)
        for i in range(n):
            layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
            cin = cout
    layers += _cbr(cin, last, 1, act="relu6")
    return _classifier_net(layers, last, num_classes)


def shufflenet_v1(width: float = 1.0, *, groups: int = 3, num_classes: int = 1000) -> "nn.Module":
    """ShuffleNetV1 (Zhang et al., 2018) as in Megvii's ShuffleNet-Series: stages of 4, 8, 4 units.

    Stage widths for g=3 at 1x are 240, 480, 960 (stem 24); ``width`` scales all of them. Bottleneck =
    stage width / 4; the first unit of each stage has stride 2 and concatenates a 3x3 average-pooled
    shortcut; the very first 1x1 conv is not grouped (24 input channels). 1x g=3: 138 M MACs, 1.9 M params.
    """
    import torch
    from torch import nn

    base = {3: (24, 240, 480, 960), 8: (24, 384, 768, 1536), 1: (24, 144, 288, 576), 2: (24, 200, 400, 800),
            4: (24, 272, 544, 1088)}
    if groups not in base:
        raise ConfigError(f"groups={groups}: ShuffleNetV1 is defined for g in {sorted(base)}")
    widths = [int(c * width) for c in base[groups]]
    if width < 1.0:  # Megvii's 0.5x keeps the stage widths divisible by the groups
        widths[0] = int(24 * width)

    class Unit(nn.Module):
        def __init__(self, ci: int, co: int, stride: int, first: bool) -> None:
            super().__init__()
            mid = co // 4
            out = co - ci if stride == 2 else co
            self.stride, self.g1 = stride, (1 if first else groups)
            self.pw1 = nn.Sequential(*_cbr(ci, mid, 1, groups=self.g1))
            self.dw = nn.Sequential(*_cbr(mid, mid, 3, stride, groups=mid, act=None))
            self.pw2 = nn.Sequential(*_cbr(mid, out, 1, groups=groups, act=None))
            self.pool = nn.AvgPool2d(3, 2, 1) if stride == 2 else None
            self.act = nn.ReLU(inplace=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.pw1(x)
            if self.g1 > 1:  # channel shuffle between the two group convs
                n, c, h, w = y.shape
                y = y.reshape(n, self.g1, c // self.g1, h, w).transpose(1, 2).reshape(n, c, h, w)
            y = self.pw2(self.dw(y))
            if self.pool is not None:
                return torch.cat((self.pool(x), self.act(y)), 1)
            return self.act(x + y)

    layers: list[nn.Module] = _cbr(3, widths[0], 3, 2) + [nn.MaxPool2d(3, 2, 1)]
    cin = widths[0]
    for i, (reps, cout) in enumerate(zip((4, 8, 4), widths[1:])):
        for j in range(reps):
            layers.append(Unit(cin, cout, 2 if j == 0 else 1, first=(i == 0 and j == 0)))
            cin = cout
    return _classifier_net(layers, cin, num_classes)


@dataclass(frozen=True)
class ReferenceNet:
    """A Table 8 row that ``nas`` can build.

    Attributes:
        name: registry key, e.g. ``mobilenetv2-0.75``.
        label: the paper's row name.
        resolution: input size in pixels (the paper used 160 and 192 for two MobileNetV2 rows).
        paper_mflops: the paper's complexity column (MACs, millions).
        paper_top1_err, paper_gpu_batches_s, paper_arm_images_s: the paper's other columns.
        build: returns a fresh ``nn.Module`` in eval mode taking ``(B, 3, resolution, resolution)``.
    """

    name: str
    label: str
    resolution: int
    paper_mflops: float
    paper_top1_err: float
    paper_gpu_batches_s: float
    paper_arm_images_s: float
    build: Callable[[], "nn.Module"] = field(compare=False, repr=False)


REFERENCES: dict[str, ReferenceNet] = {}


def _ref(name: str, label: str, res: int, mflops: float, err: float, gpu: float, arm: float,
         build: Callable[[], "nn.Module"]) -> None:
    if name in REFERENCES:
        raise ValueError(f"reference network {name!r} registered twice")
    REFERENCES[name] = ReferenceNet(name, label, res, mflops, err, gpu, arm, build)


def _snv2(preset_name: str) -> Callable[[], "nn.Module"]:
    def build() -> "nn.Module":
        from nas.arch import preset
        from nas.builder import build_model

        return build_model(preset(preset_name)).eval()

    return build


# The paper's Table 8, rows that are built here (DenseNet, Xception, IGCV, CondenseNet, NASNet are not).
for _n, _l, _r, _m, _e, _g, _a, _b in [
    ("shufflenetv2-0.5x", "ShuffleNet v2 0.5x", 224, 41, 39.7, 417, 57.0, _snv2("shufflenetv2-0.5x")),
    ("mobilenetv1-0.25", "0.25 MobileNet v1", 224, 41, 49.4, 502, 36.4, lambda: mobilenet_v1(0.25)),
    ("mobilenetv2-0.4", "0.4 MobileNet v2 (160x160)", 160, 43, 43.4, 333, 33.2, lambda: mobilenet_v2(0.4)),
    ("mobilenetv2-0.15", "0.15 MobileNet v2", 224, 39, 55.1, 351, 33.6, lambda: mobilenet_v2(0.15)),
    ("shufflenetv1-g3-0.5x", "ShuffleNet v1 0.5x (g=3)", 224, 38, 43.2, 347, 56.8, lambda: shufflenet_v1(0.5)),
    ("shufflenetv2-1.0x", "ShuffleNet v2 1x", 224, 146, 30.6, 341, 24.4, _snv2("shufflenetv2-1.0x")),
    ("mobilenetv1-0.5", "0.5 MobileNet v1", 224, 149, 36.3, 382, 16.5, lambda: mobilenet_v1(0.5)),
    ("mobilenetv2-0.75", "0.75 MobileNet v2 (192x192)", 192, 145, 32.1, 235, 15.9, lambda: mobilenet_v2(0.75)),
    ("mobilenetv2-0.6", "0.6 MobileNet v2", 224, 141, 33.3, 249, 14.9, lambda: mobilenet_v2(0.6)),
    ("shufflenetv1-g3-1.0x", "ShuffleNet v1 1x (g=3)", 224, 140, 32.6, 213, 21.8, lambda: shufflenet_v1(1.0)),
    ("shufflenetv2-1.5x", "ShuffleNet v2 1.5x", 224, 299, 27.4, 255, 11.8, _snv2("shufflenetv2-1.5x")),
    ("mobilenetv1-0.75", "0.75 MobileNet v1", 224, 325, 31.6, 314, 10.6, lambda: mobilenet_v1(0.75)),
    ("mobilenetv2-1.0", "1.0 MobileNet v2", 224, 300, 28.0, 180, 8.9, lambda: mobilenet_v2(1.0)),
    ("shufflenetv1-g3-1.5x", "ShuffleNet v1 1.5x (g=3)", 224, 292, 28.5, 164, 10.3, lambda: shufflenet_v1(1.5)),
    ("shufflenetv2-2.0x", "ShuffleNet v2 2x", 224, 591, 25.1, 217, 6.7, _snv2("shufflenetv2-2.0x")),
    ("mobilenetv1-1.0", "1.0 MobileNet v1", 224, 569, 29.4, 247, 6.5, lambda: mobilenet_v1(1.0)),
    ("mobilenetv2-1.4", "1.4 MobileNet v2", 224, 585, 25.3, 137, 5.4, lambda: mobilenet_v2(1.4)),
    ("shufflenetv1-g3-2.0x", "ShuffleNet v1 2x (g=3)", 224, 524, 26.3, 197, 6.4, lambda: shufflenet_v1(2.0)),
    ("shufflenetv2-2.0x-se", "ShuffleNet v2 2x (with SE)", 224, 597, 24.6, 161, 5.6, _snv2("shufflenetv2-2.0x-se")),
]:
    _ref(_n, _l, _r, _m, _e, _g, _a, _b)

# The paper groups Table 8 by complexity around these MACs (millions).
COMPLEXITY_GROUPS_MFLOPS = (40.0, 140.0, 300.0, 550.0)


def complexity_group(macs: float) -> int:
    """The paper's complexity group (40, 140, 300 or 550 MFLOPs) nearest to ``macs`` on a log scale."""
    m = max(macs / 1e6, 1e-9)
    return int(min(COMPLEXITY_GROUPS_MFLOPS, key=lambda g: abs(math.log(m / g))))


def reference_nets(*, budget_macs: float | None = None, tolerance: float = 0.3,
                   names: Sequence[str] | None = None) -> list[ReferenceNet]:
    """Registered reference networks, optionally only those near a MAC budget.

    Args:
        budget_macs: keep nets whose paper complexity is within ``tolerance`` of this many MACs.
        tolerance: relative half-width of the complexity window (0.3 keeps 105-195 M at 150 M).
        names: keep only these registry names (in this order).

    Raises:
        UsageError: an unknown name (field ``only``), or no reference net near the budget (field ``budget``).
    """
    if names is not None:
        unknown = [n for n in names if n not in REFERENCES]
        if unknown:
            raise UsageError(f"reference net {unknown[0]!r}: unknown; choose from {sorted(REFERENCES)}", field="only")
        nets = [REFERENCES[n] for n in names]
    else:
        nets = list(REFERENCES.values())
    if budget_macs is not None:
        nets = [n for n in nets if abs(n.paper_mflops * 1e6 - budget_macs) <= tolerance * budget_macs]
        if not nets:
            raise UsageError(
                f"budget {budget_macs / 1e6:g}MFLOPs: no reference network within {tolerance:.0%}; "
                f"Table 8 groups are at {', '.join(f'{g:g}' for g in COMPLEXITY_GROUPS_MFLOPS)} MFLOPs",
                field="budget")
    return nets
