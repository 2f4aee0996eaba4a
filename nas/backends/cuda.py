"""GPU backends: PyTorch on CUDA (the paper's setting) and onnxruntime's CUDA execution provider.

``torch-cuda`` (the ``gpu`` default) runs the ``nn.Module`` itself with ``cudnn.benchmark`` on, so
cuDNN picks the fastest algorithm for each convolution during warm-up, and times every call with a
pair of CUDA events recorded on the stream (the GPU's own clock; no host timing of asynchronous
work). The default batch is 8 at the CLI: batch 1 leaves most of a GPU idle.

``onnxruntime-cuda`` runs ONNX (exported from the module, or given as bytes) with the CUDA execution
provider; it is available when the ``onnxruntime-gpu`` package is installed. ORT's ``Run`` synchronises
the device before returning, so host wall time is the latency there.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from nas.backends.base import Backend, Device, MeasureSettings
from nas.backends.host import host_identity
from nas.backends.registry import register
from nas.backends.onnxruntime import OnnxRuntimeBackend
from nas.errors import BackendUnavailableError, MeasurementError

if TYPE_CHECKING:  # pragma: no cover
    import torch.nn as nn

__all__ = ["TorchCudaBackend", "TorchCudaRunner", "OrtCudaBackend", "cuda_available"]

INPUT_SEED = 0


def cuda_available() -> bool:
    """True when PyTorch sees a CUDA device (False, not an error, when torch lacks CUDA support)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _no_cuda_message() -> str:
    import torch

    built = f"CUDA {torch.version.cuda}" if torch.version.cuda else "no CUDA support (CPU build)"
    return (f"device gpu: no CUDA device visible (torch {torch.__version__} has {built}); run on a machine "
            "with an NVIDIA GPU and a CUDA build of torch, or measure on device cpu")


class TorchCudaRunner:
    """A module on the GPU with a fixed input; ``run(n)`` returns per-call times from CUDA events."""

    def __init__(self, model: "nn.Module", *, input_shape: tuple[int, ...], device: Any) -> None:
        import torch

        self.torch = torch
        # A copy: moving the caller's module to the GPU would be a surprising side effect.
        self.model = copy.deepcopy(model).eval().to(device)
        gen = torch.Generator(device="cpu").manual_seed(INPUT_SEED)
        self.x = torch.randn(input_shape, generator=gen).to(device)
        self.device = device
        try:
            with torch.inference_mode():
                self.model(self.x)
            torch.cuda.synchronize(device)
        except RuntimeError as e:
            raise MeasurementError(f"input_shape={input_shape}: the model does not run on the GPU "
                                   f"({str(e).splitlines()[0][:160]})") from e

    def run(self, n: int) -> list[float]:
        torch = self.torch
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        with torch.inference_mode():
            for i in range(n):
                starts[i].record()
                self.model(self.x)
                ends[i].record()
        torch.cuda.synchronize(self.device)  # every event has completed before elapsed_time is read
        return [s.elapsed_time(e) for s, e in zip(starts, ends)]

    def close(self) -> None:
        self.model = None
        self.x = None
        self.torch.cuda.empty_cache()


class TorchCudaBackend(Backend):
    """PyTorch on CUDA with ``cudnn.benchmark`` (the paper's GPU setting)."""

    name = "torch-cuda"

    def __init__(self, *, device: Device, threads: int, batch: int, index: int = 0) -> None:
        super().__init__(device=device, threads=threads, batch=batch)
        if not cuda_available():
            raise BackendUnavailableError(_no_cuda_message(), field="device")
        import torch

        self.torch_device = torch.device("cuda", index)
        torch.backends.cudnn.benchmark = True  # pick the fastest conv algorithm per shape during warm-up

    def identity(self) -> dict[str, Any]:
        import torch

        props = torch.cuda.get_device_properties(self.torch_device)
        ident = host_identity(device=self.device, threads=self.threads, batch=self.batch)
        ident.update(
            backend=self.name,
            runtime="torch",
            runtime_version=torch.__version__,
            provider="CUDA",
            gpu_model=props.name,
            gpu_memory_gb=round(props.total_memory / 2**30, 1),
            cuda_version=torch.version.cuda,
            cudnn_version=torch.backends.cudnn.version(),
            cudnn_benchmark=True,
            timer="cuda events",
        )
        return ident

    def prepare(self, model: "nn.Module | bytes", *, input_shape: tuple[int, ...],
                settings: MeasureSettings) -> TorchCudaRunner:
        if isinstance(model, (bytes, bytearray)):
            raise MeasurementError("the torch-cuda backend measures nn.Modules; for ONNX bytes use "
                                   "runtime onnxruntime-cuda", field="runtime")
        self.clock_for(settings)  # refuses clock='thread'
        return TorchCudaRunner(model, input_shape=input_shape, device=self.torch_device)


class OrtCudaBackend(OnnxRuntimeBackend):
    """onnxruntime with the CUDA execution provider (``onnxruntime-gpu``)."""

    name = "onnxruntime-cuda"
    provider = "CUDAExecutionProvider"

    def __init__(self, *, device: Device, threads: int, batch: int) -> None:
        super().__init__(device=device, threads=threads, batch=batch)
        import onnxruntime as ort

        if self.provider not in ort.get_available_providers():
            raise BackendUnavailableError(
                f"runtime onnxruntime-cuda: onnxruntime {ort.__version__} has no CUDAExecutionProvider; "
                "`pip install onnxruntime-gpu` on a CUDA machine, or use the default torch-cuda runtime",
                field="runtime")

    def identity(self) -> dict[str, Any]:
        ident = super().identity()
        if cuda_available():
            import torch

            ident["gpu_model"] = torch.cuda.get_device_name(0)
        ident["timer"] = "wall clock (ORT Run synchronises the device)"
        return ident


def _torch_factory(*, device: Device, threads: int, batch: int, remote: str | None = None,
                   token: str | None = None) -> TorchCudaBackend:
    return TorchCudaBackend(device=device, threads=threads, batch=batch)


def _ort_factory(*, device: Device, threads: int, batch: int, remote: str | None = None,
                 token: str | None = None) -> OrtCudaBackend:
    return OrtCudaBackend(device=device, threads=threads, batch=batch)


register("torch-cuda", _torch_factory)
register("onnxruntime-cuda", _ort_factory)
