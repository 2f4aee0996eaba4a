"""What an incoming measurement request may contain: its JSON metadata against the agent's limits, and each
model against what the agent runs (a self-contained ONNX model with one float input of the declared shape).

Parsing is JSON and protobuf only: nothing of the request is executed here. The server
(:mod:`nas.agent.server`) answers 400 with the message of any :class:`~nas.errors.AgentError` raised here.
"""

from __future__ import annotations

import itertools
import platform
from dataclasses import dataclass
from typing import Any, Sequence

from nas.agent.protocol import BYTES, DEVICE, INPUT_SHAPE, MEASURE_HEADER, MODELS, SETTINGS, THREADS, AgentLimits
from nas.backends.base import MeasureSettings
from nas.backends.host import is_arm, usable_cpus
from nas.errors import AgentError, NasError

__all__ = ["ALLOWED_OPS", "ONNX_DOMAINS", "MAX_INPUT_ELEMENTS", "MAX_MODELS", "MAX_RETRIES", "MAX_ROUNDS", "MeasureRequest",
           "check_device_threads", "check_models", "check_onnx", "element_cap", "model_tensors", "parse_request",
           "tensor_cap"]

MAX_RETRIES = 5  # MeasureSettings.retries cap: each retry re-runs every timed round
MAX_ROUNDS = 100  # MeasureSettings.rounds cap: the table asks for 5; more only adds per-round overhead
MAX_MODELS = 8  # models per request (the table sends 2: the reference probe and a block)
MAX_INPUT_ELEMENTS = 1 << 26  # 64 M floats = 256 MiB of input: far beyond any image batch, short of exhausting a board
MAX_DIM = 65536  # largest accepted input dimension (batch, channels or pixels)

@dataclass(frozen=True)
class MeasureRequest:
    """A checked measurement request (everything but the model bytes).

    Attributes:
        input_shapes: one full ``(N, C, H, W)`` shape per model.
        sizes: each model's length in bytes, in body order.
    """

    input_shapes: tuple[tuple[int, int, int, int], ...]
    sizes: tuple[int, ...]
    settings: MeasureSettings
    threads: int
    device: str

    def split(self, body: bytes) -> list[bytes]:
        """The body cut into one ONNX model per entry of ``sizes``."""
        out, at = [], 0
        for n in self.sizes:
            out.append(body[at:at + n])
            at += n
        return out


def _setting_types() -> dict[str, tuple[type, ...]]:
    """JSON types accepted for each :class:`MeasureSettings` field, from the type of its default (so a
    field added there is accepted here without a second list to keep in step)."""
    out: dict[str, tuple[type, ...]] = {}
    for name, f in MeasureSettings.__dataclass_fields__.items():
        d = f.default
        out[name] = (bool,) if isinstance(d, bool) else (int, float) if isinstance(d, float) else (type(d),)
    return out


def check_device_threads(device: Any, threads: Any, batch: Any = 1, *, measuring: bool = True
                         ) -> tuple[str, int, int]:
    """Check a request's device, threads and batch against this machine.

    Args:
        device, threads, batch: as the client sent them (any JSON type).
        measuring: False for identity requests, which are answered for any device (the host refuses a
            non-ARM agent with its own message).

    Returns:
        ``(device, threads, batch)``.

    Raises:
        AgentError: not ``cpu``/``arm``, ``arm`` on a non-ARM machine, or threads/batch not an integer >= 1
            or more threads than usable cores (the field names it).
    """
    if device not in ("cpu", "arm"):
        raise AgentError(f"device={device!r}: the agent measures with onnxruntime's CPU provider; use cpu or arm",
                         field="device")
    arch = platform.machine().lower()
    if measuring and device == "arm" and not is_arm(arch):
        raise AgentError(f"device='arm': this agent runs on {arch}, not ARM; ask for device 'cpu' to measure here",
                         field="device")
    for name, v in (("threads", threads), ("batch", batch)):
        if type(v) is not int or v < 1:  # noqa: E721 - bool is an int subclass and must not pass
            raise AgentError(f"{name}={v!r}: must be an integer >= 1", field=name)
    cpus = usable_cpus()
    if threads > cpus:
        raise AgentError(f"threads={threads}: this machine has {cpus} usable cores", field="threads")
    return device, threads, batch


