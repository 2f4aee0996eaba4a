"""Backends: the registry, the measurement protocol on real onnxruntime sessions, and the GPU backends
(run where CUDA is present, skipped otherwise)."""

from __future__ import annotations

import io
import math
import os
import platform
import threading

import pytest
import torch
from torch import nn

from nas.backends import Backend, MeasureSettings, Measurement, available_backends, get_backend, register, summarize
from nas.backends.cuda import cuda_available
from nas.backends.identity import IDENTITY_KEYS, identity_diff
from nas.backends.onnxruntime import export_onnx, measure_many_onnx_bytes, measure_onnx_bytes
from nas.errors import AgentError, BackendUnavailableError, MeasurementError, NasError, UsageError

FAST = MeasureSettings(warmup=2, min_repeats=5, max_repeats=30, min_time_s=0.01, rounds=2, retries=1)


def small_net(c: int = 8) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c, 1)).eval()


# --------------------------------------------------------------------------- registry
def test_registry_refuses_duplicates_and_accepts_a_new_backend_without_touching_others():
    class TorchCpuRunner:
        def __init__(self, model: nn.Module, shape: tuple[int, ...]) -> None:
            self.model, self.x = model.eval(), torch.zeros(shape)

        def run(self, n: int) -> list[float]:
            import time

            out = []
            with torch.inference_mode():
                for _ in range(n):
                    t = time.perf_counter()
                    self.model(self.x)
                    out.append((time.perf_counter() - t) * 1e3)
            return out

        def close(self) -> None:
            pass

    class TorchCpuBackend(Backend):
        name = "test-torch-cpu"

        def identity(self) -> dict:
            return {"device": self.device, "runtime": "torch", "threads": self.threads, "batch": self.batch}

        def prepare(self, model, *, input_shape, settings):
            return TorchCpuRunner(model, input_shape)

    name = f"test-torch-cpu-{os.getpid()}"
    register(name, lambda *, device, threads, batch, remote, token: TorchCpuBackend(device=device, threads=threads,
                                                                                       batch=batch))
    with pytest.raises(ValueError):
        register(name, lambda **kw: None)
    assert name in available_backends()
    be = get_backend("cpu", threads=1, batch=2, runtime=name)
    m = be.measure(small_net(), input_shape=(3, 8, 8), settings=FAST)
    assert isinstance(m, Measurement) and m.median_ms > 0 and m.n >= FAST.min_repeats
    assert get_backend("cpu").name == "onnxruntime"  # the built-in default is untouched


def test_unknown_runtime_and_bad_arguments():
    with pytest.raises(BackendUnavailableError) as e:
        get_backend("cpu", runtime="no-such-runtime")
    assert e.value.field == "runtime"
    with pytest.raises(UsageError) as e:
        get_backend("tpu")  # type: ignore[arg-type]
    assert e.value.field == "device"
    with pytest.raises(UsageError) as e:
        get_backend("cpu", threads=0)
    assert e.value.field == "threads"
    with pytest.raises(UsageError) as e:
        get_backend("cpu", batch=0)
    assert e.value.field == "batch"
    with pytest.raises(UsageError) as e:  # a board agent has its own runtime
        get_backend("arm", remote="127.0.0.1:1", runtime="onnxruntime")
    assert e.value.field == "runtime"
    with pytest.raises(UsageError) as e:
        MeasureSettings(min_repeats=10, max_repeats=5)
    assert e.value.field == "max_repeats"
    with pytest.raises(UsageError) as e:
        MeasureSettings(clock="cycles")  # type: ignore[arg-type]
    assert e.value.field == "clock"
    with pytest.raises(UsageError) as e:
        MeasureSettings(retries=-1)
    assert e.value.field == "retries"


@pytest.mark.skipif(platform.machine().lower() in ("aarch64", "arm64"), reason="this host is ARM")
def test_arm_without_remote_on_x86_is_unavailable():
    with pytest.raises(BackendUnavailableError) as e:
        get_backend("arm")
    assert e.value.field == "device" and "agent" in str(e.value)


