"""What a model sent to the agent may be: a model such as nas exports (the ops in :data:`ALLOWED_OPS`, no
external data, local functions or subgraphs anywhere, one float input of the declared static shape, tensor
elements under caps derived from the agent's request size). The request's JSON metadata is checked by
:mod:`nas.agent.request`.

Parsing and ONNX shape inference only: nothing of the request is executed here. The server
(:mod:`nas.agent.server`) answers 400 with the message of any :class:`~nas.errors.AgentError` raised here.
"""

from __future__ import annotations

import itertools
from typing import Any, Sequence

from nas.agent.protocol import MODELS, AgentLimits
from nas.agent.request import MeasureRequest
from nas.errors import AgentError

__all__ = ["ALLOWED_OPS", "ONNX_DOMAINS", "MAX_NODES", "CheckCache", "check_models", "check_onnx", "element_cap", "model_tensors",
           "tensor_cap"]

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
# What nas sends at batch 1 (tests/test_agent_security.py, and a one-off sweep of all 1030 blocks of the shipped
# space with their 364 cold replicas): largest tensor 1.4 M elements (a guideline network), largest request
# 89 M (32 cold copies of a 292-wide 7x7 SE basic unit at 28 px, 81 M, with both probe halves, 7 M). So
# batches up to ~20 fit per tensor, and the largest cold request fits with 1.5x to spare.
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


class CheckCache:
    """Models that passed :func:`check_onnx` (their bytes, input shape and caps, and element total): the table
    sends the same probe in every request, and checking its 15 MB again costs ~70 ms here (ONNX shape inference
    with data propagation) where comparing the bytes costs ~3 ms. The check is deterministic, so an equal
    model would pass again; a hash would cost ~40 ms for 15 MB on this machine, more than half the check.

    Args:
        entries: models kept (least recently used dropped first).
        max_bytes: bytes kept in all (a model larger than this is never kept).
    """

    def __init__(self, entries: int = 8, max_bytes: int = 64 * 2**20) -> None:
        self.entries, self.max_bytes = entries, max_bytes
        self._passed: list[tuple[bytes, tuple[Any, ...], int]] = []  # (bytes, (shape, caps), total), newest last

    def check(self, onnx_bytes: bytes, *, input_shape: Sequence[int], max_elements: int,
              max_tensor_elements: int) -> int:
        """:func:`check_onnx`, answered from the cache for a model equal to one that passed."""
        key = (tuple(input_shape), max_elements, max_tensor_elements)
        for i, (b, k, total) in enumerate(self._passed):
            if k == key and len(b) == len(onnx_bytes) and b == onnx_bytes:
                self._passed.append(self._passed.pop(i))
                return total
        total = check_onnx(onnx_bytes, input_shape=input_shape, max_elements=max_elements,
                           max_tensor_elements=max_tensor_elements)
        self._passed.append((bytes(onnx_bytes), key, total))
        while len(self._passed) > self.entries or sum(len(b) for b, _, _ in self._passed) > self.max_bytes:
            self._passed.pop(0)
        return total


def check_models(models: Sequence[bytes], request: MeasureRequest, *, limits: AgentLimits,
                 cache: CheckCache | None = None) -> None:
    """:func:`check_onnx` on each model of a request, and the elements of all of them under
    :func:`element_cap`.

    Args:
        models: the request's ONNX models, in body order.
        request: the checked request metadata.
        limits: the agent's caps.
        cache: models that passed before (the server keeps one; none: every model is checked).

    Raises:
        AgentError: a model is refused (the message starts with ``models[i]`` when there are several), or the
            request as a whole holds too many elements.
    """
    if len(models) != len(request.input_shapes):
        raise AgentError(f"{len(models)} models for {len(request.input_shapes)} input shapes", field=MODELS)
    cap, per_tensor, total = element_cap(limits), tensor_cap(limits), 0
    check = cache.check if cache is not None else check_onnx
    for i, (onnx_bytes, shape) in enumerate(zip(models, request.input_shapes)):
        try:
            total += check(onnx_bytes, input_shape=shape, max_elements=cap, max_tensor_elements=per_tensor)
        except AgentError as e:
            raise AgentError(f"models[{i}]: {e}" if len(models) > 1 else str(e), field=e.field) from None
    if total > cap:
        raise AgentError(f"the request's models hold {total} tensor elements in all, beyond this agent's cap of "
                         f"{cap} (from its max_request_bytes limit); send fewer models per request", field=MODELS)