def _check_shape(shape: Any, where: str) -> tuple[int, int, int, int]:
    if (not isinstance(shape, list) or len(shape) != 4
            or not all(type(s) is int and 1 <= s <= MAX_DIM for s in shape)):  # noqa: E721
        raise AgentError(f"{where}.{INPUT_SHAPE}={shape!r}: expected [N, C, H, W], each an integer in 1..{MAX_DIM}",
                         field=INPUT_SHAPE)
    elements = shape[0] * shape[1] * shape[2] * shape[3]
    if elements > MAX_INPUT_ELEMENTS:
        raise AgentError(f"{where}.{INPUT_SHAPE}={shape}: {elements} elements, the agent accepts at most "
                         f"{MAX_INPUT_ELEMENTS}", field=INPUT_SHAPE)
    return shape[0], shape[1], shape[2], shape[3]


def _check_models(models: Any, content_length: int | None) -> tuple[list[tuple[int, int, int, int]], list[int]]:
    """The models' input shapes and byte sizes; the sizes must add up to the body's declared length."""
    if not isinstance(models, list) or not 1 <= len(models) <= MAX_MODELS:
        raise AgentError(f"{MODELS}: expected a list of 1..{MAX_MODELS} {{{INPUT_SHAPE}, {BYTES}}} objects",
                         field=MODELS)
    shapes, sizes = [], []
    for i, m in enumerate(models):
        if not isinstance(m, dict) or type(m.get(BYTES)) is not int or m[BYTES] < 1:  # noqa: E721
            raise AgentError(f"{MODELS}[{i}]: expected {{\"{INPUT_SHAPE}\": [N, C, H, W], \"{BYTES}\": n >= 1}}",
                             field=MODELS)
        shapes.append(_check_shape(m.get(INPUT_SHAPE), f"{MODELS}[{i}]"))
        sizes.append(m[BYTES])
    if content_length is not None and sum(sizes) != content_length:
        raise AgentError(f"{MODELS}: sizes add up to {sum(sizes)} bytes, Content-Length is {content_length}",
                         field=MODELS)
    return shapes, sizes


def _check_settings(raw: Any, limits: AgentLimits) -> MeasureSettings:
    """The request's :class:`MeasureSettings`: known fields of the right JSON types, within the agent's caps."""
    if not isinstance(raw, dict):
        raise AgentError(f"{SETTINGS}: expected a JSON object of MeasureSettings fields", field=SETTINGS)
    known = _setting_types()
    for k, v in raw.items():
        types = known.get(k)
        if types is None:
            raise AgentError(f"{SETTINGS}.{k}: unknown field (is the host's nas newer? update nas on the board); "
                             f"known: {sorted(known)}", field=SETTINGS)
        if not isinstance(v, types) or (bool not in types and isinstance(v, bool)):
            raise AgentError(f"{SETTINGS}.{k}={v!r}: expected {' or '.join(t.__name__ for t in types)}",
                             field=SETTINGS)
    try:
        settings = MeasureSettings.from_dict(raw)
    except NasError as e:
        raise AgentError(str(e), field=SETTINGS) from None
    caps = {"max_repeats": limits.max_repeats, "min_repeats": limits.max_repeats, "warmup": limits.max_repeats,
            "rewarm": limits.max_repeats, "retries": MAX_RETRIES, "rounds": MAX_ROUNDS}
    for name, cap in caps.items():
        if getattr(settings, name) > cap:
            which = " (the agent's max_repeats limit)" if cap == limits.max_repeats else ""
            raise AgentError(f"{SETTINGS}.{name}={getattr(settings, name)}: beyond this agent's cap of {cap}{which}",
                             field=SETTINGS)
    if settings.min_time_s > limits.max_seconds:
        raise AgentError(f"{SETTINGS}.min_time_s={settings.min_time_s}: beyond this agent's max_seconds limit "
                         f"{limits.max_seconds:g}", field=SETTINGS)
    return settings


