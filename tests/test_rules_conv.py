"""Conv / ConvTranspose rules: plain, residual, grouped, depthwise, 1-D/3-D, run-time weights."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from graphs import Graph, attr, checked_prune, exercise, group_of, init, node_const, plan_removing, reasons

from onnxprune.api import analyse


def conv_bn_conv(opset: int = 17, *, bias: bool = True, rank: int = 2) -> onnx.ModelProto:
    g = Graph(opset=opset)
    x = g.input("x", (1, 4, *([6] * rank)))
    y = g.relu(g.bn(g.conv(x, 4, 8, name="c1", bias=bias, rank=rank), 8, name="bn1"))
    g.output(g.conv(y, 8, 4, name="c2", rank=rank))
    return g.build()


@pytest.mark.parametrize("opset", [11, 13, 17])
def test_conv_bn_conv_happy_path(opset: int) -> None:
    model = conv_bn_conv(opset)
    dg = analyse(model)
    assert group_of(dg, "c1").prunable and group_of(dg, "c1").size == 8
    assert not group_of(dg, "c2").prunable
    assert "reaches graph output" in reasons(dg, "c2")
    exercise(model)


def test_conv_weights_sliced_on_both_sides() -> None:
    model = conv_bn_conv()
    dg = analyse(model)
    keep = [0, 2, 3, 5, 7]
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"c1": [1, 4, 6]}))
    w1, w2 = init(model, "c1.w"), init(model, "c2.w")
    np.testing.assert_array_equal(init(r.model, "c1.w"), w1[keep])
    np.testing.assert_array_equal(init(r.model, "c1.b"), init(model, "c1.b")[keep])
    np.testing.assert_array_equal(init(r.model, "c2.w"), w2[:, keep])
    for p in ("scale", "bias", "mean", "var"):
        np.testing.assert_array_equal(init(r.model, f"bn1.{p}"), init(model, f"bn1.{p}")[keep])
    assert init(r.model, "c2.b").shape == (4,)


@pytest.mark.parametrize("rank", [1, 3])
def test_conv_any_rank(rank: int) -> None:
    for r in exercise(conv_bn_conv(rank=rank)):
        assert init(r.model, "c1.w").ndim == rank + 2


def test_conv_without_bias() -> None:
    exercise(conv_bn_conv(bias=False))


@pytest.mark.parametrize("criterion", ["l1", "l2", "bn-scale", "random"])
def test_criteria(criterion: str) -> None:
    r = checked_prune(conv_bn_conv(), ratio=0.5, criterion=criterion)
    assert init(r.model, "c1.w").shape[0] == 4


def test_residual_add_couples_both_sources() -> None:
    g = Graph()
    x = g.input("x", (1, 4, 6, 6))
    a = g.relu(g.conv(x, 4, 8, name="a"))
    b = g.conv(x, 4, 8, name="b")
    s = g.relu(g.node("Add", [a, b], name="add"))
    g.output(g.conv(s, 8, 4, name="head"))
    model = g.build()
    dg = analyse(model)
    grp = group_of(dg, "a")
    assert sorted(grp.sources) == ["a", "b"] and grp.size == 8 and grp.prunable
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"a": [0, 5]}))
    keep = [1, 2, 3, 4, 6, 7]
    np.testing.assert_array_equal(init(r.model, "a.w"), init(model, "a.w")[keep])
    np.testing.assert_array_equal(init(r.model, "b.w"), init(model, "b.w")[keep])
    np.testing.assert_array_equal(init(r.model, "head.w"), init(model, "head.w")[:, keep])
    exercise(model)


def test_residual_chain_three_convs() -> None:
    g = Graph()
    x = g.input("x", (1, 4, 6, 6))
    a = g.conv(x, 4, 8, name="a")
    b = g.node("Add", [a, g.conv(g.relu(a), 8, 8, name="b")], name="add1")
    c = g.node("Add", [b, g.conv(g.relu(b), 8, 8, name="c")], name="add2")
    g.output(g.conv(c, 8, 2, name="head"))
    model = g.build()
    dg = analyse(model)
    assert sorted(group_of(dg, "a").sources) == ["a", "b", "c"]
    exercise(model)


def grouped_model(group: int = 2) -> onnx.ModelProto:
    g = Graph()
    x = g.input("x", (1, 4, 6, 6))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    y = g.relu(g.conv(y, 8, 8, group=group, name="gc"))
    g.output(g.conv(y, 8, 4, name="c3"))
    return g.build()


@pytest.mark.parametrize("group", [2, 4])
def test_grouped_conv_removes_same_index_in_every_group(group: int) -> None:
    model = grouped_model(group)
    dg = analyse(model, grouped="index")
    per = 8 // group
    g1, gg = group_of(dg, "c1"), group_of(dg, "gc")
    assert g1.size == per and gg.size == per and g1.prunable and gg.prunable
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"c1": [1], "gc": [0]}))
    keep_in = [i for i in range(8) if i % per != 1]
    keep_out = [i for i in range(8) if i % per != 0]
    np.testing.assert_array_equal(init(r.model, "c1.w"), init(model, "c1.w")[keep_in])
    w = init(model, "gc.w")  # (8, 8/group, 3, 3)
    np.testing.assert_array_equal(init(r.model, "gc.w"), w[keep_out][:, [i for i in range(per) if i != 1]])
    np.testing.assert_array_equal(init(r.model, "c3.w"), init(model, "c3.w")[:, keep_out])
    assert attr(r.model, "gc", "group") == group
    exercise(model, grouped="index")
    exercise(model)  # auto: 2 or 4 channels per group, so whole groups


@pytest.mark.parametrize("mult", [1, 2])
def test_depthwise_sets_group_to_kept_channels(mult: int) -> None:
    g = Graph()
    x = g.input("x", (1, 4, 6, 6))
    y = g.relu(g.bn(g.conv(x, 4, 8, name="c1"), 8))
    y = g.relu(g.conv(y, 8, 8 * mult, group=8, name="dw"))
    g.output(g.conv(y, 8 * mult, 4, name="pw"))
    model = g.build()
    dg = analyse(model)
    assert group_of(dg, "c1").size == 8 and "dw" not in [s for grp in dg.groups for s in grp.sources]
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"c1": [0, 3, 4]}))
    keep = [1, 2, 5, 6, 7]
    assert attr(r.model, "dw", "group") == 5
    keep_dw = [c * mult + j for c in keep for j in range(mult)]
    np.testing.assert_array_equal(init(r.model, "dw.w"), init(model, "dw.w")[keep_dw])
    np.testing.assert_array_equal(init(r.model, "pw.w"), init(model, "pw.w")[:, keep_dw])
    for res in exercise(model):
        assert attr(res.model, "dw", "group") == init(res.model, "c1.w").shape[0]


def test_depthwise_on_graph_input_has_no_channels() -> None:
    g = Graph()
    x = g.input("x", (1, 4, 6, 6))
    y = g.relu(g.conv(x, 4, 4, group=4, name="dw"))
    y = g.relu(g.conv(y, 4, 8, name="c1"))
    g.output(g.conv(y, 8, 4, name="c2"))
    model = g.build()
    dg = analyse(model)
    assert [grp.sources for grp in dg.groups] == [["c1"], ["c2"]]
    exercise(model)


def test_conv_transpose_is_a_source_and_consumer() -> None:
    g = Graph()
    x = g.input("x", (1, 4, 4, 4))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    y = g.relu(g.conv_transpose(y, 8, 6, name="up"))
    g.output(g.conv(y, 6, 4, name="c3"))
    model = g.build()
    dg = analyse(model)
    assert group_of(dg, "up").prunable and group_of(dg, "up").size == 6
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"c1": [2], "up": [0, 5]}))
    w = init(model, "up.w")  # (Cin, Cout, k, k)
    np.testing.assert_array_equal(init(r.model, "up.w"), w[[0, 1, 3, 4, 5, 6, 7]][:, [1, 2, 3, 4]])
    np.testing.assert_array_equal(node_const(r.model, "up", 2), init(model, "up.b")[[1, 2, 3, 4]])
    exercise(model)


def test_grouped_conv_transpose() -> None:
    g = Graph()
    x = g.input("x", (1, 4, 4, 4))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    y = g.relu(g.conv_transpose(y, 8, 8, group=2, name="up"))
    g.output(g.conv(y, 8, 4, name="c3"))
    model = g.build()
    dg = analyse(model)
    assert group_of(dg, "c1").size == 4 and group_of(dg, "up").size == 4
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"c1": [3], "up": [1]}))
    w = init(model, "up.w")  # (Cin=8, Cout/group=4, k, k)
    np.testing.assert_array_equal(init(r.model, "up.w"), w[[0, 1, 2, 4, 5, 6]][:, [0, 2, 3]])
    assert attr(r.model, "up", "group") == 2
    exercise(model)


def test_conv_weight_computed_at_run_time_blocks() -> None:
    g = Graph()
    x = g.input("x", (1, 4, 6, 6))
    wdyn = g.input("w", (4, 8, 3, 3))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    g.output(g.node("Conv", [y, wdyn], name="c2", pads=[1, 1, 1, 1]))
    dg = analyse(g.build())
    assert not group_of(dg, "c1").prunable
    assert "convolution weight is computed at run time" in reasons(dg, "c1")


def test_strided_and_dilated_conv() -> None:
    g = Graph()
    x = g.input("x", (1, 4, 8, 8))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    w = g.rand("s.w", (8, 8, 3, 3), scale=0.2)
    y = g.relu(g.node("Conv", [y, w], name="s", strides=[2, 2], dilations=[2, 2], pads=[2, 2, 2, 2]))
    g.output(g.conv(y, 8, 4, name="c3"))
    model = g.build()
    dg = analyse(model)
    assert group_of(dg, "s").prunable and group_of(dg, "c1").prunable
    exercise(model)


@pytest.mark.parametrize("mult", [1, 2])
def test_depthwise_conv_transpose_passes_channels(mult: int) -> None:
    """ConvTranspose with group == C_in (depthwise upsampling): channel c maps to outputs c*m .. c*m+m-1.
    It used to go the grouped way, where 'the same index in every group' coupled all channels in one slot."""
    g = Graph()
    x = g.input("x", (1, 4, 4, 4))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    y = g.relu(g.conv_transpose(y, 8, 8 * mult, group=8, name="dwup"))
    g.output(g.conv(y, 8 * mult, 4, name="head"))
    model = g.build()
    dg = analyse(model)
    grp = group_of(dg, "c1")
    assert grp.prunable and grp.size == 8
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"c1": [1, 6]}))
    keep = [0, 2, 3, 4, 5, 7]
    keep_out = [c * mult + j for c in keep for j in range(mult)]
    assert attr(r.model, "dwup", "group") == 6
    np.testing.assert_array_equal(init(r.model, "dwup.w"), init(model, "dwup.w")[keep])  # (C_in, m, k, k)
    np.testing.assert_array_equal(init(r.model, "dwup.b"), init(model, "dwup.b")[keep_out])
    np.testing.assert_array_equal(init(r.model, "head.w"), init(model, "head.w")[:, keep_out])
    for res in exercise(model):
        assert attr(res.model, "dwup", "group") == init(res.model, "c1.w").shape[0]
