"""onnxruntime CPU execution provider: the ``cpu`` backend, and ``arm`` on an aarch64 host or board.

Models are exported by :func:`export_onnx`, the project's one ONNX exporter (also what ``nas export`` ships),
with ``torch.onnx.export(..., dynamo=False)`` (TorchScript exporter: fast, no onnxscript, weights inline), and
run with full graph optimisation (``ORT_ENABLE_ALL``: conv+BN+ReLU fusion, constant folding), ``intra_op_num_threads = threads``, one inter-op thread, sequential
execution. Inputs and outputs are bound once (``IOBinding``) so a timed call is the session's own
work plus a fixed few microseconds, with no per-call numpy allocation.

:func:`measure_onnx_bytes` is the whole measurement as one function of ONNX bytes; the board agent runs the
same backend with a time cap added (:mod:`nas.agent.measure`).
"""

from __future__ import annotations

import io
import time
import warnings
from typing import TYPE_CHECKING, Any, Sequence

from nas.backends.base import Backend, Device, MeasureSettings, Measurement
from nas.backends.host import host_identity
from nas.backends.registry import register
from nas.errors import MeasurementError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    import torch.nn as nn

__all__ = ["OPSET", "INPUT_NAME", "OUTPUT_NAME", "OnnxRuntimeBackend", "OrtRunner", "export_onnx",
           "measure_onnx_bytes", "measure_many_onnx_bytes", "session_options"]

# The one ONNX exporter (tables, the board agent's requests and `nas export` all call export_onnx), decided once
# by measurement (benchmarks/bench_export_paired.py, results in benchmarks/results/export_paired.json):
# * opset 17: for every preset, opset 13 and 17 graphs differ only in Reshape's explicit ``allowzero=0`` (the
#   default) and ORT's optimised graphs are node for node the same (169 nodes for 1.0x), so the opset does not
#   change latency; 17 is the opset the shipped table was timed at (its graphs and numbers stay as they are).
# * static batch for tables, agent requests and `nas export`: the table is per batch size, the agent refuses
#   inputs without the declared static shape, and with a dynamic axis ORT cannot fold the channel shuffle's 16
#   Shape -> Slice -> Concat chains (233 nodes after optimisation instead of 169 for 1.0x): +1.1 to +3.8 % of
#   latency at batch 1 for presets 0.5x-2.0x on a quiet EPYC VM (Session 10, export_variants_s10.json; +0.3 to
#   +2.1 % under load in Session 3; median of 30 interleaved rounds in 3 rotated orders; opset 13 vs 17: -1.5
#   to +0.9 %, noise). So `nas export` ships the static graph the table timed, byte for byte, and
#   ``dynamic_batch=True`` (`nas export --dynamic-batch`) is for batched deployments, its cost in the ratio.
# * names ``input`` and ``logits``: the names `nas export` has always shipped (users' code runs
#   ``session.run(["logits"], ...)``); names do not change the timed graph.
OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
BATCH_AXIS_NAME = "batch"  # the symbolic first dimension with dynamic_batch=True
INPUT_SEED = 0  # the timed input is fixed noise; conv speed does not depend on values (no denormals in N(0,1))