def parse_request(meta: Any, *, limits: AgentLimits, content_length: int | None = None) -> MeasureRequest:
    """Check the JSON metadata of a measurement request against the agent's limits.

    Args:
        meta: the decoded :data:`~nas.agent.protocol.MEASURE_HEADER` header.
        limits: the agent's caps.
        content_length: the body's declared length; the models' sizes must add up to it.

    Returns:
        The checked :class:`MeasureRequest`.

    Raises:
        AgentError: a field is missing, of the wrong type, or beyond a limit (the message and ``field`` name it).
    """
    if not isinstance(meta, dict):
        raise AgentError(f"{MEASURE_HEADER}: expected a JSON object")
    shapes, sizes = _check_models(meta.get(MODELS), content_length)
    device, threads, _ = check_device_threads(meta.get(DEVICE, "cpu"), meta.get(THREADS, 1))
    settings = _check_settings(meta.get(SETTINGS) or {}, limits)
    return MeasureRequest(input_shapes=tuple(shapes), sizes=tuple(sizes), settings=settings, threads=threads,
                          device=device)


# --------------------------------------------------------------------------- the models
# What the exporter (torch.onnx.export, dynamo=False, opset 17: nas.backends.onnxruntime.export_onnx) produces
# for every block of the shipped space (with and without residual / extra_dw), both halves of the reference
# probe, the cold-weights replicas (nas.latency.cold.replicate_onnx), the calibration networks and presets,
# and the paper's zoo and guideline networks: tests/test_agent_security.py exports all of them and checks
# that this set is exactly their union. A new op in the exporter's output is refused until it is added here.
ALLOWED_OPS = frozenset({
    "Add", "AveragePool", "Clip", "Concat", "Constant", "Conv", "Flatten", "Gemm", "GlobalAveragePool", "Identity",
    "MaxPool", "Mul", "Relu", "Reshape", "Shape", "Sigmoid", "Slice", "Split", "Transpose", "Unsqueeze",
})
ONNX_DOMAINS = frozenset({"", "ai.onnx"})  # the standard operator set only: no contrib (com.microsoft) kernels
MAX_NODES = 50_000  # nodes per model; the largest nas graph (32 cold copies of a head) has ~1,000
# Caps on tensor elements, per byte of the agent's max_request_bytes (at the default 128 MiB: one tensor at most
# 32 Mi elements = 128 MiB as float32; all tensors of a request, every intermediate counted, 128 Mi elements).
# What nas sends at batch 1 (tests/test_agent_security.py, and a sweep of all 1030 blocks of the shipped space
# with their cold replicas): largest tensor 1.4 M elements (a guideline network), largest request ~85 M (32
# cold copies of a 1168-wide down block, ~2.5 M per copy, with the probe), so batches up to ~20 fit per
# tensor and the cold requests fit with ~50 % to spare.
TENSOR_ELEMENTS_PER_REQUEST_BYTE = 0.25
ELEMENTS_PER_REQUEST_BYTE = 1.0
SMALL_INITIALIZER_ELEMENTS = 64  # initializers kept in the shape-inference copy (shape constants); the rest
# are replaced by typed inputs, so inference never copies megabytes of weights


def element_cap(limits: AgentLimits) -> int:
    """The most tensor elements one request may hold in all (see :data:`ELEMENTS_PER_REQUEST_BYTE`)."""
    return int(limits.max_request_bytes * ELEMENTS_PER_REQUEST_BYTE)


def tensor_cap(limits: AgentLimits) -> int:
    """The most elements one tensor may hold (see :data:`TENSOR_ELEMENTS_PER_REQUEST_BYTE`)."""
    return int(limits.max_request_bytes * TENSOR_ELEMENTS_PER_REQUEST_BYTE)


def _attribute_tensors(a: Any) -> Any:
    if a.HasField("t"):
        yield a.t
    yield from a.tensors
    for sp in ([a.sparse_tensor] if a.HasField("sparse_tensor") else []) + list(a.sparse_tensors):
        yield sp.values
        yield sp.indices
    for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
        yield from _graph_tensors(g)


def _graph_tensors(graph: Any) -> Any:
    yield from graph.initializer
    for sp in graph.sparse_initializer:
        yield sp.values
        yield sp.indices
    for node in graph.node:
        for a in node.attribute:
            yield from _attribute_tensors(a)


def model_tensors(model: Any) -> Any:
    """Every TensorProto of a ModelProto: the graph's initializers, sparse initializers and node attributes
    (through subgraphs), local functions (their nodes and attribute defaults) and training info."""
    yield from _graph_tensors(model.graph)
    for f in model.functions:
        for a in f.attribute_proto:
            yield from _attribute_tensors(a)
        for node in f.node:
            for a in node.attribute:
                yield from _attribute_tensors(a)
    for ti in model.training_info:
        yield from _graph_tensors(ti.initialization)
        yield from _graph_tensors(ti.algorithm)