@pytest.mark.skipif(cuda_available(), reason="CUDA is present")
def test_gpu_without_cuda_is_unavailable():
    with pytest.raises(BackendUnavailableError, match="CUDA") as e:
        get_backend("gpu")
    assert e.value.field == "device"


# --------------------------------------------------------------------------- the contract every backend keeps
AGENT_TOKEN = "backend-contract-token-0123456789"
GPU_RUNTIMES = ("torch-cuda", "onnxruntime-cuda")


@pytest.fixture(scope="module")
def loopback_agent():
    """A real agent server on loopback (in this process, on its own thread) for the ``remote`` backend."""
    from nas.agent.server import make_server

    server = make_server(port=0, token=AGENT_TOKEN, log=io.StringIO())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.port}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def _contract_backend(runtime: str, request: pytest.FixtureRequest) -> Backend:
    if runtime == "remote":
        return get_backend("cpu", remote=request.getfixturevalue("loopback_agent"), token=AGENT_TOKEN)
    device = "gpu" if runtime in GPU_RUNTIMES else "cpu"
    try:
        return get_backend(device, threads=1, batch=1, runtime=runtime)  # type: ignore[arg-type]
    except BackendUnavailableError as e:
        pytest.skip(f"{runtime} is not available here: {e}")


@pytest.mark.parametrize("runtime", available_backends())
def test_backend_contract(runtime, request):
    """Every backend the registry reports: the same interface, a real tiny block timed to a positive finite
    median, an identity with the comparable keys, and a typed error for an input the model cannot take."""
    be = _contract_backend(runtime, request)
    try:
        assert isinstance(be, Backend) and be.name == runtime
        assert (be.device, be.threads, be.batch) == ("gpu" if runtime in GPU_RUNTIMES else "cpu", 1, 1)
        ident = be.identity()
        assert set(IDENTITY_KEYS) - {"gpu_model"} <= set(ident), sorted(set(IDENTITY_KEYS) - set(ident))
        assert ("gpu_model" in ident) == (be.device == "gpu")
        assert (ident["device"], ident["threads"], ident["batch"]) == (be.device, 1, 1)
        assert identity_diff(ident, be.identity()) == []  # stable between two calls
        # torch-cuda measures modules; every other backend takes ONNX bytes as well.
        model = small_net() if runtime == "torch-cuda" else export_onnx(small_net(), input_shape=(1, 3, 8, 8))
        m = be.measure(model, input_shape=(3, 8, 8), settings=FAST)
        assert isinstance(m, Measurement) and math.isfinite(m.median_ms) and m.median_ms > 0
        assert m.n >= FAST.min_repeats and len(m.round_medians_ms) == FAST.rounds
        with pytest.raises((MeasurementError, AgentError)) as e:  # 5 channels into a 3-channel model
            be.measure(model, input_shape=(5, 8, 8), settings=FAST)
        assert isinstance(e.value, NasError) and str(e.value)
        with pytest.raises(UsageError) as e:
            be.measure_many([model], input_shapes=[], settings=FAST)
        assert e.value.field == "input_shapes"
    finally:
        be.close()


# --------------------------------------------------------------------------- onnxruntime CPU
def test_onnxruntime_identity_records_what_makes_a_measurement_comparable():
    ident = get_backend("cpu", threads=1, batch=1).identity()
    for k in ("device", "cpu_model", "os", "arch", "runtime", "runtime_version", "provider", "threads", "batch",
              "torch_version"):
        assert k in ident
    assert ident["provider"] == "CPUExecutionProvider" and ident["threads"] == 1


def test_measure_module_and_many_interleaved():
    be = get_backend("cpu", threads=1, batch=1)
    ms = be.measure_many([small_net(4), small_net(32)], input_shapes=[(3, 16, 16), (1, 3, 16, 16)], settings=FAST)
    assert len(ms) == 2
    for m in ms:
        assert m.median_ms > 0 and m.min_ms <= m.median_ms and m.n >= FAST.min_repeats
        assert len(m.round_medians_ms) == FAST.rounds
        assert 1 <= m.attempts <= FAST.retries + 1
    assert Measurement.from_dict(ms[0].to_dict()) == ms[0]


