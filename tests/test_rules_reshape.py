"""Layout rules: Reshape (constant and Concat-built targets), channel shuffle, Flatten, Transpose,
Squeeze/Unsqueeze, Expand, Tile."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
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


def shuffle_model(groups: int = 2, c: int = 8) -> onnx.ModelProto:
    """ShuffleNet unit: grouped conv -> Reshape(g, C/g) -> Transpose -> Reshape(C) -> grouped conv."""
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 4, 4))
    y = g.relu(g.conv(x, 4, c, name="c1"))
    y = g.relu(g.conv(y, c, c, group=groups, name="gc1"))
    y = g.node("Reshape", [y, g.ints("split_shape", [1, groups, c // groups, 4, 4])], name="rs1")
    y = g.node("Transpose", [y], name="shuffle", perm=[0, 2, 1, 3, 4])
    y = g.node("Reshape", [y, g.ints("merge_shape", [1, c, 4, 4])], name="rs2")
    y = g.relu(g.conv(y, c, c, group=groups, name="gc2"))
    g.output(g.conv(y, c, 4, name="head"))
    return g.build()


def test_channel_shuffle_couples_across_groups() -> None:
    dg = analyse(shuffle_model(), grouped="index")
    grp = group_of(dg, "gc1")
    # gc1 out channel i is coupled with i+4 (Reshape grid), the shuffle interleaves the halves, and
    # gc2's grouping couples index j with j+4 again: two slots {0,2,4,6} and {1,3,5,7} are left.
    assert grp.prunable and grp.size == 2
    assert group_of(dg, "c1").prunable and group_of(dg, "c1").size == 4
    assert group_of(dg, "gc2").prunable


def test_channel_shuffle_prunes() -> None:
    model = shuffle_model()
    dg = analyse(model, grouped="index")
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"gc1": [1]}))
    np.testing.assert_array_equal(node_const(r.model, "rs1", 1), [1, 2, 2, 4, 4])
    np.testing.assert_array_equal(node_const(r.model, "rs2", 1), [1, 4, 4, 4])
    exercise(model, grouped="index")


def test_minimal_grid_reshape_plan_is_kept() -> None:
    """Minimal form of the bug: one Reshape to (2, C/2) between two convs."""
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 4, 4))
    y = g.node("Reshape", [g.conv(x, 4, 8, name="c1"), g.ints("t", [1, 2, 4, 16])], name="rs")
    y = g.node("Reshape", [y, g.ints("t2", [1, 8, 4, 4])], name="rs_back")
    g.output(g.conv(y, 8, 4, name="head"))
    model = g.build()
    dg = analyse(model)
    assert group_of(dg, "c1").size == 4
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"c1": [0]}))
    assert r.removed_slots == 1


@pytest.mark.parametrize("target", [[1, 6, 8, 6], [1, 6, 48], [1, 16, 18]])
def test_reshape_to_odd_grids_and_back(target: list[int]) -> None:
    """Reshapes that cut the (C, H, W) block at other places, then back: either prunable and exact, or blocked."""
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 6, 6))
    y = g.node("Reshape", [g.relu(g.conv(x, 4, 8, name="c1")), g.ints("t", target)], name="rs")
    y = g.node("Reshape", [g.relu(y), g.ints("t_back", [1, 8, 6, 6])], name="rs_back")
    g.output(g.conv(y, 8, 4, name="head"))
    model = g.build()
    grp = group_of(analyse(model), "c1")
    if target == [1, 16, 18]:  # whole channels per row: a plain track with repeated ids
        assert grp.prunable and grp.size == 8
    if grp.prunable:
        exercise(model)
    else:  # cut across channel boundaries: the grid couples every channel into one slot
        assert grp.size == 1


@pytest.mark.parametrize("target", [[1, 8, 36], [1, -1, 36], [0, 8, -1], [0, 0, 36]])
def test_reshape_constant_target(target: list[int]) -> None:
    """Conv -> Reshape (1, C, HW) -> Reshape back -> Conv; the channel entry follows the kept count."""
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 6, 6))
    y = g.node("Reshape", [g.relu(g.conv(x, 4, 8, name="c1")), g.ints("t", target)], name="rs")
    y = g.node("Softmax", [y], name="sm", axis=-1)  # over the spatial positions: per channel
    y = g.node("Reshape", [y, g.ints("back_shape", [1, 8, 6, 6])], name="back")
    g.output(g.conv(y, 8, 4, name="head"))
    model = g.build()
    dg = analyse(model)
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"c1": [0, 4, 5]}))
    want = [5 if v == 8 else v for v in target]
    np.testing.assert_array_equal(node_const(r.model, "rs", 1), want)
    np.testing.assert_array_equal(node_const(r.model, "back", 1), [1, 5, 6, 6])
    exercise(model)


def dynamic_batch_reshape(opset: int = 13) -> onnx.ModelProto:
    """Reshape targets built by Concat(Unsqueeze(Gather(Shape(x), 0)), constant) with a dynamic batch."""
    g = Graph(opset=opset)
    x = g.input("x", ("N", 4, 6, 6))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    n = g.node("Gather", [g.node("Shape", [x], name="shape"), g.ints("zero", [0])], name="batch", axis=0)
    t1 = g.node("Concat", [n, g.ints("rest1", [8, 36])], name="target1", axis=0)
    y = g.node("Reshape", [y, t1], name="rs1")
    y = g.node("Softmax", [y], name="sm", axis=-1)
    t2 = g.node("Concat", [n, g.ints("rest2", [8, 6, 6])], name="target2", axis=0)
    y = g.relu(g.conv(g.node("Reshape", [y, t2], name="rs2"), 8, 8, name="c2"))
    t3 = g.node("Concat", [n, g.ints("rest3", [288])], name="target3", axis=0)
    y = g.node("Reshape", [y, t3], name="flat")
    g.output(g.gemm(y, 288, 10, name="fc"))
    return g.build()


def test_reshape_concat_target_with_dynamic_batch() -> None:
    model = dynamic_batch_reshape()
    dg = analyse(model)
    assert group_of(dg, "c1").prunable and group_of(dg, "c2").prunable
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"c1": [1, 2], "c2": [7]}))
    # the dynamic batch piece stays a run-time value; the constant pieces follow the kept channels
    assert any(n.op_type == "Shape" for n in r.model.graph.node)
    np.testing.assert_array_equal(node_const(r.model, "target1", 1), [6, 36])
    np.testing.assert_array_equal(node_const(r.model, "target2", 1), [6, 6, 6])
    np.testing.assert_array_equal(node_const(r.model, "target3", 1), [7 * 36])
    assert init(r.model, "fc.w").shape == (10, 7 * 36)
    # still runs at another batch size
    feed = {"x": np.random.default_rng(0).standard_normal((3, 4, 6, 6)).astype(np.float32)}
    assert outputs_of(r.model, feed)["fc"].shape == (3, 10)
    exercise(model, shapes={"x": (2, 4, 6, 6)})


def test_reshape_runtime_channel_target_from_other_channels_blocks() -> None:
    """The channel entry comes from Shape of *another* conv's output at run time (dynamic input): it
    counts channels that are not these, so pruning would break the Reshape: blocked."""
    g = Graph(opset=13)
    x = g.input("x", (1, 4, "H", "W"))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    other = g.relu(g.conv(x, 4, 8, name="c2"))
    shape = g.node("Shape", [other], name="shape")
    g.output(g.conv(g.node("Reshape", [g.relu(y), shape], name="rs"), 8, 4, name="head"))
    g.output(g.conv(other, 8, 4, name="head2"))
    dg = analyse(g.build(), shapes={"x": (1, 4, 6, 6)})
    assert not group_of(dg, "c1").prunable
    assert "Reshape target entry read at run time (Shape) does not count these channels" in reasons(dg, "c1")
    assert group_of(dg, "c2").blocked  # its count sizes the other Reshape


def test_flatten_of_nhwc_interleaves_and_still_maps() -> None:
    """NCHW -> NHWC -> Flatten -> Gemm: channel c owns columns c, c+C, c+2C, ... (not a block)."""
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 2, 2))
    y = g.node("Transpose", [g.relu(g.conv(x, 4, 8, name="c1"))], name="nhwc", perm=[0, 2, 3, 1])
    y = g.node("Flatten", [y], name="flat", axis=1)
    g.output(g.gemm(y, 32, 10, name="fc"))
    model = g.build()
    dg = analyse(model)
    grp = group_of(dg, "c1")
    if grp.prunable:
        r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"c1": [3]}))
        cols = [i for i in range(32) if i % 8 != 3]
        np.testing.assert_array_equal(init(r.model, "fc.w"), init(model, "fc.w")[:, cols])
        exercise(model)
    else:
        assert "interleaves" in reasons(dg, "c1")


@pytest.mark.parametrize("perm", [[0, 2, 3, 1], [0, 3, 2, 1]])
def test_transpose_to_channels_last_then_matmul(perm: list[int]) -> None:
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 3, 5))
    y = g.node("Transpose", [g.relu(g.conv(x, 4, 8, name="c1"))], name="t", perm=perm)
    g.output(g.matmul(y, 8, 6, name="proj"))
    model = g.build()
    r = checked_prune(model, ratio=0.5)
    assert init(r.model, "proj.w").shape == (4, 6)
    exercise(model)


@pytest.mark.parametrize("opset", [11, 13])
def test_squeeze_unsqueeze(opset: int) -> None:
    g = Graph(opset=opset)
    x = g.input("x", (1, 4, 6, 6))
    y = g.node("GlobalAveragePool", [g.relu(g.conv(x, 4, 8, name="c1"))], name="gap")
    if opset < 13:
        y = g.node("Squeeze", [y], name="sq", axes=[2, 3])
    else:
        y = g.node("Squeeze", [y, g.ints("sq_axes", [2, 3])], name="sq")
    y = g.relu(g.gemm(y, 8, 12, name="fc1"))
    if opset < 13:
        y = g.node("Unsqueeze", [y], name="unsq", axes=[2, 3])
    else:
        y = g.node("Unsqueeze", [y, g.ints("unsq_axes", [2, 3])], name="unsq")
    g.output(g.conv(y, 12, 4, k=1, name="head"))
    model = g.build()
    dg = analyse(model)
    assert group_of(dg, "c1").prunable and group_of(dg, "fc1").prunable
    exercise(model)


def test_squeeze_without_axes_drops_unit_dims() -> None:
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 6, 6))
    y = g.node("GlobalMaxPool", [g.relu(g.conv(x, 4, 8, name="c1"))], name="gmp")
    y = g.node("Squeeze", [y], name="sq")  # (8,)
    y = g.node("Unsqueeze", [y, g.ints("ax", [0])], name="unsq")  # (1, 8)
    g.output(g.gemm(y, 8, 3, name="fc"))
    exercise(g.build())


def test_expand_channel_entry_rewritten() -> None:
    """SE-like gate broadcast with an explicit Expand to (1, C, H, W)."""
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 6, 6))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    gate = g.node("Sigmoid", [g.conv(g.node("GlobalAveragePool", [y], name="gap"), 8, 8, k=1, name="fc")],
                  name="sig")
    gate = g.node("Expand", [gate, g.ints("expand_shape", [1, 8, 6, 6])], name="expand")
    y = g.node("Mul", [y, gate], name="scale")
    g.output(g.conv(y, 8, 4, name="head"))
    model = g.build()
    dg = analyse(model)
    assert sorted(group_of(dg, "c1").sources) == ["c1", "fc"]
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"c1": [0, 1, 2]}))
    np.testing.assert_array_equal(node_const(r.model, "expand", 1), [1, 5, 6, 6])
    exercise(model)


def test_expand_along_spatial_only() -> None:
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 6, 6))
    y = g.node("GlobalAveragePool", [g.relu(g.conv(x, 4, 8, name="c1"))], name="gap")
    y = g.node("Expand", [y, g.ints("expand_shape", [1, 1, 6, 6])], name="expand")
    g.output(g.conv(y, 8, 4, name="head"))
    model = g.build()
    r = checked_prune(model, ratio=0.5)
    np.testing.assert_array_equal(node_const(r.model, "expand", 1), [1, 1, 6, 6])
    exercise(model)


def test_tile_spatial_passes_channel_blocks() -> None:
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 3, 3))
    y = g.node("Tile", [g.relu(g.conv(x, 4, 8, name="c1")), g.ints("reps", [1, 1, 2, 2])], name="tile")
    y = g.node("Tile", [g.relu(g.conv(y, 8, 8, name="c2")), g.ints("reps_c", [1, 2, 1, 1])], name="tile_c")
    g.output(g.conv(y, 16, 4, name="head"))
    model = g.build()
    dg = analyse(model)
    assert group_of(dg, "c1").prunable
    assert "Tile repeats a channel axis" in reasons(dg, "c2")
    exercise(model)


def test_channel_shuffle_keeps_the_index_rule_in_auto_mode() -> None:
    """Whole groups of gc1/gc2 (4 channels per group) through the shuffle couple every channel into one
    slot; auto mode then analyses both convs with the index rule and prunes as index mode does."""
    model = shuffle_model()
    assert not analyse(model, grouped="whole").prunable
    auto, index = analyse(model), analyse(model, grouped="index")
    assert auto.analysis.index_convs == {"gc1", "gc2"} and not auto.analysis.whole_convs
    assert [(g.sources, g.size) for g in auto.prunable] == [(g.sources, g.size) for g in index.prunable]
    exercise(model)
