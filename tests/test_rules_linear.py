"""Gemm and MatMul rules: MLPs, Flatten->Gemm block maps, transformer FFN and attention."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from graphs import Graph, attr, checked_prune, exercise, group_of, init, node_const, plan_removing, reasons

from onnxprune.api import analyse


@pytest.mark.parametrize("trans_b", [True, False])
@pytest.mark.parametrize("bias_shape", ["vector", "row", "none"])
def test_gemm_mlp(trans_b: bool, bias_shape: str) -> None:
    g = Graph(opset=13)
    x = g.input("x", (2, 16))
    w1 = g.rand("fc1.w", (12, 16) if trans_b else (16, 12), scale=0.3)
    ins = [x, w1]
    if bias_shape != "none":
        ins.append(g.rand("fc1.b", (12,) if bias_shape == "vector" else (1, 12), scale=0.1))
    y = g.relu(g.node("Gemm", ins, name="fc1", transB=int(trans_b)))
    g.output(g.gemm(y, 12, 4, trans_b=trans_b, name="fc2"))
    model = g.build()
    dg = analyse(model)
    assert group_of(dg, "fc1").prunable and group_of(dg, "fc1").size == 12
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"fc1": [0, 11, 5]}))
    keep = [i for i in range(12) if i not in (0, 5, 11)]
    w1v, w2v = init(model, "fc1.w"), init(model, "fc2.w")
    np.testing.assert_array_equal(init(r.model, "fc1.w"), w1v[keep] if trans_b else w1v[:, keep])
    np.testing.assert_array_equal(init(r.model, "fc2.w"), w2v[:, keep] if trans_b else w2v[keep])
    if bias_shape != "none":
        assert init(r.model, "fc1.b").shape[-1] == len(keep)
    exercise(model)


def test_gemm_trans_a_consumes_axis0() -> None:
    g = Graph(opset=13)
    x = g.input("x", (2, 16))
    y = g.node("Transpose", [g.relu(g.gemm(x, 16, 12, name="fc1"))], name="t", perm=[1, 0])
    w = g.rand("fc2.w", (12, 4))
    g.output(g.node("Gemm", [y, w], name="fc2", transA=1))
    model = g.build()
    r = checked_prune(model, ratio=0.5)
    assert init(r.model, "fc2.w").shape == (6, 4)
    exercise(model)


def test_gemm_weight_from_graph_input_blocks() -> None:
    g = Graph(opset=13)
    x = g.input("x", (2, 16))
    w = g.input("w", (12, 4))
    g.output(g.node("Gemm", [g.relu(g.gemm(x, 16, 12, name="fc1")), w], name="fc2"))
    dg = analyse(g.build())
    assert "Gemm weight or bias is computed at run time" in reasons(dg, "fc1")


@pytest.mark.parametrize("hw", [1, 3])
def test_flatten_gemm_block_mapping(hw: int) -> None:
    """Removing conv channel c removes the Gemm columns c*HW .. (c+1)*HW - 1."""
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 3, 3))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    if hw == 1:
        y = g.node("GlobalAveragePool", [y], name="gap")
    y = g.node("Flatten", [y], name="flat", axis=1)
    g.output(g.gemm(y, 8 * hw * hw, 10, name="fc"))
    model = g.build()
    dg = analyse(model)
    assert group_of(dg, "c1").prunable and group_of(dg, "c1").size == 8
    removed = [1, 6]
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"c1": removed}))
    block = hw * hw
    cols = [c * block + j for c in range(8) if c not in removed for j in range(block)]
    np.testing.assert_array_equal(init(r.model, "fc.w"), init(model, "fc.w")[:, cols])
    assert init(r.model, "fc.w").shape == (10, 6 * block)
    exercise(model)


def test_reshape_to_2d_then_gemm() -> None:
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 2, 2))
    y = g.relu(g.conv(x, 4, 8, name="c1"))
    y = g.node("Reshape", [y, g.ints("tgt", [1, -1])], name="rs")
    g.output(g.gemm(y, 32, 10, name="fc"))
    model = g.build()
    r = checked_prune(model, ratio=0.5)
    assert init(r.model, "fc.w").shape == (10, 16)
    np.testing.assert_array_equal(node_const(r.model, "rs", 1), [1, -1])
    exercise(model)


def ffn(act: str, opset: int) -> onnx.ModelProto:
    g = Graph(opset=opset)
    x = g.input("x", (1, 4, 16))
    h = g.matmul(x, 16, 32, bias=True, name="up")
    h = g.node(act, [h], name="act")
    y = g.matmul(h, 32, 16, bias=True, name="down")
    g.output(g.node("Add", [x, y], name="residual"))
    return g.build()


@pytest.mark.parametrize(("act", "opset"), [("Relu", 13), ("Gelu", 20), ("Sigmoid", 17)])
def test_ffn_hidden_dim(act: str, opset: int) -> None:
    model = ffn(act, opset)
    dg = analyse(model)
    up, down = group_of(dg, "up"), group_of(dg, "down")
    assert up.prunable and up.size == 32
    assert not down.prunable
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"up": list(range(0, 32, 4))}))
    keep = [i for i in range(32) if i % 4]
    np.testing.assert_array_equal(init(r.model, "up.w"), init(model, "up.w")[:, keep])
    np.testing.assert_array_equal(init(r.model, "up.b"), init(model, "up.b")[keep])
    np.testing.assert_array_equal(init(r.model, "down.w"), init(model, "down.w")[keep])
    exercise(model)


def attention(opset: int = 17, heads: int = 2, head_dim: int = 8, t: int = 4) -> onnx.ModelProto:
    d = heads * head_dim
    g = Graph(opset=opset)
    x = g.input("x", (1, t, d))
    split = g.ints("heads_shape", [1, t, heads, head_dim])
    q = g.node("Transpose", [g.node("Reshape", [g.matmul(x, d, d, bias=True, name="q"), split], name="q_rs")],
               name="q_t", perm=[0, 2, 1, 3])
    k = g.node("Transpose", [g.node("Reshape", [g.matmul(x, d, d, bias=True, name="k"), split], name="k_rs")],
               name="k_t", perm=[0, 2, 3, 1])
    v = g.node("Transpose", [g.node("Reshape", [g.matmul(x, d, d, bias=True, name="v"), split], name="v_rs")],
               name="v_t", perm=[0, 2, 1, 3])
    s = g.node("MatMul", [q, k], name="qk")
    s = g.node("Div", [s, g.const("sqrt_d", np.array(np.sqrt(head_dim), dtype=np.float32))], name="scale")
    p = g.node("Softmax", [s], name="softmax", axis=-1)
    o = g.node("MatMul", [p, v], name="pv")
    o = g.node("Transpose", [o], name="o_t", perm=[0, 2, 1, 3])
    o = g.node("Reshape", [o, g.ints("merge_shape", [1, t, d])], name="merge")
    g.output(g.matmul(o, d, d, bias=True, name="out"))
    return g.build()


def test_attention_head_dim_groups() -> None:
    dg = analyse(attention(), heads="dim")
    qk, v = group_of(dg, "q"), group_of(dg, "v")
    assert sorted(qk.sources) == ["k", "q"] and qk.prunable and qk.size == 8
    assert v.sources == ["v"] and v.prunable and v.size == 8
    assert qk.kind == v.kind == "head_dim" and group_of(dg, "out").kind == "channel"
    assert not group_of(dg, "out").prunable


def test_attention_head_dim_is_pruned() -> None:
    model = attention()
    dg = analyse(model, heads="dim")
    r = checked_prune(model, dg=dg, plan=plan_removing(dg, {"q": [1, 2], "v": [0, 7, 3]}))
    qkeep = [i for i in range(16) if i % 8 not in (1, 2)]
    vkeep = [i for i in range(16) if i % 8 not in (0, 3, 7)]
    for name in ("q", "k"):
        np.testing.assert_array_equal(init(r.model, f"{name}.w"), init(model, f"{name}.w")[:, qkeep])
        np.testing.assert_array_equal(init(r.model, f"{name}.b"), init(model, f"{name}.b")[qkeep])
    np.testing.assert_array_equal(init(r.model, "v.w"), init(model, "v.w")[:, vkeep])
    np.testing.assert_array_equal(init(r.model, "out.w"), init(model, "out.w")[vkeep])
    np.testing.assert_array_equal(node_const(r.model, "q_rs", 1), [1, 4, 2, 6])
    np.testing.assert_array_equal(node_const(r.model, "v_rs", 1), [1, 4, 2, 5])
    np.testing.assert_array_equal(node_const(r.model, "merge", 1), [1, 4, 10])
    exercise(model)


def test_softmax_over_projection_features_blocks() -> None:
    """In attention the softmax runs over keys (no channels); over a projection's features it mixes them."""
    g = Graph(opset=17)
    x = g.input("x", (1, 4, 16))
    h = g.matmul(x, 16, 16, name="q")
    h = g.node("Softmax", [h], name="sm", axis=-1)
    g.output(g.matmul(h, 16, 8, name="o"))
    dg = analyse(g.build())
    assert "Softmax mixes the channels of this axis" in reasons(dg, "q")


