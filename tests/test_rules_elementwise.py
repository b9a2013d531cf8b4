"""Elementwise rules: unary activations pass channels through, broadcasting ops couple and slice."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import pytest
from graphs import Graph, checked_prune, exercise, group_of, init, node_const, plan_removing, reasons

from onnxprune.api import analyse

C = 8
Middle = Callable[[Graph, str], str]


def sandwich(middle: Middle, *, opset: int = 17) -> onnx.ModelProto:
    """x -> Conv c1 (C channels) -> middle -> Conv head: c1's channels must survive `middle`."""
    g = Graph(opset=opset)
    x = g.input("x", (1, 4, 6, 6))
    y = middle(g, g.conv(x, 4, C, name="c1"))
    g.output(g.conv(y, C, 4, name="head"))
    return g.build()


def unary(op: str, **attrs: object) -> Middle:
    return lambda g, x: g.node(op, [x], name="mid", attrs=attrs)


UNARY_CASES: list[tuple[str, dict[str, object]]] = [
    ("Relu", {}), ("LeakyRelu", {"alpha": 0.1}), ("Elu", {}), ("Selu", {}), ("Sigmoid", {}), ("Tanh", {}),
    ("Softplus", {}), ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}), ("HardSwish", {}), ("Abs", {}), ("Neg", {}),
    ("Exp", {}), ("Erf", {}), ("Identity", {}), ("Mish", {}), ("Celu", {}), ("Softsign", {}),
]


@pytest.mark.parametrize(("op", "attrs"), UNARY_CASES, ids=[c[0] for c in UNARY_CASES])
def test_unary_passes_channels(op: str, attrs: dict[str, object]) -> None:
    model = sandwich(unary(op, **attrs), opset=18)
    dg = analyse(model)
    assert group_of(dg, "c1").prunable and group_of(dg, "c1").size == C
    exercise(model, plans=1)


def test_gelu_opset20() -> None:
    exercise(sandwich(unary("Gelu"), opset=20), plans=1)


def test_dropout_identity_cast_chain() -> None:
    def middle(g: Graph, x: str) -> str:
        y = g.node("Dropout", [x, g.const("ratio", np.array(0.5, dtype=np.float32))], name="drop")
        y = g.node("Identity", [y], name="ident")
        y = g.node("Cast", [y], name="to64", to=onnx.TensorProto.DOUBLE)
        y = g.node("Relu", [y], name="relu64")
        return g.node("Cast", [y], name="to32", to=onnx.TensorProto.FLOAT)

    exercise(sandwich(middle, opset=13))


def test_dropout_with_mask_output() -> None:
    def middle(g: Graph, x: str) -> str:
        y, _mask = g.node_multi("Dropout", [x], name="drop", n_out=2)
        return y

    exercise(sandwich(middle, opset=13), plans=1)


@pytest.mark.parametrize("opset", [10, 11, 13])
def test_clip(opset: int) -> None:
    def middle(g: Graph, x: str) -> str:
        if opset < 11:
            return g.node("Clip", [x], name="clip", min=0.0, max=0.6)
        lo = g.const("lo", np.array(0.0, dtype=np.float32))
        hi = g.const("hi", np.array(0.6, dtype=np.float32))
        return g.node("Clip", [x, lo, hi], name="clip")

    exercise(sandwich(middle, opset=opset), plans=1)


def test_silu_sigmoid_times_x() -> None:
    def middle(g: Graph, x: str) -> str:
        return g.node("Mul", [x, g.node("Sigmoid", [x], name="sig")], name="silu")

    model = sandwich(middle)
    dg = analyse(model)
    assert group_of(dg, "c1").prunable and group_of(dg, "c1").size == C
    exercise(model)


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Max", "Min", "Pow"])
@pytest.mark.parametrize("shape", [(C, 1, 1), (1, C, 1, 1)])
@pytest.mark.parametrize("const_first", [False, True])
def test_per_channel_constant_is_sliced(op: str, shape: tuple[int, ...], const_first: bool) -> None:
    def middle(g: Graph, x: str) -> str:
        k = g.rand("k", shape, low=0.5, scale=1.0)
        y = g.node("Relu", [x], name="r") if op == "Pow" else x  # real powers of non-negative bases
        return g.node(op, [k, y] if const_first else [y, k], name="ew")

    model = sandwich(middle)
    dg = analyse(model)
    assert group_of(dg, "c1").prunable
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"c1": [2, 6]}))
    keep = [0, 1, 3, 4, 5, 7]
    want = init(model, "k")[:, keep] if len(shape) == 4 else init(model, "k")[keep]
    np.testing.assert_array_equal(node_const(r.model, "ew", 0 if const_first else 1), want)
    exercise(model, plans=1)


