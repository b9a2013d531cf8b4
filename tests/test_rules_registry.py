"""Registry and boundaries: ops without a rule, custom domains, control flow, graph outputs, opset ranges."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from graphs import Graph, exercise, group_of, reasons
from onnx import TensorProto, helper

from onnxprune.api import analyse, prune
from onnxprune.errors import NothingToPruneError
from onnxprune.graph.rules import reduce as reduce_rules
from onnxprune.graph.rules.registry import lookup


def test_opset_ranges_pick_the_right_softmax_rule() -> None:
    for opset in (1, 11, 12):
        rule = lookup("Softmax", opset)
        assert rule is not None and rule.fn is reduce_rules.softmax_legacy
    for opset in (13, 17, 21):
        rule = lookup("Softmax", opset)
        assert rule is not None and rule.fn is reduce_rules.softmax13


def test_every_family_has_rules() -> None:
    for op in ("Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Relu", "BatchNormalization", "MaxPool",
               "Resize", "Pad", "Concat", "Split", "Slice", "Gather", "Reshape", "Flatten", "Transpose",
               "ReduceSum", "Softmax", "LSTM", "Shape"):
        assert lookup(op, 17) is not None, op
    assert lookup("DepthToSpace", 17) is None and lookup("Einsum", 17) is None


def test_depth_to_space_has_no_rule() -> None:
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 4, 4))
    y = g.node("DepthToSpace", [g.relu(g.conv(x, 4, 8, name="c1"))], name="d2s", blocksize=2)
    g.output(g.conv(y, 2, 4, name="head"))
    dg = analyse(g.build())
    assert not group_of(dg, "c1").prunable
    assert "no channel rule for DepthToSpace (opset 13)" in reasons(dg, "c1")


def test_einsum_has_no_rule() -> None:
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 16))
    h = g.matmul(x, 16, 8, name="a")
    w = g.rand("w", (8, 3))
    g.output(g.node("Einsum", [h, w], name="es", equation="btc,cd->btd"))
    dg = analyse(g.build())
    assert "no channel rule for Einsum (opset 13)" in reasons(dg, "a")


def test_op_without_rule_before_any_source_is_harmless() -> None:
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 4, 4))
    y = g.node("DepthToSpace", [x], name="d2s", blocksize=2)  # (1, 1, 8, 8): no channels tracked yet
    y = g.relu(g.conv(y, 1, 8, name="c1"))
    g.output(g.conv(y, 8, 4, name="head"))
    model = g.build()
    assert group_of(analyse(model), "c1").prunable
    exercise(model)


def test_custom_domain_op_blocks() -> None:
    """com.microsoft ExpandDims runs in ONNX Runtime, but no rule of that domain covers it."""
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 16))
    h = g.node("ExpandDims", [g.matmul(x, 16, 8, name="a"), g.const("axis", np.array(0, np.int32))], name="expand",
               domain="com.microsoft")
    g.output(g.matmul(h, 8, 4, name="b"))
    model = g.build()
    dg = analyse(model)
    assert "ExpandDims 'expand': custom op of domain 'com.microsoft' has no channel rule" in reasons(dg, "a")
    with pytest.raises(NothingToPruneError):
        prune(model, ratio=0.5)


def test_if_subgraph_capture_blocks() -> None:
    """An If branch reads the conv output from the enclosing scope: its channels are frozen."""
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 4, 4))
    cond = g.input("cond", (1,), elem=TensorProto.BOOL)  # a 0-d bool input breaks inputs.random_inputs
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    then_g = helper.make_graph([helper.make_node("Sigmoid", [y], ["t_out"], name="t_sig")], "then_branch", [],
                               [helper.make_tensor_value_info("t_out", TensorProto.FLOAT, [1, 8, 4, 4])])
    else_g = helper.make_graph([helper.make_node("Tanh", [y], ["e_out"], name="e_tanh")], "else_branch", [],
                               [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, [1, 8, 4, 4])])
    z = g.node("If", [cond], name="branch", then_branch=then_g, else_branch=else_g)
    g.output(g.conv(z, 8, 4, name="head"))
    model = g.build()
    dg = analyse(model)
    assert not group_of(dg, "c1").prunable
    assert f"read inside a subgraph ('{y}')" in reasons(dg, "c1")


def test_if_unrelated_to_channels_leaves_them_prunable() -> None:
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 4, 4))
    cond = g.input("cond", (1,), elem=TensorProto.BOOL)  # a 0-d bool input breaks inputs.random_inputs
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    then_g = helper.make_graph([helper.make_node("Constant", [], ["t"], value=one)], "t", [],
                               [helper.make_tensor_value_info("t", TensorProto.FLOAT, [])])
    else_g = helper.make_graph([helper.make_node("Constant", [], ["e"], value=two)], "e", [],
                               [helper.make_tensor_value_info("e", TensorProto.FLOAT, [])])
    scale = g.node("If", [cond], name="branch", then_branch=then_g, else_branch=else_g)
    y = g.node("Mul", [g.relu(g.conv(x, 4, 8, name="c1")), scale], name="scaled")
    g.output(g.conv(y, 8, 4, name="head"))
    model = g.build()
    assert group_of(analyse(model), "c1").prunable
    exercise(model)


def test_graph_output_blocks() -> None:
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 4, 4))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    g.output(y)
    g.output(g.conv(y, 8, 4, name="head"))
    dg = analyse(g.build())
    assert not group_of(dg, "c1").prunable
    assert f"reaches graph output '{y}'" in reasons(dg, "c1")


def test_graph_output_through_pooling_blocks() -> None:
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 4, 4))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    feat = g.node("Flatten", [g.node("GlobalAveragePool", [y], name="gap")], name="features")
    g.output(feat)
    g.output(g.conv(y, 8, 4, name="head"))
    dg = analyse(g.build())
    assert "reaches graph output 'features'" in reasons(dg, "c1")


def test_nothing_to_prune_error() -> None:
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 4, 4))
    g.output(g.conv(x, 4, 8, name="c1"))
    with pytest.raises(NothingToPruneError):
        prune(g.build(), ratio=0.5)


def test_single_channel_group_is_not_prunable() -> None:
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 4, 4))
    y = g.relu(g.conv(x, 4, 1, name="c1"))
    g.output(g.conv(y, 1, 4, name="head"))
    grp = group_of(analyse(g.build()), "c1")
    assert grp.size == 1 and not grp.blocked and not grp.prunable


def test_blocked_reason_names_the_node() -> None:
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 4, 4))
    y = g.node("LRN", [g.relu(g.conv(x, 4, 8, name="c1"))], name="my_lrn", size=3)
    g.output(g.conv(y, 8, 4, name="head"))
    dg = analyse(g.build())
    assert "LRN 'my_lrn': LRN mixes neighbouring channels" in group_of(dg, "c1").blocked


def test_int_typed_channels_pass_cast() -> None:
    """Quantise-like Cast round trip on channels keeps the group prunable."""
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 4, 4))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    y = g.node("Cast", [g.node("Cast", [y], name="to_i", to=TensorProto.INT32)], name="to_f",
               to=TensorProto.FLOAT)
    y = g.node("Mul", [y, g.const("s", np.array(0.5, dtype=np.float32))], name="scale")
    g.output(g.conv(y, 8, 4, name="head"))
    model = g.build()
    assert isinstance(model, onnx.ModelProto)
    exercise(model)
