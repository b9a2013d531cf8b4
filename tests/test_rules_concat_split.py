"""Index-mapping rules: Concat offsets, Split (attribute / input / num_outputs), chunk, Slice, Gather."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from graphs import Graph, attr, checked_prune, exercise, group_of, init, node_const, plan_removing, reasons

from onnxprune.api import analyse


def test_concat_offsets() -> None:
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 6, 6))
    a = g.relu(g.conv(x, 4, 8, name="a"))
    b = g.relu(g.conv(x, 4, 4, name="b"))
    g.output(g.conv(g.node("Concat", [a, b], name="cat", axis=1), 12, 4, name="head"))
    model = g.build()
    dg = analyse(model)
    assert group_of(dg, "a").sources == ["a"] and group_of(dg, "b").sources == ["b"]
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"a": [1, 7], "b": [0, 3]}))
    keep = [0, 2, 3, 4, 5, 6, 8 + 1, 8 + 2]
    np.testing.assert_array_equal(init(r.model, "head.w"), init(model, "head.w")[:, keep])
    exercise(model)


def test_concat_with_graph_input_piece() -> None:
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 6, 6))
    a = g.relu(g.conv(x, 4, 8, name="a"))
    y = g.node("Concat", [x, a, x], name="cat", axis=1)
    g.output(g.conv(y, 16, 4, name="head"))
    model = g.build()
    dg = analyse(model)
    assert group_of(dg, "a").prunable
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"a": [0, 5]}))
    keep = [0, 1, 2, 3] + [4 + i for i in (1, 2, 3, 4, 6, 7)] + [12, 13, 14, 15]
    np.testing.assert_array_equal(init(r.model, "head.w"), init(model, "head.w")[:, keep])
    exercise(model)


def test_concat_negative_axis_and_densenet_reuse() -> None:
    """DenseNet: each layer reads the concat of all earlier outputs."""
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 5, 5))
    f0 = g.relu(g.conv(x, 4, 6, name="f0"))
    f1 = g.relu(g.conv(f0, 6, 4, name="f1"))
    c1 = g.node("Concat", [f0, f1], name="cat1", axis=-3)
    f2 = g.relu(g.conv(c1, 10, 4, name="f2"))
    c2 = g.node("Concat", [c1, f2], name="cat2", axis=1)
    g.output(g.conv(c2, 14, 3, name="head"))
    model = g.build()
    dg = analyse(model)
    assert all(group_of(dg, s).prunable for s in ("f0", "f1", "f2"))
    exercise(model)


def test_concat_on_spatial_axis_couples_channels() -> None:
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 6, 6))
    y = g.node("Concat", [g.conv(x, 4, 8, name="a"), g.conv(x, 4, 8, name="b")], name="cat", axis=2)
    g.output(g.conv(g.relu(y), 8, 4, name="head"))
    model = g.build()
    dg = analyse(model)
    assert sorted(group_of(dg, "a").sources) == ["a", "b"] and group_of(dg, "a").size == 8
    exercise(model)


def split_model(opset: int, mode: str) -> onnx.ModelProto:
    """Conv (12) -> Split on channels -> one conv per piece -> Add of the heads."""
    g = Graph(opset=opset)
    x = g.input("x", (1, 4, 5, 5))
    y = g.relu(g.conv(x, 4, 12, name="c1"))
    sizes = [4, 8] if mode in ("attr", "input") else [4, 4, 4]
    if mode == "attr":
        parts = g.node_multi("Split", [y], name="split", n_out=2, axis=1, split=sizes)
    elif mode == "input":
        parts = g.node_multi("Split", [y, g.ints("sizes", sizes)], name="split", n_out=2, axis=1)
    elif mode == "num_outputs":
        parts = g.node_multi("Split", [y], name="split", n_out=3, axis=1, num_outputs=3)
    else:  # equal, no sizes anywhere
        parts = g.node_multi("Split", [y], name="split", n_out=3, axis=1)
    heads = [g.conv(p, n, 4, name=f"head{i}") for i, (p, n) in enumerate(zip(parts, sizes, strict=True))]
    out = heads[0]
    for h in heads[1:]:
        out = g.node("Add", [out, h], name=f"sum_{h}")
    g.output(out)
    return g.build()


@pytest.mark.parametrize(("opset", "mode"), [(11, "attr"), (13, "input"), (18, "num_outputs"), (13, "equal"),
                                             (11, "equal")])
def test_split_sizes_rewritten(opset: int, mode: str) -> None:
    model = split_model(opset, mode)
    dg = analyse(model)
    assert group_of(dg, "c1").prunable and group_of(dg, "c1").size == 12
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"c1": [0, 5, 6, 11]}))
    want = [3, 5] if mode in ("attr", "input") else [3, 2, 3]
    if opset < 13:
        assert attr(r.model, "split", "split") == want
    else:
        np.testing.assert_array_equal(node_const(r.model, "split", 1), want)
        assert attr(r.model, "split", "num_outputs") is None
    exercise(model)


def test_split_uneven_num_outputs() -> None:
    """Opset 18 num_outputs with 10 channels in 3 pieces: 4, 4, 2."""
    g = Graph(opset=18)
    x = g.input("x", (1, 4, 5, 5))
    y = g.relu(g.conv(x, 4, 10, name="c1"))
    parts = g.node_multi("Split", [y], name="split", n_out=3, axis=1, num_outputs=3)
    heads = [g.conv(p, n, 2, name=f"head{i}") for i, (p, n) in enumerate(zip(parts, [4, 4, 2], strict=True))]
    g.output(g.node("Concat", heads, name="cat", axis=1))
    model = g.build()
    dg = analyse(model)
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"c1": [9, 2]}))
    np.testing.assert_array_equal(node_const(r.model, "split", 1), [3, 4, 1])
    exercise(model)


def test_split_keeps_one_channel_per_piece() -> None:
    """A plan emptying a Split piece gives one channel back (min-channel rule)."""
    model = split_model(13, "input")
    dg = analyse(model)
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"c1": [0, 1, 2, 3, 4]}))
    assert min(node_const(r.model, "split", 1)) >= 1


@pytest.mark.parametrize("opset", [13, 18])
def test_chunk_glu_couples_halves(opset: int) -> None:
    """GLU: a, b = chunk(x, 2); a * sigmoid(b): channel i of a and of b go together."""
    g = Graph(opset=opset)
    x = g.input("x", (1, 4, 5, 5))
    y = g.conv(x, 4, 16, name="c1")
    extra = {"num_outputs": 2} if opset >= 18 else {}
    a, b = g.node_multi("Split", [y], name="chunk", n_out=2, axis=1, attrs=extra)
    y = g.node("Mul", [a, g.node("Sigmoid", [b], name="gate")], name="glu")
    g.output(g.conv(y, 8, 4, name="head"))
    model = g.build()
    dg = analyse(model)
    assert group_of(dg, "c1").size == 8 and group_of(dg, "c1").prunable
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"c1": [2]}))
    keep = [i for i in range(16) if i % 8 != 2]
    np.testing.assert_array_equal(init(r.model, "c1.w"), init(model, "c1.w")[keep])
    np.testing.assert_array_equal(node_const(r.model, "chunk", 1), [7, 7])
    exercise(model)


def test_split_on_spatial_axis_passes_channels() -> None:
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 6, 6))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    top, bottom = g.node_multi("Split", [y, g.ints("hs", [2, 4])], name="split", n_out=2, axis=2)
    y = g.node("Concat", [bottom, top], name="cat", axis=2)
    g.output(g.conv(y, 8, 4, name="head"))
    model = g.build()
    r = checked_prune(model, ratio=0.5)
    np.testing.assert_array_equal(node_const(r.model, "split", 1), [2, 4])
    exercise(model)


def slice_model(opset: int, starts: list[int], ends: list[int], axes: list[int] | None,
                steps: list[int] | None = None) -> onnx.ModelProto:
    g = Graph(opset=opset)
    x = g.input("x", (1, 4, 5, 5))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    if opset < 10:
        extra: dict[str, object] = {"axes": axes} if axes is not None else {}
        y = g.node("Slice", [y], name="slice", starts=starts, ends=ends, attrs=extra)
    else:
        ins = [y, g.ints("starts", starts), g.ints("ends", ends)]
        if axes is not None:
            ins.append(g.ints("axes", axes))
        if steps is not None:
            ins.append(g.ints("steps", steps))
        y = g.node("Slice", ins, name="slice")
    g.output(g.conv(y, 4, 4, name="head"))
    return g.build()


@pytest.mark.parametrize(("opset", "starts", "ends", "window", "want"), [
    (9, [2], [6], (2, 6), ([1], [4])),
    (13, [2], [6], (2, 6), ([1], [4])),
    (13, [-6], [-2], (2, 6), ([1], [4])),
    (13, [4], [2**63 - 1], (4, 8), ([2], [5])),
])
def test_slice_channel_bounds_rewritten(opset: int, starts: list[int], ends: list[int], window: tuple[int, int],
                                        want: tuple[list[int], list[int]]) -> None:
    """8 channels, keep a window of 4; remove slots 0, 3 and 6 (inside and outside the window)."""
    removed = [0, 3, 6]
    model = slice_model(opset, starts, ends, [1])
    dg = analyse(model)
    assert group_of(dg, "c1").prunable
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"c1": removed}))
    if opset < 10:
        assert attr(r.model, "slice", "starts") == want[0] and attr(r.model, "slice", "ends") == want[1]
    else:
        np.testing.assert_array_equal(node_const(r.model, "slice", 1), want[0])
        np.testing.assert_array_equal(node_const(r.model, "slice", 2), want[1])
    inside = [i for i in range(*window) if i not in removed]
    np.testing.assert_array_equal(init(r.model, "head.w"), init(model, "head.w")[:, [i - window[0] for i in inside]])
    exercise(model)


def test_slice_on_spatial_axis_untouched() -> None:
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 6, 6))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    y = g.node("Slice", [y, g.ints("s", [1]), g.ints("e", [5]), g.ints("ax", [3])], name="slice")
    g.output(g.conv(y, 8, 4, name="head"))
    model = g.build()
    r = checked_prune(model, ratio=0.5)
    np.testing.assert_array_equal(node_const(r.model, "slice", 1), [1])
    np.testing.assert_array_equal(node_const(r.model, "slice", 2), [5])
    exercise(model)


def test_strided_slice_over_channels_blocks() -> None:
    dg = analyse(slice_model(13, [0], [8], [1], [2]))
    assert "strided Slice over channels" in reasons(dg, "c1")


def test_slice_bounds_from_graph_input_block() -> None:
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 6, 6))
    s = g.input("s", (1,), elem=onnx.TensorProto.INT64)
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    y = g.node("Slice", [y, s, g.ints("e", [4]), g.ints("ax", [1])], name="slice")
    g.output(g.node("ReduceSum", [y], name="rsum", keepdims=0))
    dg = analyse(g.build())
    assert "Slice bounds computed at run time" in reasons(dg, "c1")


@pytest.mark.parametrize("idx", [[0, 2, 4, 6, 7], [7, 1, 1, 3], [-1, 0]])
def test_gather_channel_indices_rewritten(idx: list[int]) -> None:
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 5, 5))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    y = g.node("Gather", [y, g.ints("idx", idx)], name="gather", axis=1)
    g.output(g.conv(y, len(idx), 4, name="head"))
    model = g.build()
    dg = analyse(model)
    assert group_of(dg, "c1").prunable
    removed = [1, 7]
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"c1": removed}))
    kept = [i for i in range(8) if i not in removed]
    norm = [i % 8 for i in idx]
    want = [kept.index(i) for i in norm if i in kept]
    np.testing.assert_array_equal(node_const(r.model, "gather", 1), want)
    exercise(model)


def test_gather_scalar_index_on_channels_blocks() -> None:
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 5, 5))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    y = g.node("Gather", [y, g.const("i", np.array(3, dtype=np.int64))], name="gather", axis=1)
    g.output(g.node("ReduceSum", [y], name="rsum", keepdims=0))
    dg = analyse(g.build())
    assert "Gather picks single channels" in reasons(dg, "c1")


def test_gather_on_spatial_axis_passes() -> None:
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 5, 5))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    y = g.node("Gather", [y, g.ints("rows", [[0, 1], [3, 4]])], name="gather", axis=2)  # (1, 8, 2, 2, 5)
    y = g.node("Reshape", [y, g.ints("t", [1, 8, 4, 5])], name="rs")
    g.output(g.conv(y, 8, 4, name="head"))
    model = g.build()
    exercise(model)


def test_gather_with_runtime_indices_blocks() -> None:
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 5, 5))
    i = g.input("i", (2,), elem=onnx.TensorProto.INT64)
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    y = g.node("Gather", [y, i], name="gather", axis=1)
    g.output(g.conv(y, 2, 4, name="head"))
    dg = analyse(g.build())
    assert "Gather with run-time indices" in reasons(dg, "c1")


def test_concat_of_a_tensor_with_itself() -> None:
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 5, 5))
    a = g.relu(g.conv(x, 4, 8, name="a"))
    g.output(g.conv(g.node("Concat", [a, a], name="cat", axis=1), 16, 4, name="head"))
    model = g.build()
    dg = analyse(model)
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"a": [2, 3]}))
    keep = [i for i in range(16) if i % 8 not in (2, 3)]
    np.testing.assert_array_equal(init(r.model, "head.w"), init(model, "head.w")[:, keep])
    exercise(model)


def test_slice_of_channels_and_rows_at_once() -> None:
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 6, 6))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    y = g.node("Slice", [y, g.ints("s", [1, 1]), g.ints("e", [7, 5]), g.ints("ax", [2, 1])], name="slice")
    g.output(g.conv(y, 4, 4, name="head"))
    model = g.build()
    dg = analyse(model)
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"c1": [0, 2]}))
    np.testing.assert_array_equal(node_const(r.model, "slice", 1), [1, 0])
    np.testing.assert_array_equal(node_const(r.model, "slice", 2), [7, 3])
    exercise(model)


def test_gather_2d_indices_before_the_channel_axis_shifts_it() -> None:
    """NHWC tensor, Gather rows with a 2-D index on axis 1: the channel axis moves from 3 to 4."""
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 5, 5))
    y = g.node("Transpose", [g.relu(g.conv(x, 4, 8, name="c1"))], name="nhwc", perm=[0, 2, 3, 1])
    y = g.node("Gather", [y, g.ints("rows", [[0, 1], [3, 4]])], name="gather", axis=1)  # (1, 2, 2, 5, 8)
    g.output(g.matmul(y, 8, 3, name="proj"))
    model = g.build()
    dg = analyse(model)
    assert group_of(dg, "c1").prunable
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"c1": [5]}))
    np.testing.assert_array_equal(init(r.model, "proj.w"), init(model, "proj.w")[[0, 1, 2, 3, 4, 6, 7]])
    exercise(model)


def _class_token(cls: str) -> onnx.ModelProto:
    """ViT's class token: patch features [1, 4, 6] and a token [1, 1, 6] concatenated on the token axis.
    cls: "const" (the token itself), "expand" (a [1, 1, 6] constant broadcast to the run-time batch by
    Expand, as torch exports `cls.expand(B, -1, -1)`) or "input"."""
    g = Graph(opset=13)
    x = g.input("x", ("batch", 4, 8) if cls == "expand" else (1, 4, 8))
    patches = g.matmul(x, 8, 6, name="embed")
    if cls == "const":
        token = g.rand("cls", (1, 1, 6))
    elif cls == "expand":
        batch = g.node("Slice", [g.node("Shape", [x]), g.ints("s0", [0]), g.ints("s1", [1])])
        shape = g.node("Concat", [batch, g.ints("ones", [1, 1])], axis=0)
        token = g.node("Expand", [g.rand("cls", (1, 1, 6)), shape], name="cls_x")
    else:
        token = g.input("cls", (1, 1, 6))
    tokens = g.node("Concat", [token, patches], name="cat", axis=1)
    g.output(g.matmul(tokens, 6, 3, name="head"))
    return g.build()


@pytest.mark.parametrize("cls", ["const", "expand"])
def test_concat_slices_a_constant_class_token_with_the_channels(cls: str) -> None:
    model = _class_token(cls)
    dg = analyse(model)
    assert group_of(dg, "embed").prunable
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"embed": [2, 4]}))
    np.testing.assert_array_equal(init(r.model, "cls"), init(model, "cls")[..., [0, 1, 3, 5]])


def test_concat_blocks_channels_an_operand_without_them_cannot_lose() -> None:
    dg = analyse(_class_token("input"))
    assert not group_of(dg, "embed").prunable
    assert "Concat operand cls carries no prunable channels where the others do" in reasons(dg, "embed")