def export_onnx(model: "nn.Module", *, input_shape: Sequence[int], opset: int = OPSET,
                dynamic_batch: bool = False) -> bytes:
    """Export ``model`` (put in eval mode) to ONNX bytes: the one exporter of tables, agent requests and exports.

    Args:
        model: the network or block.
        input_shape: the full NCHW shape traced (and, unless ``dynamic_batch``, fixed in the graph).
        opset: ONNX opset (default :data:`OPSET`; 13 gives the same optimised graph, see the constants).
        dynamic_batch: a symbolic batch axis on input and output (not what tables time; see the constants).

    Returns:
        The serialized model, input :data:`INPUT_NAME`, output :data:`OUTPUT_NAME`.

    Raises:
        MeasurementError: the exporter failed (the message names the model class).
    """
    import torch

    model = model.eval()
    x = torch.zeros(tuple(int(s) for s in input_shape), dtype=torch.float32)
    axes = {INPUT_NAME: {0: BATCH_AXIS_NAME}, OUTPUT_NAME: {0: BATCH_AXIS_NAME}} if dynamic_batch else None
    buf = io.BytesIO()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # The TorchScript exporter is deprecated in favour of dynamo; we choose it on purpose (fast, no
            # onnxscript, weights inline).
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=int(opset), input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], dynamic_axes=axes, do_constant_folding=True)
    except Exception as e:  # the exporter raises many types; report one line
        raise MeasurementError(f"ONNX export (opset {opset}) of {type(model).__name__} failed: "
                               f"{str(e).splitlines()[0][:200]}") from e
    return buf.getvalue()


def session_options(threads: int) -> Any:
    """The session options every measurement uses (and the table records)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1  # one op at a time: what a single-stream deployment does
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3  # errors only
    return so


class OrtRunner:
    """An ORT session with its input and output bound once; ``run(n)`` times ``n`` calls."""

    def __init__(self, onnx: bytes, *, input_shape: Sequence[int], threads: int,
                 providers: Sequence[str] = ("CPUExecutionProvider",), clock: str = "wall") -> None:
        import numpy as np
        import onnxruntime as ort

        shape = tuple(int(s) for s in input_shape)
        try:
            self.session = ort.InferenceSession(onnx, sess_options=session_options(threads),
                                                providers=list(providers))
        except Exception as e:
            raise MeasurementError(f"onnxruntime could not load the model: {str(e).splitlines()[0][:200]}") from e
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise MeasurementError(f"model has {len(inputs)} inputs; latency is measured for one image input")
        x = np.random.default_rng(INPUT_SEED).standard_normal(shape).astype(np.float32)
        try:
            outs = self.session.run(None, {inputs[0].name: x})  # also checks the input shape
        except Exception as e:
            raise MeasurementError(f"input_shape={shape}: the model does not run on it "
                                   f"({str(e).splitlines()[0][:160]})") from e
        device = "cuda" if "CUDAExecutionProvider" in self.session.get_providers()[:1] else "cpu"
        self._keep = [ort.OrtValue.ortvalue_from_numpy(x, device, 0)]
        self.binding = self.session.io_binding()
        self.binding.bind_ortvalue_input(inputs[0].name, self._keep[0])
        for meta, arr in zip(self.session.get_outputs(), outs):
            out = ort.OrtValue.ortvalue_from_numpy(np.empty_like(arr), device, 0)
            self._keep.append(out)
            self.binding.bind_ortvalue_output(meta.name, out)
        # "thread": CPU time of the calling thread, which with one intra-op thread is where ORT runs every
        # kernel; it excludes time the thread was preempted, so a busy machine does not inflate long runs
        # more than short ones. "wall": perf_counter (needed with several threads or a GPU).
        self.clock = time.thread_time_ns if clock == "thread" else time.perf_counter_ns

    def run(self, n: int) -> list[float]:
        times = []
        sess, binding = self.session, self.binding
        clock = self.clock
        for _ in range(int(n)):
            t0 = clock()
            sess.run_with_iobinding(binding)  # synchronous on CPU; with CUDA, ORT syncs outputs bound to device
            times.append((clock() - t0) / 1e6)
        return times

    def close(self) -> None:
        self._keep.clear()
        self.binding = None
        self.session = None


class OnnxRuntimeBackend(Backend):
    """onnxruntime with the CPU execution provider (``cpu``, and ``arm`` on aarch64)."""

    name = "onnxruntime"
    provider = "CPUExecutionProvider"

    def __init__(self, *, device: Device, threads: int, batch: int) -> None:
        super().__init__(device=device, threads=threads, batch=batch)
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            from nas.errors import BackendUnavailableError

            raise BackendUnavailableError("onnxruntime is not installed; `pip install onnxruntime`") from None

    def identity(self) -> dict[str, Any]:
        import onnxruntime as ort

        ident = host_identity(device=self.device, threads=self.threads, batch=self.batch)
        ident.update(
            backend=self.name,
            runtime="onnxruntime",
            runtime_version=ort.__version__,
            provider=self.provider,
            graph_optimization="ORT_ENABLE_ALL",
            execution_mode="sequential",
            inter_op_threads=1,
            export=f"torch.onnx.export(dynamo=False, opset={OPSET})",
        )
        return ident

    def portable(self, model: "nn.Module | bytes", *, input_shape: Sequence[int]) -> bytes:
        if isinstance(model, (bytes, bytearray)):
            return bytes(model)
        return export_onnx(model, input_shape=self.full_shape(input_shape))

    def prepare(self, model: "nn.Module | bytes", *, input_shape: tuple[int, ...],
                settings: MeasureSettings) -> OrtRunner:
        onnx = model if isinstance(model, (bytes, bytearray)) else export_onnx(model, input_shape=input_shape)
        return OrtRunner(bytes(onnx), input_shape=input_shape, threads=self.threads, providers=[self.provider],
                         clock=self.clock_for(settings))


def measure_onnx_bytes(onnx: bytes, *, input_shape: Sequence[int], settings: MeasureSettings | None = None,
                       threads: int = 1, device: Device = "cpu") -> Measurement:
    """Time serialized ONNX on this machine's CPU with the standard protocol (the board agent's entry point).

    Args:
        onnx: an ONNX model with one image input.
        input_shape: the full input shape ``(N, C, H, W)``.
        settings: the measurement protocol (default :class:`MeasureSettings()`).
        threads: intra-op threads.
        device: recorded device kind (``arm`` on a board).

    Returns:
        The :class:`Measurement`.

    Raises:
        MeasurementError: the bytes are not a loadable model or do not accept ``input_shape``.
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 4:
        raise UsageError(f"input_shape={shape}: measure_onnx_bytes needs the full (N, C, H, W) shape", field="input_shape")
    backend = OnnxRuntimeBackend(device=device, threads=threads, batch=shape[0])
    return backend.measure(bytes(onnx), input_shape=shape, settings=settings)