def _refuse_structure(model: Any) -> None:
    """Refuse what nas never sends: external data, local functions, training info, other operator domains,
    ops outside :data:`ALLOWED_OPS`, attribute references, subgraphs and sparse tensors."""
    import onnx

    for t in model_tensors(model):  # tensors stored outside the model name files on the agent's disk
        if t.data_location == onnx.TensorProto.EXTERNAL or len(t.external_data):
            raise AgentError(f"model tensor {t.name!r} uses external data (a file reference); send a "
                             "self-contained model (weights inline)", field="model")
    if len(model.functions) or len(model.training_info):
        raise AgentError("model has local functions or training info; the agent runs plain exported graphs",
                         field="model")
    if len(model.graph.sparse_initializer):
        raise AgentError("model has sparse initializers; the agent runs plain exported graphs", field="model")
    domains = {o.domain for o in model.opset_import} - ONNX_DOMAINS
    if domains:
        raise AgentError(f"model imports operator domain {sorted(domains)[0]!r}; the agent runs the standard "
                         "ONNX operators only", field="model")
    if len(model.graph.node) > MAX_NODES:
        raise AgentError(f"model has {len(model.graph.node)} nodes, the agent accepts at most {MAX_NODES}",
                         field="model")
    for node in model.graph.node:
        if node.domain not in ONNX_DOMAINS or node.op_type not in ALLOWED_OPS:
            where = f"{node.domain}." if node.domain else ""
            raise AgentError(f"model op {where}{node.op_type} (node {node.name!r}): not one that nas exports; "
                             f"the agent runs {', '.join(sorted(ALLOWED_OPS))}", field="model")
        for a in node.attribute:
            if a.ref_attr_name or a.HasField("g") or len(a.graphs) or a.HasField("sparse_tensor") \
                    or len(a.sparse_tensors):
                raise AgentError(f"model node {node.name!r} attribute {a.name!r}: attribute references, subgraphs "
                                 "and sparse tensors are not accepted", field="model")


def _check_input(model: Any, input_shape: Sequence[int]) -> None:
    """Exactly one graph input (besides initializers): float32, of the static shape the request declares."""
    import onnx

    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise AgentError(f"model has {len(inputs)} inputs; the agent times models with one image input",
                         field="model")
    tt = inputs[0].type.tensor_type
    if inputs[0].type.WhichOneof("value") != "tensor_type" or tt.elem_type != onnx.TensorProto.FLOAT:
        raise AgentError(f"model input {inputs[0].name!r} is not a float32 tensor", field="model")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim] if tt.HasField("shape") else None
    want = [int(s) for s in input_shape]
    if dims != want:
        shown = "none" if dims is None else ["?" if d is None else d for d in dims]
        raise AgentError(f"model input {inputs[0].name!r} has shape {shown}, the request declares {want}; "
                         "export the model with the declared static input_shape", field="input_shape")


def _inference_copy(model: Any) -> Any:
    """The graph for shape inference: weights above SMALL_INITIALIZER_ELEMENTS become typed inputs."""
    import math

    import onnx
    from onnx import helper

    out = onnx.ModelProto(ir_version=model.ir_version)
    out.opset_import.extend(model.opset_import)
    g = out.graph
    g.node.extend(model.graph.node)
    g.input.extend(model.graph.input)
    g.output.extend(model.graph.output)
    listed = {i.name for i in model.graph.input}
    for t in model.graph.initializer:
        if math.prod(t.dims) <= SMALL_INITIALIZER_ELEMENTS:
            g.initializer.append(t)
        elif t.name not in listed:
            g.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return out


def _static_elements(value: Any) -> int | None:
    """Elements of a ValueInfoProto's tensor, or None unless its shape is fully static."""
    tt = value.type.tensor_type
    if value.type.WhichOneof("value") != "tensor_type" or not tt.HasField("shape"):
        return None
    n = 1
    for d in tt.shape.dim:
        if not d.HasField("dim_value") or d.dim_value < 0:
            return None
        n *= d.dim_value
    return n


