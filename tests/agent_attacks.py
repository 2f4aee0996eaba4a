"""Tiny ONNX models for tests/test_agent_security.py: the attacks of issue 13 built with ``onnx.helper``
(each a few hundred bytes, except where a real weight is needed), and a slow model of allowed ops."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 17)]


def model(nodes, inputs, outputs, inits=(), functions=(), opset=OPSET) -> bytes:
    graph = helper.make_graph(nodes, "attack", inputs, outputs, list(inits))
    m = helper.make_model(graph, opset_imports=list(opset), functions=list(functions))
    return m.SerializeToString()


def vi(name: str, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def function_file_read(external: bool = True) -> bytes:
    """Point 1: a local function whose attribute default is a tensor read from ``etc/passwd`` (relative to
    the agent's working directory), fed to ConstantOfShape; the byte would set a Loop's trip count. With
    ``external=False`` the default is an inline byte (a local function, nothing else wrong)."""
    leak = TensorProto(name="leak", data_type=TensorProto.UINT8, dims=[1])
    if external:
        leak.data_location = TensorProto.EXTERNAL
        for k, v in (("location", "etc/passwd"), ("offset", "0"), ("length", "1")):
            e = leak.external_data.add()
            e.key, e.value = k, v
    else:
        leak.raw_data = b"\x07"
    value = helper.make_attribute("value", leak)
    body = helper.make_node("ConstantOfShape", ["shape"], ["out"])
    body.attribute.append(onnx.AttributeProto(name="value", ref_attr_name="value", type=onnx.AttributeProto.TENSOR))
    fn = helper.make_function("evil", "Leak", ["shape"], ["out"], [body], OPSET, attributes=[])
    fn.attribute_proto.append(value)
    shape = numpy_helper.from_array(np.array([1], np.int64), "s")
    nodes = [helper.make_node("Leak", ["s"], ["y"], domain="evil")]
    return model(nodes, [vi("x", [1, 1, 1, 1])], [vi("y", [1], TensorProto.UINT8)], [shape], [fn],
                  OPSET + [helper.make_opsetid("evil", 1)])


def endless_loop() -> bytes:
    """Point 2: a Loop of 10**15 iterations (322 bytes in the issue)."""
    body = helper.make_graph([helper.make_node("Identity", ["c"], ["c_out"]), helper.make_node("Identity", ["v"],
                                                                                               ["v_out"])],
                             "body", [vi("i", [], TensorProto.INT64), vi("c", [], TensorProto.BOOL),
                                      vi("v", [1, 1, 1, 1])],
                             [vi("c_out", [], TensorProto.BOOL), vi("v_out", [1, 1, 1, 1])])
    inits = [numpy_helper.from_array(np.array(10**15, np.int64), "n"), numpy_helper.from_array(np.array(True), "t")]
    loop = helper.make_node("Loop", ["n", "t", "x"], ["y"], body=body)
    return model([loop], [vi("x", [1, 1, 1, 1])], [vi("y", [1, 1, 1, 1])], inits)


def constant_of_shape() -> bytes:
    """Point 3: ConstantOfShape of 5e8 floats."""
    shape = numpy_helper.from_array(np.array([500_000_000], np.int64), "s")
    nodes = [helper.make_node("ConstantOfShape", ["s"], ["big"]), helper.make_node("Identity", ["x"], ["y"])]
    return model(nodes, [vi("x", [1, 1, 1, 1])], [vi("y", [1, 1, 1, 1]), vi("big", [500_000_000])], [shape])


def expand() -> bytes:
    """Point 3: Expand to 1 GiB of floats."""
    shape = numpy_helper.from_array(np.array([1, 1, 16384, 16384], np.int64), "s")
    return model([helper.make_node("Expand", ["x", "s"], ["y"])], [vi("x", [1, 1, 1, 1])],
                  [vi("y", [1, 1, 16384, 16384])], [shape])


def identity(side: int) -> bytes:
    """Point 3: an Identity with a declared 1x1xside x side input."""
    return model([helper.make_node("Identity", ["x"], ["y"])], [vi("x", [1, 1, side, side])],
                  [vi("y", [1, 1, side, side])])


def concat_growth() -> bytes:
    """Point 3 with allowed ops only: Concat of 16 copies of a 4 M-element input (64 M elements)."""
    return model([helper.make_node("Concat", ["x"] * 16, ["y"], axis=1)], [vi("x", [1, 1, 2048, 2048])],
                  [vi("y", [1, 16, 2048, 2048])])


def contrib_op() -> bytes:
    """Point 6: an op of onnxruntime's contrib domain."""
    node = helper.make_node("Gelu", ["x"], ["y"], domain="com.microsoft")
    return model([node], [vi("x", [1, 1, 4, 4])], [vi("y", [1, 1, 4, 4])],
                  opset=OPSET + [helper.make_opsetid("com.microsoft", 1)])


def slow_convs(repeats: int = 30, c: int = 512, side: int = 64) -> bytes:
    """A model of allowed ops whose first run takes many seconds (30 3x3 convs 512 -> 512 at 64 x 64, ~580
    GFLOP; 9 MiB of weights shared by all): only the kill at the deadline stops it."""
    w = numpy_helper.from_array(np.full((c, c, 3, 3), 1e-3, np.float32), "w")
    nodes = [helper.make_node("Conv", ["x" if i == 0 else f"h{i}", "w"], [f"h{i + 1}" if i < repeats - 1 else "y"],
                              pads=[1, 1, 1, 1]) for i in range(repeats)]
    return model(nodes, [vi("x", [1, c, side, side])], [vi("y", [1, c, side, side])], [w])
