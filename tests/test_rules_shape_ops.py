"""Shape/Size rules: reading a dynamic batch dim is harmless; a channel count read at run time is fine
where it sizes the same channels again (a Reshape target), and blocks where the computation changes
with it. Static dims are folded to constants by normalisation before the rules run."""

from __future__ import annotations

import numpy as np
import onnx
from graphs import (
    Graph,
    checked_prune,
    exercise,
    group_of,
    init,
    node_const,
    outputs_of,
    plan_removing,
    reasons,
)

from onnxprune.api import analyse
from onnxprune.graph.dependency import dependency_graph

SHAPES = {"x": (2, 4, 6, 6)}


def test_shape_of_a_dynamic_tensor_as_its_own_reshape_target_prunes() -> None:
    """Reshape(f(y), Shape(y)): the pruned model reads the pruned channel count, which is what the
    Reshape needs (the Shape stays: the batch is dynamic)."""
    g = Graph(opset=13)
    x = g.input("x", ("N", 4, 6, 6))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    s = g.node("Shape", [y], name="shape")
    y = g.node("Reshape", [g.node("Sigmoid", [y], name="sig"), s], name="rs")
    g.output(g.conv(y, 8, 4, name="head"))
    model = g.build()
    dg = analyse(model, shapes=SHAPES)
    assert group_of(dg, "c1").prunable
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"c1": [1, 5]}), shapes=SHAPES)
    assert any(n.op_type == "Shape" for n in r.model.graph.node)
    exercise(model, shapes=SHAPES)


def _channel_count_divides_a_sum(*, start: int = 0) -> onnx.ModelProto:
    """Shape(y) -> Slice [1:2] -> Cast -> Div: the channel count is arithmetic on the data."""
    g = Graph(opset=13)
    x = g.input("x", ("N", 4, 6, 6))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    c = g.node("Slice", [g.node("Shape", [y], name="shape"), g.ints("s", [1]), g.ints("e", [2])], name="cdim")
    c = g.node("Cast", [c], name="cf", to=onnx.TensorProto.FLOAT)
    y = g.node("Div", [g.node("ReduceSum", [y, g.ints("ax", [1])], name="sum"), c], name="mean")
    g.output(y)
    return g.build()


def test_shape_slice_of_channel_dim_in_arithmetic_blocks_unless_folded() -> None:
    """Read at run time (the rules on the raw graph), the count would change the mean: blocked. Through
    the API normalisation folds the static C into a constant divisor, which the oracle proves exact."""
    model = _channel_count_divides_a_sum()
    dg = dependency_graph(model, shapes=SHAPES)
    assert "the channel count is read at run time (Shape) and computed with" in reasons(dg, "c1")
    dg = analyse(model, shapes=SHAPES)
    assert not any(n.op_type == "Shape" for n in dg.model.graph.node)
    exercise(model, shapes=SHAPES)


def test_shape_gather_of_dynamic_batch_passes() -> None:
    """Flatten written as Reshape(x, Concat(Shape(x)[0], [-1])) on the conv output itself."""
    g = Graph(opset=13)
    x = g.input("x", ("N", 4, 3, 3))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    n = g.node("Unsqueeze", [g.node("Gather", [g.node("Shape", [y], name="shape"),
                                               g.const("zero", np.array(0, dtype=np.int64))], name="batch", axis=0),
                             g.ints("ax0", [0])], name="n")
    y = g.node("Reshape", [y, g.node("Concat", [n, g.ints("minus1", [-1])], name="target", axis=0)], name="flat")
    g.output(g.gemm(y, 72, 5, name="fc"))
    model = g.build()
    shapes = {"x": (2, 4, 3, 3)}
    dg = analyse(model, shapes=shapes)
    assert group_of(dg, "c1").prunable
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"c1": [2]}), shapes=shapes)
    assert any(n.op_type == "Shape" for n in r.model.graph.node)
    np.testing.assert_array_equal(node_const(r.model, "target", 1), [-1])
    assert init(r.model, "fc.w").shape == (5, 63)
    feed = {"x": np.ones((5, 4, 3, 3), dtype=np.float32)}
    assert outputs_of(r.model, feed)["fc"].shape == (5, 5)
    exercise(model, shapes=shapes)


