"""The paper's platform study: the guideline experiments (G1-G4) and the Table 8 reference networks.

ShuffleNetV2 (Ma et al., 2018, Sec. 2) derives four guidelines from controlled experiments, each a
benchmark network of repeated blocks at (nearly) equal FLOPs, measured on a GPU and an ARM board.
:func:`guideline_experiments` rebuilds those networks; :func:`run_guidelines` measures them on any
:mod:`nas.backends` backend and says, for each guideline, whether it holds *on that device*.
:data:`REFERENCES` holds the Table 8 reference networks (ShuffleNetV2 presets, MobileNetV1/V2,
ShuffleNetV1 g=3) and :func:`run_compare` measures them end to end.

"FLOPs" means multiply-adds (MACs), as everywhere in ``nas`` (see :mod:`nas.units`). MACs of an
``nn.Module`` are counted by :func:`module_macs`: convolutions and linear layers only, which is what
``torch.utils.flop_counter.FlopCounterMode`` counts divided by two (cross-checked in the tests).

Benchmark designs (the paper's appendix; input 56x56, channel counts of the paper's "x1" GPU column,
multiplied by ``scale``; the networks of one experiment have MACs within 2 % of each other):

* G1: 10 blocks of two 1x1 convs, c1 -> c2 -> c1, ratios 1:1, 1:2, 1:6, 1:12; c1 = round(c/sqrt(r)).
* G2: 10 1x1 group convs c -> c with g = 1, 2, 4, 8; c = sqrt(g) * c1, rounded to a multiple of g.
* G3: 10 blocks of 1, 2 or 4 1x1 convs, in series (each c' -> c', c' = c/sqrt(k)) or in parallel
  (k convs c -> c/k on the same input, concatenated: the same MACs as one conv, split into k ops).
* G4: 10 ResNet bottlenecks (1x1 c -> c/4, 3x3, 1x1 c/4 -> c, BN), with/without ReLU and shortcut.

Verdicts (one rule for all four, :meth:`Experiment.criterion`): a guideline *holds* on a device if no
variant is clearly faster than the one the guideline favours (1:1, g=1, 1-fragment, no ReLU and no
shortcut) and the variants it warns against (1:12, g=8, both 4-fragment nets, ReLU + shortcut) are
clearly slower. "Clearly" means by more than the noise: the variants are timed in interleaved rounds,
the effect is the median of the per-round latency ratios and the noise half their range, at least 3 %.
Clear evidence against the rule is "does not hold"; a needed difference inside the noise is "inconclusive".
"""

from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence

from nas.errors import ConfigError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

__all__ = [
    "Variant",
    "Experiment",
    "guideline_experiments",
    "module_macs",
    "ReferenceNet",
    "REFERENCES",
    "reference_nets",
    "mobilenet_v1",
    "mobilenet_v2",
    "shufflenet_v1",
    "VariantResult",
    "GuidelineResult",
    "run_guidelines",
    "CompareRow",
    "run_compare",
    "compare_entries",
    "COMPLEXITY_GROUPS_MFLOPS",
    "complexity_group",
]

REPEATS = 10  # blocks per benchmark network (paper: "stacking 10 building blocks repeatedly")
GUIDELINE_RESOLUTION = 56  # paper: "Input image size is 56 x 56" for Tables 1-4
MIN_EFFECT_PCT = 3.0  # smallest speed difference called real: this VM's run-to-run noise is about +-3 %


