"""Activation capture and streaming statistics: channel stats, im2col Grams vs brute force and ORT."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.calib.collect import channel_axis_for, collect_channel_stats, collect_grams, collect_stats
from onnxprune.calib.im2col import ConvGeometry
from onnxprune.errors import OnnxPruneError


def conv_model(x_shape: tuple[int, ...], w: np.ndarray, **attrs: object) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *x_shape[1:]])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv", **attrs)
    relu = helper.make_node("Relu", ["y"], ["r"], name="relu")
    r = helper.make_tensor_value_info("r", TensorProto.FLOAT, None)
    g = helper.make_graph([node, relu], "g", [x], [r], [numpy_helper.from_array(w, "w")])
    del y
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def brute_gram(x: np.ndarray, geo: ConvGeometry, group: int) -> list[np.ndarray]:
    n, c, h, w = x.shape
    top, left, bottom, right = geo.resolve_pads((h, w))
    xp = np.zeros((n, c, h + top + bottom, w + left + right))
    xp[:, :, top:top + h, left:left + w] = x
    (kh, kw), (sh, sw), (dh, dw) = geo.kernel, geo.strides, geo.dilations
    ho = (xp.shape[2] - (kh - 1) * dh - 1) // sh + 1
    wo = (xp.shape[3] - (kw - 1) * dw - 1) // sw + 1
    cg = c // group
    out = []
    for g in range(group):
        rows = []
        for b in range(n):
            for i in range(ho):
                for j in range(wo):
                    patch = [xp[b, g * cg + ci, i * sh + a * dh, j * sw + e * dw]
                             for ci in range(cg) for a in range(kh) for e in range(kw)]
                    rows.append(patch)
        m = np.asarray(rows)
        out.append(m.T @ m)
    return out


CASES = [
    dict(pads=[1, 1, 1, 1]),
    dict(pads=[0, 1, 2, 0], strides=[2, 1]),
    dict(pads=[2, 2, 2, 2], dilations=[2, 2]),
    dict(pads=[1, 1, 1, 1], group=2),
    dict(auto_pad="SAME_UPPER", strides=[2, 2]),
    dict(auto_pad="SAME_LOWER", strides=[2, 2]),
    dict(auto_pad="VALID", dilations=[1, 2]),
    dict(pads=[1, 0, 1, 1], strides=[2, 3], dilations=[2, 1], group=4),
]


@pytest.mark.parametrize("attrs", CASES)
def test_conv_gram_matches_brute_force_and_ort(attrs: dict) -> None:
    rng = np.random.default_rng(0)
    group = int(attrs.get("group", 1))
    x = rng.standard_normal((3, 4, 7, 6)).astype(np.float32)
    w = rng.standard_normal((8, 4 // group, 3, 2)).astype(np.float32)
    model = conv_model(x.shape, w, kernel_shape=[3, 2], **attrs)
    grams = collect_grams(model, [{"x": x[:2]}, {"x": x[2:]}], ["conv"], targets={"conv": "y"}, max_rows=None)
    lg = grams["conv"]
    assert lg.geometry is not None
    expected = brute_gram(x.astype(np.float64), lg.geometry, group)
    assert len(lg.groups) == group
    kg = 8 // group
    for g in range(group):
        np.testing.assert_allclose(lg.groups[g].hessian, expected[g], rtol=1e-9, atol=1e-9)
        # X @ W_gᵀ is ORT's conv output, so XᵀY = XᵀX W_gᵀ: proves the column order and pads agree with ORT.
        wg = w[g * kg:(g + 1) * kg].reshape(kg, -1).astype(np.float64)
        assert lg.groups[g].xty is not None
        np.testing.assert_allclose(lg.groups[g].xty, lg.groups[g].hessian @ wg.T, rtol=1e-4, atol=1e-3)


def test_conv_gram_subsampling_is_seeded_and_weighted() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 2, 16, 16)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    model = conv_model(x.shape, w, pads=[1, 1, 1, 1])
    full = collect_grams(model, [{"x": x}], ["conv"], max_rows=None)["conv"].gram
    a = collect_grams(model, [{"x": x}], ["conv"], max_rows=300, seed=5)["conv"].gram
    b = collect_grams(model, [{"x": x}], ["conv"], max_rows=300, seed=5)["conv"].gram
    np.testing.assert_array_equal(a.hessian, b.hessian)
    assert a.rows == pytest.approx(full.rows)
    # An unbiased estimate: the diagonal is within ~25% of the full one.
    ratio = np.diag(a.hessian) / np.diag(full.hessian)
    assert np.all(np.abs(ratio - 1) < 0.25)


def _linear_model(op: str, a_shape: list[int | str], w: np.ndarray, **attrs: object) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, a_shape)
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    node = helper.make_node(op, ["x", "w"], ["y"], name="lin", **attrs)
    g = helper.make_graph([node], "g", [x], [out], [numpy_helper.from_array(w, "w")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("trans_a", [0, 1])
def test_gemm_gram_respects_trans_a(trans_a: int) -> None:
    rng = np.random.default_rng(2)
    a = rng.standard_normal((5, 6)).astype(np.float32)  # [M, K] or [K, M]
    w = rng.standard_normal((6 if not trans_a else 5, 3)).astype(np.float32)
    model = _linear_model("Gemm", list(a.shape), w, transA=trans_a)
    g = collect_grams(model, [{"x": a}], ["lin"], targets={"lin": "y"})["lin"].gram
    x = a.T if trans_a else a
    np.testing.assert_allclose(g.hessian, x.T.astype(np.float64) @ x, rtol=1e-6)
    assert g.xty is not None
    np.testing.assert_allclose(g.xty, g.hessian @ w, rtol=1e-4, atol=1e-4)
    assert channel_axis_for(model, "x") == (0 if trans_a else 1)


def test_matmul_gram_flattens_leading_dims() -> None:
    rng = np.random.default_rng(3)
    a = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    w = rng.standard_normal((5, 7)).astype(np.float32)
    model = _linear_model("MatMul", ["B", 3, 4, 5], w)
    g = collect_grams(model, [{"x": a[:1]}, {"x": a[1:]}], ["lin"])["lin"].gram
    flat = a.reshape(-1, 5).astype(np.float64)
    np.testing.assert_allclose(g.hessian, flat.T @ flat, rtol=1e-9)
    assert g.rows == 24
    assert channel_axis_for(model, "x") == -1


def test_channel_stats_streaming_matches_full() -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 4, 5, 5)).astype(np.float32)
    w = rng.standard_normal((3, 4, 1, 1)).astype(np.float32)
    model = conv_model(x.shape, w)
    stats = collect_channel_stats(model, [{"x": x[:2]}, {"x": x[2:5]}, {"x": x[5:]}], ["x", "r"])
    s = stats["x"]
    flat = x.transpose(0, 2, 3, 1).reshape(-1, 4).astype(np.float64)
    np.testing.assert_allclose(s.mean, flat.mean(0), rtol=1e-9)
    np.testing.assert_allclose(s.var, flat.var(0), rtol=1e-9)
    np.testing.assert_allclose(s.l2, np.linalg.norm(flat, axis=0), rtol=1e-9)
    np.testing.assert_allclose(s.mean_abs, np.abs(flat).mean(0), rtol=1e-9)
    r = np.maximum(np.einsum("nchw,kc->nkhw", x, w[:, :, 0, 0]), 0)
    apoz = (r == 0).mean(axis=(0, 2, 3))
    np.testing.assert_allclose(stats["r"].apoz, apoz, atol=1e-12)
    assert stats["r"].count == 6 * 25


def test_collect_stats_with_target_model() -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    w = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    dense = conv_model(x.shape, w, pads=[1, 1, 1, 1])
    pruned = conv_model(x.shape, w * (rng.random(w.shape) > 0.5), pads=[1, 1, 1, 1])
    res = collect_stats(pruned, [{"x": x}], grams=["conv"], targets={"conv": "y"}, target_model=dense,
                        max_rows=None)
    g = res.grams["conv"].gram
    assert g.xty is not None
    np.testing.assert_allclose(g.xty, g.hessian @ w.reshape(2, -1).T.astype(np.float64), rtol=1e-4, atol=1e-3)
    assert res.batches == 1 and res.samples == 2


def test_bad_requests() -> None:
    w = np.ones((2, 3, 1, 1), np.float32)
    model = conv_model((1, 3, 4, 4), w)
    feeds = [{"x": np.ones((1, 3, 4, 4), np.float32)}]
    with pytest.raises(OnnxPruneError, match="no node named"):
        collect_grams(model, feeds, ["nope"])
    with pytest.raises(OnnxPruneError, match="not produced"):
        collect_channel_stats(model, feeds, ["nope"])
    with pytest.raises(OnnxPruneError, match="Conv, ConvTranspose, Gemm or MatMul"):
        collect_grams(model, feeds, ["relu"])
    with pytest.raises(OnnxPruneError, match="no batches"):
        collect_channel_stats(model, [], ["r"])
