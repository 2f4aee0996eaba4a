"""Is our exported ONNX lean? Preset 1.0x vs an independent straightforward ShuffleNetV2 1.0x (issue 4).

Acceptance: the ONNX that ``nas export`` writes for ``shufflenetv2-1.0x`` runs in onnxruntime (CPU, 1 thread,
224², batch 1) no slower than 1.05x a straightforward implementation written here in torchvision's style
(``chunk``, ``cat``, ``view``/``transpose`` shuffle; torchvision itself is not importable here), both exported
the same way (:func:`nas.export.formats.export_onnx_bytes`: opset 13, dynamic batch, TorchScript exporter) and timed in
interleaved rounds through :mod:`nas.backends` (thread-CPU clock, pinned core). The reference gets our weights
copied in by position, and the outputs must agree, so both graphs compute the very same function.

It also times a *patched* copy of our units (``--no-patched`` skips it): the change proposed for
``nas/blocks.py`` (owned by the lead), which interleaves the two halves with ``stack`` instead of
``cat`` + reshape + ``transpose`` + reshape, so ONNX gets Unsqueeze+Concat and a free Reshape in place of a
Concat, a Transpose (a full copy of the tensor) and the Shape/Gather/Unsqueeze/Concat chains that rebuild
each dynamic reshape target. The op counts of all graphs, raw and after ORT's optimiser, are printed.

    /work/venv/bin/python benchmarks/bench_onnx_lean.py [--repeats 3] [--min-time 1.0] [--no-patched]
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import tempfile
from typing import Any

import torch
from torch import nn

GOAL_RATIO = 1.05  # issue 4: ours <= 1.05x the straightforward implementation


# ----------------------------------------------------------------------------------------- the reference
# Written from the paper (Ma et al., 2018, Fig. 3c/d, Table 5) in torchvision's style, independent of nas.blocks.
def tv_channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    batchsize, num_channels, height, width = x.size()
    channels_per_group = num_channels // groups
    x = x.view(batchsize, groups, channels_per_group, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batchsize, num_channels, height, width)


class TvInvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        bf = oup // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False), nn.BatchNorm2d(inp),
                nn.Conv2d(inp, bf, 1, 1, 0, bias=False), nn.BatchNorm2d(bf), nn.ReLU(inplace=True))
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            nn.Conv2d(inp if stride > 1 else bf, bf, 1, 1, 0, bias=False), nn.BatchNorm2d(bf), nn.ReLU(inplace=True),
            nn.Conv2d(bf, bf, 3, stride, 1, groups=bf, bias=False), nn.BatchNorm2d(bf),
            nn.Conv2d(bf, bf, 1, 1, 0, bias=False), nn.BatchNorm2d(bf), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return tv_channel_shuffle(out, 2)


class TvShuffleNetV2(nn.Module):
    def __init__(self, repeats=(4, 8, 4), channels=(24, 116, 232, 464, 1024), num_classes: int = 1000) -> None:
        super().__init__()
        c = channels[0]
        self.conv1 = nn.Sequential(nn.Conv2d(3, c, 3, 2, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True))
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        stages = []
        inp = c
        for r, oup in zip(repeats, channels[1:4]):
            stages.append(nn.Sequential(TvInvertedResidual(inp, oup, 2), *[TvInvertedResidual(oup, oup, 1)
                                                                           for _ in range(r - 1)]))
            inp = oup
        self.stage2, self.stage3, self.stage4 = stages
        self.conv5 = nn.Sequential(nn.Conv2d(inp, channels[-1], 1, 1, 0, bias=False), nn.BatchNorm2d(channels[-1]),
                                   nn.ReLU(inplace=True))
        self.fc = nn.Linear(channels[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.stage4(self.stage3(self.stage2(x)))
        return self.fc(self.conv5(x).mean([2, 3]))


# ----------------------------------------------------------------------------------------- the proposed patch
def patched_units() -> tuple[type, type]:
    """Copies of nas.blocks' units with the proposed forward (the lead applies it to nas/blocks.py).

    BasicUnit, equal halves (split 0.5, the paper's): ``torch.stack((x1, y), 2).reshape_as(x)``: channel 2i is
    x1[i], 2i+1 is y[i], exactly the two-group shuffle of cat(x1, y); the output has the input's shape, so the
    reshape target is ``Shape(x)``. Other ratios keep cat + shuffle but reshape to 4-d ``(N, 2, C/2, H*W)`` and
    back with ``reshape_as(x)`` (one Gather instead of three). DownUnit: ``stack((b1, b2), 2).flatten(1, 2)``.
    """
    from nas import blocks

    class BasicUnit(blocks.BasicUnit):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x1, x2 = x.split((self.channels - self.branch_channels, self.branch_channels), 1)
            y = self.branch2(x2)
            if self.residual:
                y = y + x2
            if 2 * self.branch_channels == self.channels:
                return torch.stack((x1, y), 2).reshape_as(x)
            z = torch.cat((x1, y), 1)
            return z.reshape(z.shape[0], 2, self.channels // 2, -1).transpose(1, 2).reshape_as(x)

    class DownUnit(blocks.DownUnit):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.stack((self.branch1(x), self.branch2(x)), 2).flatten(1, 2)

    return BasicUnit, DownUnit


def build_patched(name: str) -> nn.Module:
    import nas.builder as builder

    saved = builder.BasicUnit, builder.DownUnit
    builder.BasicUnit, builder.DownUnit = patched_units()
    try:
        return builder.build_model(name)
    finally:
        builder.BasicUnit, builder.DownUnit = saved


# ----------------------------------------------------------------------------------------- graphs
def op_counts(onnx_bytes: bytes) -> dict[str, int]:
    import onnx

    graph = onnx.load_from_string(onnx_bytes).graph
    return dict(sorted(collections.Counter(n.op_type for n in graph.node).items()))


def optimized_bytes(onnx_bytes: bytes) -> bytes:
    """The graph onnxruntime actually runs (ORT_ENABLE_ALL, as measured), read back from its dump."""
    import onnxruntime as ort

    from nas.backends.onnxruntime import session_options

    with tempfile.TemporaryDirectory() as d:
        so = session_options(1)
        so.optimized_model_filepath = os.path.join(d, "opt.onnx")
        ort.InferenceSession(onnx_bytes, sess_options=so, providers=["CPUExecutionProvider"])
        with open(so.optimized_model_filepath, "rb") as f:
            return f.read()


def copy_weights(src: nn.Module, dst: nn.Module) -> None:
    """Copy parameters and buffers by position (both nets list the same layers in the same order)."""
    a, b = src.state_dict(), dst.state_dict()
    if [v.shape for v in a.values()] != [v.shape for v in b.values()]:
        raise SystemExit("reference and preset differ in layer shapes: not the same network")
    dst.load_state_dict(dict(zip(b.keys(), a.values())))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="interleaved measurements of all graphs (default 3)")
    ap.add_argument("--min-time", type=float, default=1.0, help="seconds of timed runs per graph per repeat")
    ap.add_argument("--no-patched", action="store_true", help="skip the patched copy of our units")
    args = ap.parse_args()

    import nas
    from nas.backends import MeasureSettings, get_backend
    from nas.export.checks import ONNX_OPSET, export_onnx_bytes

    torch.manual_seed(0)
    ours = nas.build_model("shufflenetv2-1.0x").eval()
    models: dict[str, nn.Module] = {"ours": ours, "reference": TvShuffleNetV2().eval()}
    copy_weights(ours, models["reference"])
    if not args.no_patched:
        models["patched"] = build_patched("shufflenetv2-1.0x").eval()
        copy_weights(ours, models["patched"])
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        y = ours(x)
        for k, m in models.items():
            diff = float((m(x) - y).abs().max())
            if diff > 1e-4:
                raise SystemExit(f"{k} computes another function than ours (max abs diff {diff:.3g})")
    shape = (1, 3, 224, 224)
    graphs = {k: export_onnx_bytes(m, input_shape=shape) for k, m in models.items()}

    print(f"ShuffleNetV2 1.0x, 224², ONNX opset {ONNX_OPSET}, dynamic batch; params "
          f"{sum(p.numel() for p in ours.parameters()):,} (all nets; weights copied, outputs equal)")
    print("\nop counts (exported graph | after ORT_ENABLE_ALL):")
    counts = {k: (op_counts(g), op_counts(optimized_bytes(g))) for k, g in graphs.items()}
    ops = sorted({op for raw, opt in counts.values() for op in (*raw, *opt)})
    print(f"  {'op':<18}" + "".join(f"{k:>22}" for k in graphs))
    for op in ops:
        print(f"  {op:<18}" + "".join(f"{counts[k][0].get(op, 0):>13} | {counts[k][1].get(op, 0):>5}" for k in graphs))
    print(f"  {'total':<18}" + "".join(f"{sum(counts[k][0].values()):>13} | {sum(counts[k][1].values()):>5}"
                                       for k in graphs))

    backend = get_backend("cpu", threads=1, batch=1)
    settings = MeasureSettings(rounds=5, min_time_s=args.min_time, max_repeats=2000)
    names = list(graphs)
    per: dict[str, list[float]] = {k: [] for k in names}
    ratios: dict[str, list[float]] = {k: [] for k in names if k != "reference"}
    print(f"\nonnxruntime CPU, 1 thread, batch 1 ({backend.identity()['cpu_model']}), {args.repeats} interleaved repeats:")
    for rep in range(args.repeats):
        order = names[rep % len(names):] + names[:rep % len(names)]  # rotate who goes first
        ms = backend.measure_many([graphs[k] for k in order], input_shapes=[shape] * len(order), settings=settings)
        got = {k: m for k, m in zip(order, ms)}
        # Paired per-round ratios: a slow phase of the machine hits the models of one round alike.
        for k in ratios:
            rr = [a / b for a, b in zip(got[k].round_medians_ms, got["reference"].round_medians_ms)]
            ratios[k].append(statistics.median(rr))
        for k in names:
            per[k].append(got[k].median_ms)
        print(f"  repeat {rep + 1}: " + ", ".join(f"{k} {got[k].median_ms:.3f} ms (±{got[k].spread_pct:.0f}%)"
                                                  for k in names))
    print()
    for k in names:
        print(f"  {k:<10} median {statistics.median(per[k]):.3f} ms")
    result: dict[str, Any] = {}
    for k, rs in ratios.items():
        r = statistics.median(rs)
        result[k] = r
        print(f"  {k}/reference = {r:.3f}  (repeats: {', '.join(f'{v:.3f}' for v in rs)})")
    ok = result["ours"] <= GOAL_RATIO
    print(f"\nacceptance (ours <= {GOAL_RATIO}x reference): {'PASS' if ok else 'FAIL'} at {result['ours']:.3f}x")
    if "patched" in result:
        print(f"proposed nas/blocks.py change: patched/ours = {result['patched'] / result['ours']:.3f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
