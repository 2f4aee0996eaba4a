"""The cold-weights pass: a big block timed as copies that evict each other's weights from the caches.

Alone, a block re-runs with its weights in cache; in a 20 MB network on a 32 MB-L3 VM it streams them from
memory (measured here: a 976-wide stage-3 unit 0.24 ms alone, 0.30 ms cold; such networks ran 20-40 % over the
sum of their blocks). So a block whose weights exceed :data:`COLD_MIN_BYTES` is timed a second way, as
:func:`cold_copies` independent copies on one input (enough copies for :data:`COLD_TARGET_BYTES` of weights, at
most :data:`COLD_MAX_COPIES`). The copies are made on the ONNX graph (:func:`replicate_onnx`) where the backend
runs ONNX, as modules (:func:`copies_module`) otherwise. Predictions blend warm and cold entries by the
network's weight bytes (:func:`nas.latency.calibrate.cold_share`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nas.arch import BlockKey
from nas.backends.base import MeasureSettings
from nas.latency.probe import paired
from nas.latency.rounding import sig

if TYPE_CHECKING:  # pragma: no cover
    from nas.backends.base import Backend

__all__ = ["COLD_MIN_BYTES", "COLD_TARGET_BYTES", "COLD_MAX_COPIES", "ColdRun", "weight_bytes", "cold_copies",
           "copies_module", "replicate_onnx", "measure_cold"]

COLD_MIN_BYTES = 512 * 1024  # below this a block's cold time is taken as its warm time (threshold empirical)
COLD_TARGET_BYTES = 32 * 1024 * 1024  # copies together hold 32 MiB of weights: the build VM's L3 size
COLD_MAX_COPIES = 32  # bounds a cold run's model size and time (16-60 ms per call)
REPLICA_WEIGHT_STEP = 1e-3  # copy i's float initializers are scaled by 1 + i * step: no runtime can share them


@dataclass(frozen=True)
class ColdRun:
    """One cold-weights measurement of a block, per copy. Stored in a table file as the list
    ``[t, raw_ms, probe_ms, ratio, spread_pct, n, copies]`` (:meth:`to_list`).

    Attributes:
        t: unix time of the measurement (s), on the probe timeline.
        raw_ms: time per copy at the machine's speed then (the call's median / copies).
        probe_ms: the reference probe's median in the same rounds.
        ratio: median over rounds of (call / probe), per copy.
        spread_pct: spread of the per-round times (%).
        n: timed runs (an int when measured; a float once read back, kept so a re-saved file is unchanged).
        copies: copies timed together (same).
    """

    t: float
    raw_ms: float
    probe_ms: float
    ratio: float
    spread_pct: float
    n: float
    copies: float

    def to_list(self) -> list[float]:
        return [self.t, self.raw_ms, self.probe_ms, self.ratio, self.spread_pct, self.n, self.copies]

    @classmethod
    def from_list(cls, values: list[Any]) -> "ColdRun":
        return cls(*map(float, values))


def weight_bytes(key: BlockKey, num_classes: int = 1000) -> int:
    """float32 bytes of a block's parameters (what a network streams from memory once per inference)."""
    from nas.macs import block_macs

    return 4 * int(block_macs(key, num_classes=num_classes).params)


def cold_copies(key: BlockKey, num_classes: int = 1000) -> int:
    """How many copies the cold-weights pass times ``key`` as (0: its weights are small, cold = warm)."""
    wb = weight_bytes(key, num_classes)
    if wb < COLD_MIN_BYTES:
        return 0
    return int(min(COLD_MAX_COPIES, max(2, math.ceil(COLD_TARGET_BYTES / wb))))


def copies_module(key: BlockKey, copies: int, num_classes: int) -> Any:
    """``copies`` independent instances of ``key``'s block on the same input; one element of each output is
    kept (so no copy is pruned and no large output is copied back)."""
    import torch
    from torch import nn

    from nas.builder import build_block

    class Copies(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.copies = nn.ModuleList(build_block(key, num_classes=num_classes) for _ in range(copies))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([c(x).reshape(-1)[:1] for c in self.copies])

    return Copies().eval()


def replicate_onnx(onnx_bytes: bytes, copies: int) -> bytes:
    """An ONNX model running ``copies`` independent copies of a one-input, one-output model on its input.

    Each copy has its own initializers (scaled by 1 + REPLICA_WEIGHT_STEP * i, so that no runtime can share them); one
    element of each copy's output is kept (Flatten + Slice + Concat), so nothing is pruned and nothing large
    is copied back. Done on the graph, not by exporting ``copies`` modules: ~50x faster for big blocks.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    src = onnx.load_from_string(onnx_bytes)
    g = src.graph
    init_names = {i.name for i in g.initializer}
    inp = next(i.name for i in g.input if i.name not in init_names)
    out = g.output[0].name
    nodes, inits = [], []
    starts, ends, axes = "_cold_starts", "_cold_ends", "_cold_axes"
    for name, v in ((starts, 0), (ends, 1), (axes, 1)):
        inits.append(numpy_helper.from_array(np.array([v], dtype=np.int64), name))
    pieces = []
    for c in range(copies):
        def rn(n: str, c: int = c) -> str:
            return n if n in ("", inp) else f"c{c}/{n}"

        for node in g.node:
            n = onnx.NodeProto()
            n.CopyFrom(node)
            n.name = f"c{c}/{node.name}"
            n.input[:] = [rn(x) for x in node.input]
            n.output[:] = [rn(x) for x in node.output]
            nodes.append(n)
        for init in g.initializer:
            arr = numpy_helper.to_array(init)
            if arr.dtype.kind == "f" and arr.size > 1:
                arr = (arr * (1.0 + REPLICA_WEIGHT_STEP * c)).astype(arr.dtype)
            inits.append(numpy_helper.from_array(arr, rn(init.name)))
        nodes.append(helper.make_node("Flatten", [rn(out)], [f"c{c}/_flat"], axis=0))
        nodes.append(helper.make_node("Slice", [f"c{c}/_flat", starts, ends, axes], [f"c{c}/_one"]))
        pieces.append(f"c{c}/_one")
    nodes.append(helper.make_node("Concat", pieces, ["cold_out"], axis=1))
    graph = helper.make_graph(nodes, "cold_copies", [i for i in g.input if i.name == inp],
                              [helper.make_tensor_value_info("cold_out", TensorProto.FLOAT, [1, copies])], inits)
    model = helper.make_model(graph, opset_imports=src.opset_import)
    model.ir_version = src.ir_version
    return model.SerializeToString()


def measure_cold(key: BlockKey, backend: "Backend", probe: Any, *, num_classes: int,
                 settings: MeasureSettings) -> ColdRun | None:
    """The cold-weights run of ``key`` (see COLD_MIN_BYTES), per copy; None for small blocks."""
    from nas.builder import build_block

    k = cold_copies(key, num_classes)
    if k == 0:
        return None
    shape = (key.in_channels, key.resolution, key.resolution)
    one = backend.portable(build_block(key, num_classes=num_classes).eval(), input_shape=shape)
    model = replicate_onnx(one, k) if isinstance(one, (bytes, bytearray)) else copies_module(key, k, num_classes)
    t = time.time()
    m, probe_ms, ratio = paired(backend, probe, model, shape, settings)
    return ColdRun(t=round(t, 3), raw_ms=sig(m.median_ms / k), probe_ms=sig(probe_ms), ratio=sig(ratio / k),
                   spread_pct=round(m.spread_pct, 2), n=m.n, copies=k)