def test_matmul_constant_left_operand_blocks() -> None:
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 16))
    h = g.matmul(x, 16, 8, name="a")
    left = g.rand("left", (3, 4))
    y = g.node("MatMul", [left, h], name="lm")
    g.output(g.matmul(y, 8, 4, name="b"))
    dg = analyse(g.build())
    assert "MatMul with a constant left operand" in reasons(dg, "a")


def test_matmul_by_vector_blocks() -> None:
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 16))
    h = g.relu(g.matmul(x, 16, 8, name="a"))
    g.output(g.node("MatMul", [h, g.rand("vec", (8,))], name="mv"))
    dg = analyse(g.build())
    assert "MatMul by a vector" in reasons(dg, "a")


def test_matmul_of_two_activations_couples_contracted_channels() -> None:
    """a @ b^T over the feature axis: both projections lose the same features."""
    g = Graph(opset=13)
    x = g.input("x", (1, 4, 16))
    a = g.matmul(x, 16, 8, name="a")
    b = g.node("Transpose", [g.matmul(x, 16, 8, name="b")], name="bt", perm=[0, 2, 1])
    g.output(g.node("MatMul", [a, b], name="ab"))
    model = g.build()
    dg = analyse(model)
    assert sorted(group_of(dg, "a").sources) == ["a", "b"]
    exercise(model)


def test_gemm_attrs_untouched() -> None:
    g = Graph(opset=13)
    x = g.input("x", (2, 16))
    w = g.rand("fc1.w", (12, 16))
    y = g.relu(g.node("Gemm", [x, w, g.rand("fc1.b", (12,))], name="fc1", transB=1, alpha=0.5, beta=2.0))
    g.output(g.gemm(y, 12, 4, name="fc2"))
    model = g.build()
    r = checked_prune(model, ratio=0.5)
    assert attr(r.model, "fc1", "alpha") == 0.5 and attr(r.model, "fc1", "beta") == 2.0
