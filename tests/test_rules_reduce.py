"""Reductions and axis-mixing ops: a sum over channels consumes them, a mean/max blocks; Softmax over
channels blocks (opset < 13 coerces to 2-D at `axis`, so it mixes every later axis)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from graphs import Graph, checked_prune, exercise, group_of, plan_removing, reasons

from onnxprune.api import analyse


def reduce_model(op: str, opset: int, axes: list[int], keepdims: int = 1) -> onnx.ModelProto:
    """Conv (8) -> Relu -> op over `axes`; the reduced tensor is the graph output."""
    g = Graph(opset=opset)
    x = g.input("x", (1, 4, 5, 5))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    as_input = opset >= (13 if op == "ReduceSum" else 18)
    if as_input:
        y = g.node(op, [y, g.ints("axes", axes)], name="red", keepdims=keepdims)
    else:
        y = g.node(op, [y], name="red", axes=axes, keepdims=keepdims)
    g.output(y)
    return g.build()


@pytest.mark.parametrize(("op", "opset"), [("ReduceSum", 11), ("ReduceSum", 13), ("ReduceSumSquare", 13),
                                           ("ReduceL1", 18), ("ReduceL2", 13)])
@pytest.mark.parametrize("axes", [[1], [1, 2, 3]])
def test_sum_over_channels_consumes(op: str, opset: int, axes: list[int]) -> None:
    model = reduce_model(op, opset, axes)
    dg = analyse(model)
    assert group_of(dg, "c1").prunable
    assert any(e.node == "red" for e in dg.analysis.consume_edges)
    checked_prune(model, dg=dg, plan=plan_removing(dg, {"c1": [0, 5]}))
    exercise(model)


@pytest.mark.parametrize(("op", "opset"), [("ReduceMean", 13), ("ReduceMean", 18), ("ReduceMax", 13),
                                           ("ReduceProd", 13), ("ReduceLogSumExp", 18)])
def test_mean_over_channels_blocks(op: str, opset: int) -> None:
    dg = analyse(reduce_model(op, opset, [1]))
    assert not group_of(dg, "c1").prunable
    assert f"{op} over channels changes when one is removed" in reasons(dg, "c1")


@pytest.mark.parametrize(("op", "opset"), [("ReduceMean", 13), ("ReduceMean", 18), ("ReduceMax", 13),
                                           ("ReduceSum", 13)])
@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce_over_spatial_passes(op: str, opset: int, keepdims: int) -> None:
    g = Graph(opset=opset)
    x = g.input("x", (1, 4, 5, 5))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    if opset >= (13 if op == "ReduceSum" else 18):
        y = g.node(op, [y, g.ints("axes", [2, 3])], name="red", keepdims=keepdims)
    else:
        y = g.node(op, [y], name="red", axes=[2, 3], keepdims=keepdims)
    if keepdims:
        g.output(g.conv(y, 8, 4, k=1, name="head"))
    else:
        g.output(g.gemm(y, 8, 4, name="head"))
    model = g.build()
    assert group_of(analyse(model), "c1").prunable
    exercise(model)


def test_reduce_sum_all_axes_default() -> None:
    g = Graph(opset=11)
    x = g.input("x", (1, 4, 5, 5))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    g.output(g.node("ReduceSum", [y], name="red", keepdims=0))
    model = g.build()
    exercise(model)


def test_reduce_sum_noop_with_empty_axes_passes_channels() -> None:
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 5, 5))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    y = g.node("ReduceSum", [y], name="red", noop_with_empty_axes=1)
    g.output(g.conv(y, 8, 4, name="head"))
    exercise(g.build())


def test_hand_written_channel_mean_is_a_masked_sum() -> None:
    """mean = ReduceSum(x, axis 1) / C written by hand: the sum is a consumer and the constant C is not
    rewritten, so the oracle (a masked channel still counts in C) and the pruned graph agree."""
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 5, 5))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    s = g.node("ReduceSum", [y, g.ints("axes", [1])], name="red")
    g.output(g.node("Div", [s, g.const("count", np.array(8.0, dtype=np.float32))], name="mean"))
    model = g.build()
    exercise(model)


def channel_last(opset: int, axis: int, op: str = "Softmax") -> onnx.ModelProto:
    """MatMul features (1, T, 16) -> op(axis) -> MatMul."""
    g = Graph(opset=opset)
    x = g.input("x", (1, 4, 16))
    h = g.node(op, [g.matmul(x, 16, 16, name="proj")], name="sm", axis=axis)
    g.output(g.matmul(h, 16, 8, name="out"))
    return g.build()


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
@pytest.mark.parametrize("opset", [11, 13])
def test_softmax_over_channels_blocks(op: str, opset: int) -> None:
    dg = analyse(channel_last(opset, -1, op))
    assert f"{op} mixes the channels of this axis" in reasons(dg, "proj")


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_over_time_opset13_passes(op: str) -> None:
    """Opset 13: softmax over the time axis only; the feature channels pass through."""
    model = channel_last(13, 1, op)
    assert group_of(analyse(model), "proj").prunable
    exercise(model)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_over_time_opset11_blocks(op: str) -> None:
    """Opset 11: axis=1 coerces (1, T, C) to (1, T*C): the softmax runs over time *and* channels."""
    dg = analyse(channel_last(11, 1, op))
    assert not group_of(dg, "proj").prunable
    assert f"{op} mixes the channels of this axis" in reasons(dg, "proj")


@pytest.mark.parametrize("opset", [11, 13])
def test_softmax_over_spatial_nchw_passes(opset: int) -> None:
    g = Graph(opset=opset)
    x = g.input("x", (1, 4, 5, 5))
    y = g.node("Softmax", [g.conv(x, 4, 8, name="c1")], name="sm", axis=3)
    g.output(g.conv(y, 8, 4, name="head"))
    exercise(g.build())


@pytest.mark.parametrize(("op", "extra"), [("ArgMax", {"keepdims": 1}), ("ArgMin", {"keepdims": 0}),
                                           ("TopK", {})])
def test_arg_ops_over_channels_block(op: str, extra: dict[str, object]) -> None:
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 5, 5))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    if op == "TopK":
        vals, idx = g.node_multi(op, [y, g.ints("k", [2])], name="arg", n_out=2, axis=1)
        g.output(vals)
        g.output(idx, elem=onnx.TensorProto.INT64)
    else:
        g.output(g.node(op, [y], name="arg", axis=1, attrs=extra), elem=onnx.TensorProto.INT64)
    dg = analyse(g.build())
    assert f"{op} mixes the channels of this axis" in reasons(dg, "c1")


def test_argmax_over_spatial_keepdims0_passes() -> None:
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 5, 5))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    y = g.node("ArgMax", [y], name="arg", axis=3, keepdims=0)  # (1, 8, 5) int64
    y = g.node("Cast", [y], name="f", to=onnx.TensorProto.FLOAT)
    g.output(g.node("ReduceSum", [y, g.ints("axes", [1, 2])], name="red", keepdims=0))
    model = g.build()
    dg = analyse(model)
    assert group_of(dg, "c1").prunable
    exercise(model)


@pytest.mark.parametrize("axis", [1, 2])
def test_cumsum(axis: int) -> None:
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 5, 5))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    y = g.node("CumSum", [y, g.ints("axis", [axis])], name="cs")
    g.output(g.conv(y, 8, 4, name="head"))
    model = g.build()
    dg = analyse(model)
    if axis == 1:
        assert "CumSum mixes the channels of this axis" in reasons(dg, "c1")
    else:
        exercise(model)