def _count_elements(model: Any, cap: int, per_tensor: int) -> int:
    """Total elements of every tensor (inputs, initializers, node outputs) after shape inference."""
    import math

    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(_inference_copy(model), check_type=True, strict_mode=True,
                                                     data_prop=True)
    except Exception as e:  # InferenceError, ValidationError, ...: the graph is not well formed
        raise AgentError(f"model fails ONNX shape inference ({str(e).splitlines()[0][:160]})", field="model") from None
    g = inferred.graph
    sizes = {v.name: _static_elements(v) for v in itertools.chain(g.input, g.value_info, g.output)}
    sizes.update({t.name: math.prod(t.dims) for t in model.graph.initializer})
    total = sum(n or 0 for n in sizes.values())
    for node in g.node:
        for name in node.output:
            if name and sizes.get(name) is None:
                raise AgentError(f"model tensor {name!r} (output of {node.op_type} node {node.name!r}) has no static "
                                 "shape after shape inference; export with a static input shape", field="model")
    big = max(sizes, key=lambda k: sizes[k] or 0)
    if (sizes[big] or 0) > per_tensor:
        raise AgentError(f"model tensor {big!r} holds {sizes[big]} elements, beyond this agent's cap of {per_tensor} "
                         "per tensor (from its max_request_bytes limit)", field="model")
    if total > cap:
        raise AgentError(f"model tensors hold {total} elements in all, beyond this agent's cap of {cap} (from its "
                         "max_request_bytes limit)", field="model")
    return total


def check_onnx(onnx_bytes: bytes, *, input_shape: Sequence[int], max_elements: int,
               max_tensor_elements: int | None = None) -> int:
    """Check that ``onnx_bytes`` is a model such as nas exports, with one float input of ``input_shape``.

    Parsing and ONNX shape inference only: nothing in the model is executed here.

    Args:
        onnx_bytes: a serialized ModelProto.
        input_shape: the full ``(N, C, H, W)`` shape the request declares for it.
        max_elements: cap on the elements of all its tensors (see :func:`element_cap`).
        max_tensor_elements: cap on the elements of any one tensor (default ``max_elements``; see
            :func:`tensor_cap`).

    Returns:
        The elements of all its tensors (inputs, weights, every intermediate).

    Raises:
        AgentError: not ONNX; external data; local functions, training info, sparse tensors, attribute
            references or subgraphs; an op or domain outside :data:`ALLOWED_OPS` / :data:`ONNX_DOMAINS`;
            not exactly one float input of the declared static shape; a tensor without a static shape
            after inference; more than ``max_tensor_elements`` in a tensor or ``max_elements`` in all.
    """
    import onnx

    try:
        model = onnx.load_from_string(bytes(onnx_bytes))
    except Exception as e:  # protobuf raises DecodeError, RuntimeError, ... on garbage
        raise AgentError(f"request body is not an ONNX model ({type(e).__name__}); send a serialized ModelProto",
                         field="model") from None
    if not model.opset_import or not model.graph.node:
        raise AgentError("request body is not an ONNX model (no opset or no graph nodes); send a serialized "
                         "ModelProto", field="model")
    _refuse_structure(model)
    _check_input(model, input_shape)
    return _count_elements(model, max_elements, max_elements if max_tensor_elements is None else max_tensor_elements)


def check_models(models: Sequence[bytes], request: MeasureRequest, *, limits: AgentLimits) -> None:
    """:func:`check_onnx` on each model of a request, and the elements of all of them under
    :func:`element_cap`.

    Raises:
        AgentError: a model is refused (the message starts with ``models[i]`` when there are several), or the
            request as a whole holds too many elements.
    """
    if len(models) != len(request.input_shapes):
        raise AgentError(f"{len(models)} models for {len(request.input_shapes)} input shapes", field=MODELS)
    cap, per_tensor, total = element_cap(limits), tensor_cap(limits), 0
    for i, (onnx_bytes, shape) in enumerate(zip(models, request.input_shapes)):
        try:
            total += check_onnx(onnx_bytes, input_shape=shape, max_elements=cap, max_tensor_elements=per_tensor)
        except AgentError as e:
            raise AgentError(f"models[{i}]: {e}" if len(models) > 1 else str(e), field=e.field) from None
    if total > cap:
        raise AgentError(f"the request's models hold {total} tensor elements in all, beyond this agent's cap of "
                         f"{cap} (from its max_request_bytes limit); send fewer models per request", field=MODELS)