# ======================================================================== counting
def module_macs(model: "nn.Module", input_shape: Sequence[int]) -> tuple[int, int]:
    """Multiply-adds and parameters of ``model`` for one input of ``input_shape`` (batch included).

    Counts conv and linear layers only (the paper's FLOPs; BN, ReLU, pooling, adds are free), per
    image: MACs are divided by the batch size.

    Returns:
        ``(macs, params)``; ``params`` counts trainable parameters.
    """
    import torch
    from torch import nn

    total = [0]

    def hook(mod: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        if isinstance(mod, nn.Conv2d):
            per_out = (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
            total[0] += out.numel() * per_out
        elif isinstance(mod, nn.Linear):
            total[0] += out.numel() * mod.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        was_training = model.training
        model.eval()
        # On the model's device: a model built under ``torch.device("meta")`` is counted without any
        # arithmetic (shapes only), which makes counting 19 reference nets take well under a second.
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        with torch.no_grad():
            model(torch.zeros(tuple(input_shape), device=device))
        model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total[0] // int(input_shape[0]), params


# ======================================================================== guideline networks
@dataclass(frozen=True)
class Variant:
    """One benchmark network of a guideline experiment.

    Attributes:
        label: the paper's row name, e.g. ``"1:6"``, ``"g=4"``, ``"4-fragment-series"``.
        channels: the channel counts that define it (paper's ``(c1, c2)``, ``c``), for the tables.
        input_shape: ``(batch, channels, 56, 56)`` at batch 1.
        build: returns a fresh, randomly initialised ``nn.Module`` in eval mode.
    """

    label: str
    channels: tuple[int, ...]
    input_shape: tuple[int, int, int, int]
    build: Callable[[], "nn.Module"] = field(compare=False, repr=False)


@dataclass(frozen=True)
class Experiment:
    """A guideline experiment: variants at equal MACs and the rule that decides whether it holds."""

    id: str
    title: str
    claim: str
    variants: tuple[Variant, ...]
    reference: str  # the label the guideline says is fastest
    slower: tuple[str, ...]  # labels the guideline says are clearly slower than ``reference``

    @property
    def criterion(self) -> str:
        """The written rule :func:`_verdict` applies (the same rule for every experiment)."""
        return (f"holds if no variant is clearly faster than {self.reference} and "
                f"{' and '.join(self.slower)} {'is' if len(self.slower) == 1 else 'are'} clearly slower than it; "
                f"'clearly' = by more than the noise (half the range of the per-round latency ratios, "
                f"at least {MIN_EFFECT_PCT:g} %)")


def _pointwise_stack(layers: Sequence[tuple[int, int, int]]) -> "nn.Module":
    from torch import nn

    return nn.Sequential(*[nn.Conv2d(ci, co, 1, groups=g, bias=False) for ci, co, g in layers]).eval()


def _fragment_net(c: int, k: int, mode: Literal["series", "parallel"], repeats: int) -> "nn.Module":
    import torch
    from torch import nn

    class Parallel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.convs = nn.ModuleList(nn.Conv2d(c, c // k, 1, bias=False) for _ in range(k))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([conv(x) for conv in self.convs], 1)

    if mode == "series" or k == 1:
        return _pointwise_stack([(c, c, 1)] * (k * repeats))
    return nn.Sequential(*[Parallel() for _ in range(repeats)]).eval()


def _bottleneck_net(c: int, relu: bool, shortcut: bool, repeats: int) -> "nn.Module":
    import torch
    from torch import nn

    mid = c // 4  # ResNet bottleneck: 4x expansion

    def cbr(ci: int, co: int, k: int, act: bool) -> list[nn.Module]:
        return [nn.Conv2d(ci, co, k, padding=k // 2, bias=False), nn.BatchNorm2d(co)] + ([nn.ReLU()] if act else [])

    class Bottleneck(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(*cbr(c, mid, 1, relu), *cbr(mid, mid, 3, relu), *cbr(mid, c, 1, False))
            self.out_act = nn.ReLU() if relu else nn.Identity()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.body(x)
            return self.out_act(y + x if shortcut else y)

    return nn.Sequential(*[Bottleneck() for _ in range(repeats)]).eval()


def _around(x: float) -> list[int]:
    """The integers just below and above ``x`` (at least 1)."""
    return sorted({max(1, math.floor(x)), max(1, math.ceil(x))})


def _balanced(candidates: Sequence[Sequence[tuple[int, float]]]) -> list[int]:
    """Pick one ``(channels, macs)`` per variant so that the variants' MACs spread least.

    Bounded: at most 2 candidates per variant and a handful of variants (2^4 combinations).
    """
    def spread(combo: Sequence[tuple[int, float]]) -> float:
        ms = [m for _, m in combo]
        return (max(ms) - min(ms)) / max(ms)

    return [ch for ch, _ in min(itertools.product(*candidates), key=spread)]


def guideline_experiments(*, scale: int = 1, resolution: int = GUIDELINE_RESOLUTION,
                          repeats: int = REPEATS) -> list[Experiment]:
    """The four controlled experiments of the paper's Sec. 2, at the paper's ``x1`` width times ``scale``.

    Args:
        scale: channel multiplier (the paper's x1, x2, x4 columns); MACs grow by ``scale**2``.
        resolution: input height and width in pixels (paper: 56).
        repeats: blocks (or layers) per benchmark network (paper: 10).

    Returns:
        Experiments G1..G4, each with variants whose MACs are within 2 % of each other.

    Raises:
        UsageError: a non-positive ``scale``, ``resolution`` or ``repeats``.
    """
    for name, v in (("scale", scale), ("resolution", resolution), ("repeats", repeats)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise UsageError(f"--{name} {v!r}: must be a positive integer")

    def shape(c: int) -> tuple[int, int, int, int]:
        return (1, c, resolution, resolution)

    # Channel counts are rounded down or up, whichever combination keeps the experiment's MACs closest.
    c = 128 * scale
    # G1 (paper Table 1 at x1: (128,128), (90,180), (52,312), (36,432); 1:12 becomes 37:444, because
    # 36:432 has 5 % fewer MACs than 128:128). MACs per block are proportional to c1 * c2.
    ratios = (1, 2, 6, 12)
    c1s = _balanced([[(c1, c1 * c1 * r) for c1 in _around(c / math.sqrt(r))] for r in ratios])
    g1 = [Variant(f"1:{r}", (c1, c1 * r), shape(c1),
                  lambda c1=c1, c2=c1 * r: _pointwise_stack([(c1, c2, 1), (c2, c1, 1)] * repeats))
          for r, c1 in zip(ratios, c1s)]
    # G2 (paper Table 2 at x1: c = 128, 180, 256, 360 for g = 1, 2, 4, 8). MACs per layer ~ c^2 / g.
    groups = (1, 2, 4, 8)
    cgs = _balanced([[(g * k, (g * k) ** 2 / g) for k in _around(c * math.sqrt(g) / g)] for g in groups])
    g2 = [Variant(f"g={g}", (cg,), shape(cg), lambda cg=cg, g=g: _pointwise_stack([(cg, cg, g)] * repeats))
          for g, cg in zip(groups, cgs)]
    # G3 (paper Table 3 at x1: c = 128 for 1-fragment; the others adjusted to the same MACs).
    # Series: k convs c' -> c' (MACs ~ k c'^2); parallel: k convs c -> c/k, concatenated (MACs ~ c^2).
    cs = _balanced([[(c, c * c)]] + [[(ck, k * ck * ck) for ck in _around(c / math.sqrt(k))] for k in (2, 4)])
    g3 = [Variant("1-fragment", (c,), shape(c), lambda: _fragment_net(c, 1, "series", repeats))]
    for k, ck in zip((2, 4), cs[1:]):
        g3.append(Variant(f"{k}-fragment-series", (ck,), shape(ck),
                          lambda ck=ck, k=k: _fragment_net(ck, k, "series", repeats)))
    for k in (2, 4):
        g3.append(Variant(f"{k}-fragment-parallel", (c,), shape(c),
                          lambda k=k: _fragment_net(c, k, "parallel", repeats)))
    # G4 (paper Table 4: c = 32, 64, 128 on GPU; x1 is c = 32). All variants have identical MACs.
    c4 = 32 * scale
    g4 = [
        Variant(f"ReLU={'yes' if relu else 'no'}, shortcut={'yes' if sc else 'no'}", (c4,), shape(c4),
                lambda relu=relu, sc=sc: _bottleneck_net(c4, relu, sc, repeats))
        for relu, sc in ((True, True), (True, False), (False, True), (False, False))  # paper's row order
    ]
    return [
        Experiment("G1", "Equal channel width minimizes memory access cost",
                   "1x1 convs with equal input and output channels are fastest at equal FLOPs",
                   tuple(g1), reference="1:1", slower=("1:12",)),
        Experiment("G2", "Excessive group convolution increases MAC",
                   "at equal FLOPs, more groups (and so more channels) are slower",
                   tuple(g2), reference="g=1", slower=("g=8",)),
        Experiment("G3", "Network fragmentation reduces degree of parallelism",
                   "at equal FLOPs, more fragments (in series or in parallel) are slower",
                   tuple(g3), reference="1-fragment", slower=("4-fragment-series", "4-fragment-parallel")),
        Experiment("G4", "Element-wise operations are non-negligible",
                   "removing ReLU and shortcut from a bottleneck makes it faster at the same FLOPs",
                   tuple(g4), reference="ReLU=no, shortcut=no", slower=("ReLU=yes, shortcut=yes",)),
    ]


# ======================================================================== reference networks (Table 8)
def _cbr(ci: int, co: int, k: int, stride: int = 1, *, groups: int = 1, act: str | None = "relu") -> list["nn.Module"]:
    from torch import nn

    layers: list[nn.Module] = [nn.Conv2d(ci, co, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(co)]
    if act == "relu":
        layers.append(nn.ReLU(inplace=True))
    elif act == "relu6":
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
        import nas

        return nas.build_model(nas.preset(preset_name)).eval()

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
        UsageError: an unknown name, or no reference net near the budget.
    """
    if names is not None:
        unknown = [n for n in names if n not in REFERENCES]
        if unknown:
            raise UsageError(f"reference net {unknown[0]!r}: unknown; choose from {sorted(REFERENCES)}")
        nets = [REFERENCES[n] for n in names]
    else:
        nets = list(REFERENCES.values())
    if budget_macs is not None:
        nets = [n for n in nets if abs(n.paper_mflops * 1e6 - budget_macs) <= tolerance * budget_macs]
        if not nets:
            raise UsageError(
                f"--budget {budget_macs / 1e6:g}MFLOPs: no reference network within {tolerance:.0%}; "
                f"Table 8 groups are at {', '.join(f'{g:g}' for g in COMPLEXITY_GROUPS_MFLOPS)} MFLOPs"
            )
    return nets


# ======================================================================== running
@dataclass(frozen=True)
class VariantResult:
    """One measured benchmark network (a row of the paper's Tables 1-4)."""

    label: str
    channels: tuple[int, ...]
    input_shape: tuple[int, ...]
    macs: int
    params: int
    latency_ms: float  # median per call (one batch)
    spread_pct: float  # interquartile range of the runs, % of the median
    round_medians_ms: tuple[float, ...]
    images_per_s: float
    relative_speed: float  # images/s relative to the experiment's first variant (paper's reference row)
    flagged: bool = False  # the backend kept a noisy result after its retries

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        for k in ("channels", "input_shape", "round_medians_ms"):
            d[k] = list(d[k])
        return d


@dataclass(frozen=True)
class GuidelineResult:
    """One guideline on one device: its variants and the verdict under its written criterion."""

    id: str
    title: str
    claim: str
    criterion: str
    reference: str  # the variant the guideline favours
    verdict: Literal["holds", "does not hold", "inconclusive"]
    reason: str
    macs_spread_pct: float  # (max - min) / max of the variants' MACs, %
    variants: tuple[VariantResult, ...]

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["variants"] = [v.to_dict() for v in self.variants]
        return d


def _compare(a: VariantResult, b: VariantResult) -> tuple[float, float]:
    """How much slower ``a`` is than ``b`` (%, negative: faster) and the noise (%) of that figure.

    Rounds are interleaved, so the ratio of ``a``'s and ``b``'s medians *within* a round cancels the
    machine's drift: the effect is the median of the per-round ratios and the noise half their range,
    at least :data:`MIN_EFFECT_PCT`. Without paired rounds (a remote backend reporting one round) the
    ratio of the overall medians is used, with half the larger interquartile spread as the noise.
    """
    ra, rb = a.round_medians_ms, b.round_medians_ms
    if len(ra) > 1 and len(ra) == len(rb):
        ratios = sorted(x / y for x, y in zip(ra, rb))
        effect = 100.0 * (statistics.median(ratios) - 1.0)
        noise = 50.0 * (ratios[-1] - ratios[0])
    else:
        effect = 100.0 * (a.latency_ms / b.latency_ms - 1.0)
        noise = 0.5 * max(a.spread_pct, b.spread_pct)
    return effect, max(MIN_EFFECT_PCT, noise)


def _verdict(exp: Experiment, results: Sequence[VariantResult]) -> tuple[str, str]:
    """Apply the experiment's criterion (see :func:`_compare` for "the noise").

    ``exp.reference`` must not be clearly slower than any variant, and every ``slower``
    variant must be clearly slower than the reference. Clear evidence against either part is
    "does not hold"; any needed difference inside the noise makes it "inconclusive".
    """
    by = {r.label: r for r in results}
    ref = by[exp.reference]
    beaten = []
    for r in results:
        if r is not ref:
            effect, noise = _compare(ref, r)
            if effect > noise:
                beaten.append(f"{r.label} is {effect:.1f} % faster (noise {noise:.1f} %)")
    gaps = {lab: _compare(by[lab], ref) for lab in exp.slower}
    desc = "; ".join(f"{lab} {e:+.1f} % (noise {n:.1f} %)" for lab, (e, n) in gaps.items())
    if beaten:
        return "does not hold", f"{ref.label} is not the fastest: " + "; ".join(beaten)
    if any(e < -n for e, n in gaps.values()):
        return "does not hold", f"vs {ref.label}: {desc}"
    if all(e > n for e, n in gaps.values()):
        return "holds", f"no variant clearly faster than {ref.label}; vs it: {desc}"
    return "inconclusive", f"vs {ref.label}: {desc}: not clearly slower"


def _settings_or_default(settings: Any) -> Any:
    """The latency tables' protocol for whole networks (:data:`nas.latency.table.NETWORK_SETTINGS`) by default:
    every benchmark net here is a whole network of 1-50 ms, like the tables' calibration networks."""
    from nas.latency.table import NETWORK_SETTINGS

    return settings if settings is not None else NETWORK_SETTINGS


def run_guidelines(backend: Any, *, scale: int = 1, resolution: int = GUIDELINE_RESOLUTION,
                   repeats: int = REPEATS, settings: Any = None, only: Sequence[str] | None = None,
                   on_step: Callable[[str], None] | None = None) -> list[GuidelineResult]:
    """Measure the guideline experiments on ``backend`` and judge each guideline.

    The variants of one experiment are timed together with interleaved rounds
    (:meth:`nas.backends.Backend.measure_many`, the latency tables' protocol), so drift of a busy
    machine hits all of them alike.

    Args:
        backend: a :class:`nas.backends.Backend` (its batch is prepended to each variant's input).
        scale, resolution, repeats: see :func:`guideline_experiments`.
        settings: a :class:`nas.backends.MeasureSettings` (default: the tables' network protocol).
        only: experiment ids to run (``["G1", "G3"]``); default all four.
        on_step: called with the experiment id before each experiment is measured (progress).

    Returns:
        One :class:`GuidelineResult` per experiment, in order.

    Raises:
        UsageError: an unknown id in ``only``.
        MeasurementError, AgentError, BackendUnavailableError: from the backend.
    """
    exps = guideline_experiments(scale=scale, resolution=resolution, repeats=repeats)
    if only:
        known = {e.id for e in exps}
        bad = [x for x in only if x.upper() not in known]
        if bad:
            raise UsageError(f"--only {bad[0]!r}: unknown experiment; choose from {sorted(known)}")
        exps = [e for e in exps if e.id in {x.upper() for x in only}]
    settings = _settings_or_default(settings)
    out = []
    for exp in exps:
        if on_step:
            on_step(exp.id)
        models = [v.build() for v in exp.variants]
        counts = [module_macs(m, v.input_shape) for m, v in zip(models, exp.variants)]
        meas = backend.measure_many(models, input_shapes=[v.input_shape[1:] for v in exp.variants],
                                    settings=settings)
        ref_ips = None
        results = []
        for v, (macs, params), m in zip(exp.variants, counts, meas):
            ips = backend.batch * 1000.0 / m.median_ms
            ref_ips = ref_ips or ips
            results.append(VariantResult(v.label, v.channels, (backend.batch, *v.input_shape[1:]), macs, params,
                                         m.median_ms, m.spread_pct, tuple(m.round_medians_ms), ips, ips / ref_ips,
                                         bool(getattr(m, "flagged", False))))
        verdict, reason = _verdict(exp, results)
        macs_all = [r.macs for r in results]
        out.append(GuidelineResult(exp.id, exp.title, exp.claim, exp.criterion, exp.reference, verdict, reason,
                                   100.0 * (max(macs_all) - min(macs_all)) / max(macs_all), tuple(results)))
    return out


# ======================================================================== Table 8 comparison
@dataclass(frozen=True)
class CompareRow:
    """One measured network of ``nas compare`` (the paper's Table 8 layout)."""

    name: str
    label: str
    source: str  # "reference" or the config file it came from
    resolution: int
    macs: int
    params: int
    group_mflops: int  # the paper's complexity group this row falls in
    latency_ms: float
    spread_pct: float
    images_per_s: float
    paper_mflops: float | None = None
    paper_top1_err: float | None = None
    paper_gpu_batches_s: float | None = None
    paper_arm_images_s: float | None = None
    predicted_latency_ms: float | None = None  # from a latency table, where one was given and covers it
    flagged: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class _Entry:
    name: str
    label: str
    source: str
    resolution: int
    build: Callable[[], "nn.Module"]
    ref: ReferenceNet | None = None
    config: Any = None


def compare_entries(*, nets: Sequence[ReferenceNet], configs: Sequence[str | Path] = ()) -> list[_Entry]:
    """Reference nets plus exported configs (plain or ``{"config": ..., "provenance": ...}`` JSON).

    Raises:
        ConfigError: a config file is missing or invalid (the message names the file).
    """
    import nas

    out = [_Entry(n.name, n.label, "reference", n.resolution, n.build, ref=n) for n in nets]
    for path in configs:
        cfg = nas.load_config(path)
        name = cfg.name or Path(path).stem
        out.append(_Entry(name, name, str(path), cfg.resolution,
                          lambda cfg=cfg: nas.build_model(cfg).eval(), config=cfg))
    return out


def run_compare(backend: Any, *, nets: Sequence[ReferenceNet], configs: Sequence[str | Path] = (),
                settings: Any = None, table: Any = None,
                on_step: Callable[[str], None] | None = None) -> list[CompareRow]:
    """Measure reference networks and exported search results end to end on ``backend``.

    The networks of one complexity group (:func:`complexity_group`) are timed together with
    interleaved rounds (the latency tables' protocol); groups are measured one after another.

    Args:
        backend: a :class:`nas.backends.Backend`; its batch size is used for every network.
        nets: reference networks (see :func:`reference_nets`).
        configs: exported ``ArchConfig`` JSON files (search results) to add as rows.
        settings: a :class:`nas.backends.MeasureSettings` (default: the tables' network protocol).
        table: an optional latency table; configs it covers also get its predicted latency.
        on_step: called before each complexity group is built and measured (progress).

    Returns:
        One :class:`CompareRow` per network, references first, in the given order.
        ``group_mflops`` is the group of the paper's complexity (references) or of the config's MACs.

    Raises:
        ConfigError: a config file is missing or invalid.
        MeasurementError, AgentError, BackendUnavailableError: from the backend.
    """
    entries = compare_entries(nets=nets, configs=configs)
    if not entries:
        raise UsageError("nas compare: nothing to measure; drop --budget/--only or give CONFIG.json files")
    settings = _settings_or_default(settings)
    # Measured one complexity group at a time (the paper's grouping): the nets of a group, which are the
    # ones compared with each other, share interleaved rounds, and only one group's models are in memory.
    groups: dict[int, list[int]] = {}
    for i, e in enumerate(entries):
        mflops = e.ref.paper_mflops * 1e6 if e.ref else _config_macs(e.config)
        groups.setdefault(complexity_group(mflops), []).append(i)
    rows: dict[int, CompareRow] = {}
    for group, idx in sorted(groups.items()):
        if on_step:
            on_step(f"~{group} MFLOPs: " + ", ".join(entries[i].name for i in idx))
        models = [entries[i].build() for i in idx]
        counts = [module_macs(m, (1, 3, entries[i].resolution, entries[i].resolution)) for m, i in zip(models, idx)]
        meas = backend.measure_many(models, input_shapes=[(3, entries[i].resolution, entries[i].resolution)
                                                          for i in idx], settings=settings)
        del models
        for i, (macs, params), m in zip(idx, counts, meas):
            e, r = entries[i], entries[i].ref
            rows[i] = CompareRow(
                e.name, e.label, e.source, e.resolution, macs, params, group, m.median_ms, m.spread_pct,
                backend.batch * 1000.0 / m.median_ms,
                paper_mflops=r.paper_mflops if r else None, paper_top1_err=r.paper_top1_err if r else None,
                paper_gpu_batches_s=r.paper_gpu_batches_s if r else None,
                paper_arm_images_s=r.paper_arm_images_s if r else None,
                predicted_latency_ms=_predict(table, e.config) if table is not None and e.config else None,
                flagged=bool(getattr(m, "flagged", False)),
            )
    return [rows[i] for i in range(len(entries))]


def _config_macs(config: Any) -> float:
    import nas

    return float(nas.count_macs(config).macs)


def _predict(table: Any, config: Any) -> float | None:
    """The table's latency prediction for ``config`` (ms), or None where the table does not cover it
    (another resolution, blocks outside its space)."""
    from nas.errors import NasError
    from nas.latency.table import predict

    try:
        return float(predict(config, table).latency_ms)
    except NasError:
        return None
