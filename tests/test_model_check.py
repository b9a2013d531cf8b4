"""Structural checks of loaded models: defects are named, valid models (subgraphs, any node order,
packed and typed tensor storage) pass."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune.io.model_check import model_problem, tensor_problem


def _relu_chain(order: list[int]) -> onnx.ModelProto:
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="r0"), helper.make_node("Relu", ["a"], ["b"], name="r1"),
             helper.make_node("Relu", ["b"], ["y"], name="r2")]
    g = helper.make_graph([nodes[i] for i in order], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_node_order_is_free_but_cycles_are_not() -> None:
    assert model_problem(_relu_chain([2, 0, 1])) is None  # ONNX Runtime sorts nodes itself
    m = _relu_chain([0, 1, 2])
    m.graph.node[0].input[0] = "b"  # r0 reads r1's output, r1 reads r0's
    assert model_problem(m) == "the graph has a cycle through node 'r0'"
    m = _relu_chain([0, 1, 2])
    m.graph.node[2].input[0] = "y"  # a node reading its own output
    assert model_problem(m) == "the graph has a cycle through node 'r2'"


def test_graph_outputs_must_be_defined() -> None:
    m = _relu_chain([0, 1, 2])
    m.graph.output[0].name = "z"
    assert "graph output 'z'" in str(model_problem(m))


def test_subgraphs_read_the_enclosing_scope() -> None:
    then = helper.make_graph([helper.make_node("Relu", ["a"], ["t"], name="t")], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2])])
    other = helper.make_graph([helper.make_node("Neg", ["a"], ["e"], name="e")], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2])])
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="a"),
             helper.make_node("If", ["c"], ["y"], name="if", then_branch=then, else_branch=other)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
                                       helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    assert model_problem(m) is None
    neg = next(a for a in m.graph.node[1].attribute if a.name == "else_branch").g.node[0]
    neg.input[0] = "ghost"
    assert model_problem(m) == "node 'e' reads 'ghost', which no node, input or initializer defines"
    neg.input[0] = "y"  # the If reads its own output through a branch
    assert model_problem(m) == "the graph has a cycle through node 'if'"


def test_tensor_storage_of_every_kind() -> None:
    assert tensor_problem(numpy_helper.from_array(np.ones((2, 3), np.float32))) is None
    typed = helper.make_tensor("t", TensorProto.FLOAT, [2, 3], [1.0] * 6)
    assert tensor_problem(typed) is None
    del typed.float_data[-1]
    assert tensor_problem(typed) == "holds 5 values, its dims [2, 3] need 6"
    half = helper.make_tensor("h", TensorProto.FLOAT16, [3], np.ones(3, np.float16))
    assert tensor_problem(half) is None  # float16 lives in int32_data, one per element
    packed = helper.make_tensor("p", TensorProto.INT4, [3], [1, 2, 3], raw=False)
    assert tensor_problem(packed) is None  # two 4-bit values per int32_data entry
    raw4 = TensorProto(name="r", data_type=TensorProto.UINT4, dims=[3], raw_data=b"\x21\x03")
    assert tensor_problem(raw4) is None
    raw4.raw_data = b"\x21\x03\x00"
    assert tensor_problem(raw4) == "holds 3 bytes of raw_data, its dims [3] need 2"
    strings = helper.make_tensor("s", TensorProto.STRING, [2], [b"a", b"b"])
    assert tensor_problem(strings) is None
    external = TensorProto(name="e", data_type=TensorProto.FLOAT, dims=[1000], data_location=TensorProto.EXTERNAL)
    assert tensor_problem(external) is None  # not read here; its length is checked once loaded
