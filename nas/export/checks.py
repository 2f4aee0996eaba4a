"""The binary formats' writers and their checks: ONNX (checked in onnxruntime against PyTorch) and TorchScript
(traced, reloaded and compared).

* **ONNX**, opset :data:`ONNX_OPSET` = 13, dynamic batch axis, TorchScript exporter (``dynamo=False``: no
  onnxscript, weights inline). Opset 13 because every op of these networks (Conv, Relu, Split with sizes as
  an input, Concat, Reshape, Transpose, MaxPool, GlobalAveragePool, Gemm, Sigmoid, Mul) exists in it, and it
  is the newest opset the converters for the paper's ARM targets read (ncnn, MNN, TNN, onnx2tf/TFLite,
  TensorRT 7+, onnxruntime 1.7+); opset 17 would add nothing these graphs use. Checked on the spot: the
  onnxruntime output (full graph optimisation, as deployed) matches PyTorch's in eval mode on random input at
  batch 1 and 2 (max abs diff <= :data:`ONNX_TOLERANCE`).
* **TorchScript** (``torch.jit.trace``), loaded back and compared with PyTorch the same way.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import TYPE_CHECKING, Iterator, Sequence

from nas.errors import ExportError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

__all__ = ["ONNX_OPSET", "ONNX_TOLERANCE", "CHECK_SEED", "export_onnx_bytes", "check_onnx", "torchscript_bytes"]

ONNX_OPSET = 13  # see the module docstring: the newest opset the mobile converters read; nothing newer is used
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


def export_onnx_bytes(model: "nn.Module", *, input_shape: Sequence[int], opset: int = ONNX_OPSET) -> bytes:
    """Serialize ``model`` (eval mode) to ONNX with a dynamic batch axis: input ``input``, output ``logits``.

    Raises:
        ExportError: the exporter failed.
    """
    import torch

    model.eval()
    x = torch.zeros(tuple(int(s) for s in input_shape), dtype=torch.float32)
    buf = io.BytesIO()
    try:
        with torch.no_grad(), _quiet():
            torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=int(opset), input_names=["input"],
                              output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                              do_constant_folding=True)
    except Exception as e:  # the exporter raises many types; report one line
        raise ExportError(f"ONNX export (opset {opset}) failed: {str(e).splitlines()[0][:200]}") from e
    return buf.getvalue()


def _check_inputs(input_shape: Sequence[int], seed: int) -> list["torch.Tensor"]:
    import torch

    gen = torch.Generator().manual_seed(seed)
    c, h, w = (int(s) for s in input_shape[1:])
    return [torch.randn((b, c, h, w), generator=gen) for b in (1, 2)]  # batch 2 proves the dynamic axis


def check_onnx(onnx_bytes: bytes, model: "nn.Module", *, input_shape: Sequence[int], seed: int = CHECK_SEED,
               tolerance: float = ONNX_TOLERANCE) -> float:
    """Run the ONNX model in onnxruntime (CPU, full graph optimisation, 1 thread) and PyTorch (eval mode) on
    random inputs at batch 1 and 2; return the max abs difference of the outputs.

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
    for x in _check_inputs(input_shape, seed):
        with torch.no_grad():
            ref = model(x).numpy()
        try:
            (out,) = sess.run(None, {"input": x.numpy()})
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