def test_thread_clock_and_wall_clock_and_pinning_restores_affinity():
    be = get_backend("cpu", threads=1, batch=1)
    assert be.clock_for(MeasureSettings()) == "thread"
    assert get_backend("cpu", threads=2).clock_for(MeasureSettings()) == "wall"
    with pytest.raises(UsageError):
        get_backend("cpu", threads=2).clock_for(MeasureSettings(clock="thread"))
    before = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    for clock in ("wall", "thread"):
        m = be.measure(small_net(), input_shape=(3, 8, 8), settings=MeasureSettings(
            warmup=1, min_repeats=3, max_repeats=3, min_time_s=0, rounds=1, clock=clock))  # type: ignore[arg-type]
        assert m.n == 3 and m.median_ms > 0
    if before is not None:
        assert os.sched_getaffinity(0) == before


def test_measure_onnx_bytes_is_the_board_entry_point():
    onnx = export_onnx(small_net(), input_shape=(2, 3, 8, 8))
    m = measure_onnx_bytes(onnx, input_shape=(2, 3, 8, 8), settings=FAST)
    assert m.median_ms > 0
    with pytest.raises(MeasurementError):
        measure_onnx_bytes(onnx, input_shape=(2, 5, 8, 8), settings=FAST)  # wrong channels
    with pytest.raises(MeasurementError):
        measure_onnx_bytes(b"not an onnx model", input_shape=(1, 3, 8, 8), settings=FAST)
    with pytest.raises(UsageError):
        measure_onnx_bytes(onnx, input_shape=(3, 8, 8), settings=FAST)
    pair = measure_many_onnx_bytes([onnx, export_onnx(small_net(16), input_shape=(2, 3, 8, 8))],
                                   input_shapes=[(2, 3, 8, 8)] * 2, settings=FAST)
    assert len(pair) == 2 and all(len(m.round_medians_ms) == FAST.rounds for m in pair)


def test_noisy_results_are_remeasured_then_flagged():
    # A threshold no real measurement meets: every attempt is used, and the result is flagged.
    s = MeasureSettings(warmup=1, min_repeats=5, max_repeats=5, min_time_s=0, rounds=1, retries=2, max_spread_pct=1e-9)
    m = get_backend("cpu").measure(small_net(), input_shape=(3, 8, 8), settings=s)
    assert m.flagged and m.attempts == 3


def test_summarize():
    m = summarize([[1.0, 2.0, 3.0], [4.0, 5.0]])
    assert m.median_ms == 3.0 and m.n == 5 and m.round_medians_ms == (2.0, 4.5) and m.min_ms == 1.0
    assert m.spread_pct == pytest.approx(100 * (4.0 - 2.0) / 3.0)
    with pytest.raises(MeasurementError):
        summarize([[]])


# --------------------------------------------------------------------------- GPU (run where CUDA is present)
@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="needs CUDA")
def test_torch_cuda_backend_measures_with_cuda_events():
    be = get_backend("gpu", batch=8)
    ident = be.identity()
    assert ident["gpu_model"] and ident["cudnn_benchmark"] is True and ident["batch"] == 8
    assert be.clock_for(MeasureSettings()) == "wall"
    ms = be.measure_many([small_net(8), small_net(64)], input_shapes=[(3, 64, 64), (3, 64, 64)], settings=FAST)
    assert all(m.median_ms > 0 for m in ms)
    with pytest.raises(MeasurementError):
        be.measure(export_onnx(small_net(), input_shape=(8, 3, 8, 8)), input_shape=(3, 8, 8), settings=FAST)
    with pytest.raises(UsageError):
        be.measure(small_net(), input_shape=(3, 8, 8), settings=MeasureSettings(clock="thread"))


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="needs CUDA")
def test_onnxruntime_cuda_backend_if_installed():
    try:
        be = get_backend("gpu", batch=8, runtime="onnxruntime-cuda")
    except BackendUnavailableError:
        pytest.skip("onnxruntime-gpu not installed")
    m = be.measure(small_net(), input_shape=(3, 32, 32), settings=FAST)
    assert m.median_ms > 0 and be.identity()["provider"] == "CUDAExecutionProvider"