def test_shape_start_end_of_static_channel_folded_into_target() -> None:
    """Opset 15 Shape(start=1, end=2) of a static channel dim is folded; the folded piece of the
    Reshape target then follows the kept channels."""
    g = Graph(opset=15)
    x = g.input("x", ("N", 4, 6, 6))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    n = g.node("Shape", [y], name="batch", start=0, end=1)
    c = g.node("Shape", [y], name="chan", start=1, end=2)
    y = g.node("Reshape", [y, g.node("Concat", [n, c, g.ints("hw", [36])], name="target", axis=0)], name="rs")
    y = g.node("Softmax", [y], name="sm", axis=-1)
    y = g.node("Reshape", [y, g.node("Concat", [n, c, g.ints("h_w", [6, 6])], name="target2", axis=0)],
               name="rs2")
    g.output(g.conv(y, 8, 4, name="head"))
    model = g.build()
    dg = analyse(model, shapes=SHAPES)
    assert [n.op_type for n in dg.model.graph.node].count("Shape") == 1  # the batch one stays
    assert group_of(dg, "c1").prunable
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"c1": [0, 1, 2]}), shapes=SHAPES)
    assert init(r.model, "head.w").shape == (4, 5, 3, 3)
    exercise(model, shapes=SHAPES)


def test_size_blocks() -> None:
    g = Graph(opset=13)
    x = g.input("x", ("N", 4, 6, 6))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    size = g.node("Cast", [g.node("Size", [y], name="size")], name="sf", to=onnx.TensorProto.FLOAT)
    g.output(g.node("Div", [g.node("ReduceSum", [y], name="total", keepdims=0), size], name="mean"))
    dg = analyse(g.build(), shapes=SHAPES)
    assert "the channel count is read at run time (Size)" in reasons(dg, "c1")


def test_shape_negative_start_reading_channel_dim_blocks() -> None:
    """Shape(start=-3) of (1, C, H, W) with a dynamic H reads C at run time (not folded): blocked.

    Here the element count C*H*W divides a channel sum: pruning without blocking changes the result.
    """
    g = Graph(opset=15)
    x = g.input("x", (1, 4, "H", 6))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    chw = g.node("Shape", [y], name="chw", start=-3)
    count = g.node("ReduceProd", [g.node("Cast", [chw], name="chw_f", to=onnx.TensorProto.FLOAT)], name="count",
                   keepdims=0)
    g.output(g.node("Div", [g.node("ReduceSum", [y], name="total", keepdims=0), count], name="mean"))
    dg = analyse(g.build(), shapes={"x": (1, 4, 5, 6)})
    assert any(n.op_type == "Shape" for n in dg.model.graph.node)
    assert "the channel count is read at run time (Shape)" in reasons(dg, "c1")


def test_shape_negative_end_of_batch_dim_passes() -> None:
    """Shape(end=-3) of (N, C, H, W) is just N: harmless."""
    g = Graph(opset=15)
    x = g.input("x", ("N", 4, 3, 3))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    n = g.node("Shape", [y], name="n", end=-3)
    y = g.node("Reshape", [y, g.node("Concat", [n, g.ints("minus1", [-1])], name="target", axis=0)], name="flat")
    g.output(g.gemm(y, 72, 5, name="fc"))
    model = g.build()
    shapes = {"x": (2, 4, 3, 3)}
    assert group_of(analyse(model, shapes=shapes), "c1").prunable
    exercise(model, shapes=shapes)


def test_shape_negative_start_then_gather_of_channel_dim_blocks() -> None:
    """Shape(start=-3)[0] of (N, C, H, W) is C. Normalisation folds it (C is static), so the rule is run
    on the raw graph here. Before the fix the rule read start=-3 as axis 2 and missed the channel."""
    g = Graph(opset=15)
    x = g.input("x", ("N", 4, "H", 6))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    c = g.node("Gather", [g.node("Shape", [y], name="chw", start=-3), g.ints("first", [0])], name="c", axis=0)
    c = g.node("Cast", [c], name="cf", to=onnx.TensorProto.FLOAT)
    total = g.node("ReduceSum", [y, g.ints("ax", [1])], name="total", keepdims=0)
    g.output(g.node("Div", [total, c], name="mean"))
    dg = dependency_graph(g.build(), shapes=SHAPES)  # not normalised: the Shape -> Gather stays
    assert "the channel count is read at run time (Shape)" in reasons(dg, "c1")


def test_shape_gather_of_channel_dim_is_folded_then_prunes_consistently() -> None:
    """The same graph through the API: the folded C is a constant, like the hand-written mean's divisor."""
    g = Graph(opset=15)
    x = g.input("x", ("N", 4, "H", 6))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    c = g.node("Gather", [g.node("Shape", [y], name="chw", start=-3), g.ints("first", [0])], name="c", axis=0)
    c = g.node("Cast", [c], name="cf", to=onnx.TensorProto.FLOAT)
    total = g.node("ReduceSum", [y, g.ints("ax", [1])], name="total", keepdims=0)
    g.output(g.node("Div", [total, c], name="mean"))
    model = g.build()
    dg = analyse(model, shapes=SHAPES)
    if any(n.op_type == "Shape" for n in dg.model.graph.node):  # not folded: must be blocked
        assert "the channel count is read at run time (Shape)" in reasons(dg, "c1")
    else:
        exercise(model, shapes=SHAPES)
