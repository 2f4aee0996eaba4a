"""The binary formats' writers and their checks: ONNX (checked in onnxruntime against PyTorch) and TorchScript
(traced, reloaded and compared).

* **ONNX**: written by the one exporter the latency tables and the board agent use
  (:func:`nas.backends.onnxruntime.export_onnx`: opset :data:`ONNX_OPSET` = 17, input ``input``, output
  ``logits``; the measured reasons are beside the exporter's constants). ``nas export`` ships, byte for byte,
  the static graph a table times (so the table's prediction is for the file shipped); ``--dynamic-batch``
  (``dynamic_batch=True``) adds a symbolic batch axis for batched deployments, otherwise node for node the same
  graph, but the axis leaves 64 small shape ops ORT does not fold: +1.1 to +3.8 % of latency at batch 1 for
  presets 0.5x-2.0x on a quiet EPYC VM (Session 10; +0.3 to +2.1 % under load in Session 3:
  benchmarks/bench_export_paired.py), which export's measured / predicted ratio then includes. ``opset=13`` (older converters) gives
  the same graph up to Reshape's explicit default ``allowzero=0`` and the same ORT-optimised graph.
  Checked on the spot: the onnxruntime output (full graph optimisation, as deployed) matches PyTorch's in eval
  mode on random input (batch 1, and batch 2 with a dynamic batch axis; max abs diff <= :data:`ONNX_TOLERANCE`).
* **TorchScript** (``torch.jit.trace``), loaded back and compared with PyTorch the same way.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import TYPE_CHECKING, Iterator, Sequence

from nas.backends.onnxruntime import OPSET
from nas.errors import ExportError, MeasurementError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

__all__ = ["ONNX_OPSET", "ONNX_TOLERANCE", "CHECK_SEED", "export_onnx_bytes", "check_batches", "check_onnx",
           "torchscript_bytes"]

ONNX_OPSET = OPSET  # the tables' opset: see nas.backends.onnxruntime
ONNX_TOLERANCE = 1e-4  # max abs difference ORT vs PyTorch (float32; fused Conv+BN reorders sums: ~1e-6 typical)
CHECK_SEED = 0  # the random check input is fixed so a failure reproduces


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The TorchScript exporter and ``torch.jit`` are deprecated upstream; we choose them on purpose
    (fast, no onnxscript, weights inline), so their deprecation and tracer warnings are noise here."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


def export_onnx_bytes(model: "nn.Module", *, input_shape: Sequence[int], opset: int = ONNX_OPSET,
                      dynamic_batch: bool = False) -> bytes:
    """Serialize ``model`` (eval mode) with the tables' exporter (:func:`nas.backends.onnxruntime.export_onnx`).

    Args:
        model: the network.
        input_shape: the full NCHW input shape (batch 1 for a latency table's batch-1 graph).
        opset: ONNX opset (default :data:`ONNX_OPSET`, the tables').
        dynamic_batch: a symbolic batch axis (``nas export --dynamic-batch``); default False: the static graph
            the tables time, byte for byte (what ``nas export`` ships).

    Returns:
        The ONNX bytes (input ``input``, output ``logits``).

    Raises:
        ExportError: the exporter failed.
    """
    from nas.backends.onnxruntime import export_onnx

    try:
        return export_onnx(model, input_shape=input_shape, opset=opset, dynamic_batch=dynamic_batch)
    except MeasurementError as e:
        raise ExportError(str(e)) from e


def check_batches(input_shape: Sequence[int], *, dynamic_batch: bool) -> tuple[int, ...]:
    """The batch sizes checked: the graph's own, and 2 more with a dynamic axis (batch 2 proves the axis)."""
    return (1, 2) if dynamic_batch else (int(input_shape[0]),)


def _check_inputs(input_shape: Sequence[int], seed: int, batches: Sequence[int] = (1, 2)) -> list["torch.Tensor"]:
    import torch

    gen = torch.Generator().manual_seed(seed)
    c, h, w = (int(s) for s in input_shape[1:])
    return [torch.randn((b, c, h, w), generator=gen) for b in batches]


def check_onnx(onnx_bytes: bytes, model: "nn.Module", *, input_shape: Sequence[int], seed: int = CHECK_SEED,
               tolerance: float = ONNX_TOLERANCE, batches: Sequence[int] = (1, 2)) -> float:
    """Run the ONNX model in onnxruntime (CPU, full graph optimisation, 1 thread) and PyTorch (eval mode) on
    random inputs at each of ``batches`` (:func:`check_batches`); return the max abs difference of the outputs.

    Raises:
        ExportError: onnxruntime cannot load or run it, or the difference exceeds ``tolerance``.
    """
    import onnxruntime as ort
    import torch

    from nas.backends.onnxruntime import session_options

    try:
        sess = ort.InferenceSession(onnx_bytes, sess_options=session_options(1), providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ExportError(f"onnxruntime cannot load the exported model: {str(e).splitlines()[0][:200]}") from None
    model.eval()
    worst = 0.0
    name = sess.get_inputs()[0].name
    for x in _check_inputs(input_shape, seed, batches):
        with torch.no_grad():
            ref = model(x).numpy()
        try:
            (out,) = sess.run(None, {name: x.numpy()})
        except Exception as e:
            raise ExportError(f"onnxruntime cannot run the exported model at batch {x.shape[0]}: "
                              f"{str(e).splitlines()[0][:160]}") from None
        if out.shape != ref.shape:
            raise ExportError(f"ONNX check: output shape {out.shape} != PyTorch {ref.shape} at batch {x.shape[0]}")
        worst = max(worst, float(abs(out - ref).max()))
    if not worst <= tolerance:
        raise ExportError(f"ONNX check failed: onnxruntime differs from PyTorch by {worst:.3g} (> {tolerance:g})")
    return worst


def torchscript_bytes(model: "nn.Module", *, input_shape: Sequence[int], seed: int = CHECK_SEED,
                       tolerance: float = ONNX_TOLERANCE) -> tuple[bytes, float]:
    """Trace, serialize, load back, and compare with eager PyTorch at batch 1 and 2."""
    import torch

    try:
        with torch.no_grad(), _quiet():
            example = torch.zeros(tuple(int(s) for s in input_shape))
            traced = torch.jit.trace(model.eval(), example, check_trace=False)  # checked below, after a reload
            buf = io.BytesIO()
            torch.jit.save(traced, buf)
            data = buf.getvalue()
            loaded = torch.jit.load(io.BytesIO(data), map_location="cpu")
            worst = 0.0
            for x in _check_inputs(input_shape, seed):
                worst = max(worst, float((loaded(x) - model(x)).abs().max()))
    except Exception as e:
        raise ExportError(f"TorchScript export failed: {str(e).splitlines()[0][:200]}") from e
    if not worst <= tolerance:
        raise ExportError(f"TorchScript check failed: reloaded module differs by {worst:.3g} (> {tolerance:g})")
    return data, worst

