"""Per-channel spatial rules: pooling, SE gates, Resize/Upsample (sizes rewritten), Pad."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from graphs import Graph, checked_prune, exercise, group_of, init, node_const, plan_removing, reasons

from onnxprune.api import analyse

POOLS: list[tuple[str, dict[str, object]]] = [
    ("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    ("LpPool", {"kernel_shape": [2, 2], "p": 2}),
    ("GlobalAveragePool", {}),
    ("GlobalMaxPool", {}),
    ("GlobalLpPool", {"p": 2}),
]


@pytest.mark.parametrize(("op", "attrs"), POOLS, ids=[p[0] for p in POOLS])
def test_pooling_passes_channels(op: str, attrs: dict[str, object]) -> None:
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 6, 6))
    y = g.node(op, [g.relu(g.conv(x, 4, 8, name="c1"))], name="pool", attrs=attrs)
    g.output(g.conv(y, 8, 4, name="head"))
    model = g.build()
    dg = analyse(model)
    assert group_of(dg, "c1").prunable and group_of(dg, "c1").size == 8
    exercise(model)


def test_maxpool_with_indices_blocks() -> None:
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 6, 6))
    y, idx = g.node_multi("MaxPool", [g.relu(g.conv(x, 4, 8, name="c1"))], name="pool", n_out=2,
                          kernel_shape=[2, 2], strides=[2, 2])
    g.output(g.conv(y, 8, 4, name="head"))
    g.output(idx, elem=onnx.TensorProto.INT64)
    dg = analyse(g.build())
    assert "MaxPool indices depend on the channel count" in reasons(dg, "c1")


def test_se_gate() -> None:
    """GlobalAveragePool -> Conv -> Relu -> Conv -> Sigmoid -> Mul: the expand conv joins the trunk."""
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 6, 6))
    y = g.relu(g.bn(g.conv(x, 4, 8, name="c1"), 8))
    s = g.node("GlobalAveragePool", [y], name="gap")
    s = g.relu(g.conv(s, 8, 4, k=1, name="fc1"))
    s = g.node("Sigmoid", [g.conv(s, 4, 8, k=1, name="fc2")], name="gate")
    y = g.node("Mul", [y, s], name="excite")
    g.output(g.conv(y, 8, 4, name="head"))
    model = g.build()
    dg = analyse(model)
    trunk, squeeze = group_of(dg, "c1"), group_of(dg, "fc1")
    assert sorted(trunk.sources) == ["c1", "fc2"] and trunk.prunable and trunk.size == 8
    assert squeeze.sources == ["fc1"] and squeeze.prunable and squeeze.size == 4
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"c1": [3, 4], "fc1": [1]}))
    keep = [0, 1, 2, 5, 6, 7]
    np.testing.assert_array_equal(init(r.model, "fc1.w"), init(model, "fc1.w")[[0, 2, 3]][:, keep])
    np.testing.assert_array_equal(init(r.model, "fc2.w"), init(model, "fc2.w")[keep][:, [0, 2, 3]])
    exercise(model)


def test_hardsigmoid_se_gate_with_broadcast_constant() -> None:
    """MobileNetV3 flavour: h-sigmoid gate, and h-swish on the trunk."""
    g = Graph(opset=14)
    x = g.input("x", (1, 4, 6, 6))
    y = g.node("HardSwish", [g.conv(x, 4, 8, name="c1")], name="hswish")
    s = g.relu(g.conv(g.node("GlobalAveragePool", [y], name="gap"), 8, 4, k=1, name="fc1"))
    s = g.node("HardSigmoid", [g.conv(s, 4, 8, k=1, name="fc2")], name="hsig", alpha=1 / 6, beta=0.5)
    y = g.node("Mul", [s, y], name="excite")
    g.output(g.conv(y, 8, 4, name="head"))
    exercise(g.build())


@pytest.mark.parametrize("opset", [11, 13, 18])
def test_resize_sizes_rewritten(opset: int) -> None:
    g = Graph(opset=opset)
    x = g.input("x", (1, 4, 4, 4))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    empty = g.const("empty", np.zeros(0, dtype=np.float32))
    y = g.node("Resize", [y, empty, empty, g.ints("sizes", [1, 8, 8, 8])], name="resize", mode="nearest")
    g.output(g.conv(y, 8, 4, name="head"))
    model = g.build()
    dg = analyse(model)
    assert group_of(dg, "c1").prunable
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"c1": [0, 2, 3]}))
    np.testing.assert_array_equal(node_const(r.model, "resize", 3), [1, 5, 8, 8])
    exercise(model)


@pytest.mark.parametrize("opset", [10, 13])
def test_resize_scales_pass(opset: int) -> None:
    g = Graph(opset=opset)
    x = g.input("x", (1, 4, 4, 4))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    scales = g.const("scales", np.array([1, 1, 2, 2], dtype=np.float32))
    ins = [y, scales] if opset < 11 else [y, g.const("roi", np.zeros(0, dtype=np.float32)), scales]
    y = g.node("Resize", ins, name="resize", mode="linear" if opset < 11 else "cubic")
    g.output(g.conv(y, 8, 4, name="head"))
    exercise(g.build())


def test_upsample_opset9() -> None:
    g = Graph(opset=9)
    x = g.input("x", (1, 4, 4, 4))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    y = g.node("Upsample", [y, g.const("scales", np.array([1, 1, 2, 2], dtype=np.float32))], name="up")
    g.output(g.conv(y, 8, 4, name="head"))
    exercise(g.build())


def test_resize_scaling_channels_blocks() -> None:
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 4, 4))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    scales = g.const("scales", np.array([1, 2, 1, 1], dtype=np.float32))
    y = g.node("Resize", [y, g.const("roi", np.zeros(0, dtype=np.float32)), scales], name="resize")
    g.output(g.conv(y, 16, 4, name="head"))
    dg = analyse(g.build())
    assert "Resize scales a channel-carrying axis" in reasons(dg, "c1")


def test_resize_axes_attribute_blocks() -> None:
    g = Graph(opset=18)
    x = g.input("x", (1, 4, 4, 4))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    y = g.node("Resize", [y, "", "", g.ints("sizes", [8, 8])], name="resize", axes=[2, 3])
    g.output(g.conv(y, 8, 4, name="head"))
    dg = analyse(g.build())
    assert "Resize with an axes attribute" in reasons(dg, "c1")


@pytest.mark.parametrize("opset", [7, 11, 18])
def test_pad_zero_on_channel_axis_passes(opset: int) -> None:
    g = Graph(opset=opset)
    x = g.input("x", (1, 4, 5, 5))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    pads = [0, 0, 1, 2, 0, 0, 2, 1]
    if opset < 11:
        y = g.node("Pad", [y], name="pad", pads=pads, mode="reflect")
    else:
        y = g.node("Pad", [y, g.ints("pads", pads), g.const("v", np.array(0.5, dtype=np.float32))], name="pad")
    g.output(g.conv(y, 8, 4, name="head"))
    model = g.build()
    assert group_of(analyse(model), "c1").prunable
    exercise(model)


def test_pad_opset18_axes_input() -> None:
    g = Graph(opset=18)
    x = g.input("x", (1, 4, 5, 5))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    y = g.node("Pad", [y, g.ints("pads", [1, 1, 1, 1]), "", g.ints("axes", [2, -1])], name="pad", mode="edge")
    g.output(g.conv(y, 8, 4, name="head"))
    exercise(g.build())


@pytest.mark.parametrize("axes", [None, [1, 3]])
def test_pad_nonzero_on_channel_axis_blocks(axes: list[int] | None) -> None:
    g = Graph(opset=18)
    x = g.input("x", (1, 4, 5, 5))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    if axes is None:
        y = g.node("Pad", [y, g.ints("pads", [0, 1, 0, 0, 0, 1, 0, 0])], name="pad")
    else:
        y = g.node("Pad", [y, g.ints("pads", [1, 0, 0, 0]), "", g.ints("axes", axes)], name="pad")
    g.output(g.conv(y, 10 if axes is None else 9, 4, name="head"))
    dg = analyse(g.build())
    assert "Pad adds positions along a channel-carrying axis" in reasons(dg, "c1")
