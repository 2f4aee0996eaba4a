"""The paper's guideline experiments (G1-G4): equal-FLOPs benchmark networks, their measurement, the verdicts.

ShuffleNetV2 (Ma et al., 2018, Sec. 2) derives four guidelines from controlled experiments, each a
benchmark network of repeated blocks at (nearly) equal FLOPs, measured on a GPU and an ARM board.
:func:`guideline_experiments` rebuilds those networks; :func:`run_guidelines` measures them on any
:mod:`nas.backends` backend and says, for each guideline, whether it holds *on that device*.

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
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence

from nas.errors import UsageError
from nas.paper.counting import module_macs
from nas.paper.settings import default_settings

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

__all__ = ["Experiment", "GUIDELINE_RESOLUTION", "GuidelineResult", "MIN_EFFECT_PCT", "REPEATS", "Variant",
           "VariantResult", "guideline_experiments", "run_guidelines"]

REPEATS = 10  # blocks per benchmark network (paper: "stacking 10 building blocks repeatedly")
GUIDELINE_RESOLUTION = 56  # paper: "Input image size is 56 x 56" for Tables 1-4
MIN_EFFECT_PCT = 3.0  # smallest speed difference called real: this VM's run-to-run noise is about +-3 %

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

    from nas.blocks import conv_bn

    mid = c // 4  # ResNet bottleneck: 4x expansion

    class Bottleneck(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(*conv_bn(c, mid, 1, relu=relu), *conv_bn(mid, mid, 3, relu=relu),
                                      *conv_bn(mid, c, 1, relu=False))
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
        UsageError: a non-positive ``scale``, ``resolution`` or ``repeats`` (the field names it).
    """
    for name, v in (("scale", scale), ("resolution", resolution), ("repeats", repeats)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise UsageError(f"{name} {v!r}: must be a positive integer", field=name)

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
        UsageError: an unknown id in ``only`` (field ``only``).
        MeasurementError, AgentError, BackendUnavailableError: from the backend.
    """
    exps = guideline_experiments(scale=scale, resolution=resolution, repeats=repeats)
    if only:
        known = {e.id for e in exps}
        bad = [x for x in only if x.upper() not in known]
        if bad:
            raise UsageError(f"only {bad[0]!r}: unknown experiment; choose from {sorted(known)}", field="only")
        exps = [e for e in exps if e.id in {x.upper() for x in only}]
    settings = default_settings(settings)
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