def measure_many_onnx_bytes(models: Sequence[bytes], *, input_shapes: Sequence[Sequence[int]],
                            settings: MeasureSettings | None = None, threads: int = 1,
                            device: Device = "cpu") -> list[Measurement]:
    """Time several serialized ONNX models in interleaved rounds on this machine's CPU (the board agent's
    entry point for paired measurements, e.g. a latency-table block with its reference probe).

    Args:
        models: ONNX models with one image input each.
        input_shapes: one full ``(N, C, H, W)`` shape per model (all with the same N).
        settings: the measurement protocol (default :class:`MeasureSettings()`).
        threads: intra-op threads.
        device: recorded device kind.

    Returns:
        One :class:`Measurement` per model, round ``k`` of each next in time to round ``k`` of the others.

    Raises:
        MeasurementError: a model is not loadable or does not accept its shape.
        UsageError: shapes are not 4-d or disagree on the batch size.
    """
    shapes = [tuple(int(x) for x in s) for s in input_shapes]
    if not shapes or any(len(s) != 4 for s in shapes) or len({s[0] for s in shapes}) != 1:
        raise UsageError(f"input_shapes={shapes}: need one (N, C, H, W) per model, all with the same N", field="input_shapes")
    backend = OnnxRuntimeBackend(device=device, threads=threads, batch=shapes[0][0])
    return backend.measure_many([bytes(m) for m in models], input_shapes=shapes, settings=settings)


def _factory(*, device: Device, threads: int, batch: int, remote: str | None = None,
             token: str | None = None) -> OnnxRuntimeBackend:
    return OnnxRuntimeBackend(device=device, threads=threads, batch=batch)


register("onnxruntime", _factory)