@pytest.mark.parametrize("op", ["Add", "Mul", "Div"])
def test_scalar_and_spatial_constants_broadcast(op: str) -> None:
    def middle(g: Graph, x: str) -> str:
        y = g.node(op, [x, g.const("s", np.array(1.5, dtype=np.float32))], name="scalar")
        return g.node(op, [y, g.rand("sp", (1, 1, 6, 6), low=0.5, scale=1.0)], name="spatial")

    model = sandwich(middle)
    r = exercise(model, plans=1)[0]
    assert init(r.model, "sp").shape == (1, 1, 6, 6)


def test_sum_and_mean_of_three_convs_couple() -> None:
    g = Graph()
    x = g.input("x", (1, 4, 6, 6))
    parts = [g.conv(x, 4, C, name=f"p{i}") for i in range(3)]
    y = g.node("Sum", parts, name="sum")
    y = g.node("Mean", [y, parts[0]], name="mean")
    g.output(g.conv(y, C, 4, name="head"))
    model = g.build()
    dg = analyse(model)
    assert sorted(group_of(dg, "p0").sources) == ["p0", "p1", "p2"]
    exercise(model)


def test_prelu_per_channel_slope() -> None:
    def middle(g: Graph, x: str) -> str:
        return g.node("PRelu", [x, g.rand("slope", (C, 1, 1), scale=0.3)], name="prelu")

    model = sandwich(middle)
    dg = analyse(model)
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"c1": [0, 1, 7]}))
    np.testing.assert_array_equal(node_const(r.model, "prelu", 1), init(model, "slope")[[2, 3, 4, 5, 6]])
    exercise(model)


def test_prelu_shared_slope() -> None:
    def middle(g: Graph, x: str) -> str:
        return g.node("PRelu", [x, g.const("slope", np.array([0.2], dtype=np.float32))], name="prelu")

    exercise(sandwich(middle), plans=1)


def test_where_with_per_channel_condition() -> None:
    def middle(g: Graph, x: str) -> str:
        cond = g.const("cond", (np.arange(C) % 3 == 0).reshape(C, 1, 1))
        return g.node("Where", [cond, x, g.rand("alt", (C, 1, 1))], name="where")

    model = sandwich(middle)
    dg = analyse(model)
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"c1": [3]}))
    keep = [0, 1, 2, 4, 5, 6, 7]
    np.testing.assert_array_equal(node_const(r.model, "where", 0), init(model, "cond")[keep])
    np.testing.assert_array_equal(node_const(r.model, "where", 2), init(model, "alt")[keep])
    exercise(model, plans=1)


def test_shared_constant_used_by_two_groups_is_sliced_for_each() -> None:
    """A per-channel constant two groups read (an export that deduplicates constants) does not
    couple them: each Mul reads its own slice of it (tests/test_shared_initializers.py)."""
    g = Graph()
    x = g.input("x", (1, 4, 6, 6))
    k = g.rand("k", (C, 1, 1))
    a = g.node("Mul", [g.conv(x, 4, C, name="a"), k], name="ma")
    b = g.node("Mul", [g.conv(x, 4, C, name="b"), k], name="mb")
    g.output(g.conv(g.node("Concat", [a, b], name="cat", axis=1), 2 * C, 4, name="head"))
    model = g.build()
    dg = analyse(model)
    assert group_of(dg, "a").sources == ["a"] and group_of(dg, "b").sources == ["b"]
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"a": [0, 1], "b": [7]}))
    np.testing.assert_array_equal(node_const(r.model, "ma", 1), init(model, "k")[2:])
    np.testing.assert_array_equal(node_const(r.model, "mb", 1), init(model, "k")[:7])
    exercise(model)


def test_add_of_two_different_convs_without_activation() -> None:
    g = Graph()
    x = g.input("x", (1, 4, 6, 6))
    y = g.node("Sub", [g.conv(x, 4, C, name="a"), g.conv(x, 4, C, name="b")], name="sub")
    g.output(g.conv(g.relu(y), C, 4, name="head"))
    model = g.build()
    assert sorted(group_of(analyse(model), "a").sources) == ["a", "b"]
    exercise(model)


def test_add_with_graph_input_blocks() -> None:
    g = Graph()
    x = g.input("x", (1, 4, 6, 6))
    skip = g.input("skip", (1, C, 6, 6))
    y = g.node("Add", [g.conv(x, 4, C, name="c1"), skip], name="add")
    g.output(g.conv(y, C, 4, name="head"))
    dg = analyse(g.build())
    grp = group_of(dg, "c1")
    assert not grp.prunable
    assert "Add with an activation that carries no prunable channels" in reasons(dg, "c1")


def test_mul_with_untracked_conv_of_input_channels_blocks() -> None:
    """A depthwise conv of the input carries the input's (unprunable) channels."""
    g = Graph()
    x = g.input("x", (1, C, 6, 6))
    dw = g.conv(x, C, C, group=C, name="dw")
    y = g.node("Mul", [g.conv(x, C, C, name="c1"), dw], name="mul")
    g.output(g.conv(y, C, 4, name="head"))
    dg = analyse(g.build())
    assert not group_of(dg, "c1").prunable
    assert "carries no prunable channels" in reasons(dg, "c1")
