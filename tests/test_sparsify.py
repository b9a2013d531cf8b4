"""Sparsity masks (magnitude, wanda, N:M on the TensorRT axis) and SparsifyPass behaviour."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.calib.source import CalibrationWarning
from onnxprune.errors import OnnxPruneError
from onnxprune.passes.sparsify import SparsifyPass, parse_pattern, sparsify
from onnxprune.sparsity.compliance import nm_report, report_json, report_table
from onnxprune.sparsity.layout import is_nm_compliant, weight_sites
from onnxprune.sparsity.masks import nm_mask, unstructured_mask, wanda_score


def weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def gemm_model(w: np.ndarray, *, trans_b: int, k: int) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", k])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    node = helper.make_node("Gemm", ["x", "w"], ["y"], name="fc", transB=trans_b)
    g = helper.make_graph([node], "g", [x], [y], [numpy_helper.from_array(w, "w")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


# Input columns with norms exactly [1, 10, 1, 0.1].
NORM_X = np.diag([1.0, 10.0, 1.0, 0.1]).astype(np.float32)
W_ROWS = np.array([[1.0, 0.2, 3.0, 4.0], [-2.0, 0.5, 1.0, 0.3]], np.float32)  # [out, in]
# scores row0 = [1, 2, 3, 0.4] -> keep in 1, 2; row1 = [2, 5, 1, 0.03] -> keep in 0, 1
WANDA_KEEP = np.array([[0, 1, 1, 0], [1, 1, 0, 0]], bool)
MAGNITUDE_KEEP = np.array([[0, 0, 1, 1], [1, 0, 1, 0]], bool)


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize(("method", "keep"), [("wanda", WANDA_KEEP), ("magnitude", MAGNITUDE_KEEP)])
def test_gemm_masks_by_hand(trans_b: int, method: str, keep: np.ndarray) -> None:
    w = W_ROWS if trans_b else W_ROWS.T.copy()
    model = gemm_model(w, trans_b=trans_b, k=4)
    res = sparsify(model, sparsity=0.5, method=method, calibration=[{"x": NORM_X}])
    got = weights(res.model)["w"]
    got_rows = got if trans_b else got.T
    np.testing.assert_array_equal(got_rows != 0, keep)
    np.testing.assert_array_equal(got_rows[keep], W_ROWS[keep])


def conv_model(w: np.ndarray, c: int, *, group: int = 1, name: str = "conv", **attrs: object) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", c, 6, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    node = helper.make_node("Conv", ["x", "w"], ["y"], name=name, group=group, **attrs)
    g = helper.make_graph([node], "g", [x], [y], [numpy_helper.from_array(w, "w")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_wanda_grouped_conv_uses_the_groups_channels() -> None:
    w = np.array([[2.0, 1.0], [1.0, 2.0]], np.float32).reshape(2, 2, 1, 1)
    norms = np.array([1.0, 5.0, 5.0, 1.0])
    score = wanda_score(w, norms, op_type="Conv", reduction_axis=1, group=2)
    np.testing.assert_allclose(score[:, :, 0, 0], [[2.0, 5.0], [5.0, 2.0]])
    x = np.zeros((1, 4, 6, 6), np.float32)
    x[0, :, 0, 0] = norms
    res = sparsify(conv_model(w, 4, group=2), sparsity=0.5, method="wanda", calibration=[{"x": x}])
    np.testing.assert_array_equal(weights(res.model)["w"][:, :, 0, 0] != 0, [[False, True], [True, False]])


def test_unstructured_mask_is_per_output_row() -> None:
    rng = np.random.default_rng(0)
    score = rng.random((6, 4, 3, 3)) * np.arange(1, 7)[:, None, None, None]  # rows with very different scales
    keep = unstructured_mask(score, 0.75, (0,))
    assert (keep.reshape(6, -1).sum(axis=1) == 36 - 27).all()
    keep2 = unstructured_mask(rng.random((5, 8)), 0.5, (1,))  # MatMul B [K, N]: rows are columns
    assert (keep2.sum(axis=0) == 3).all()  # floor(5 * 0.5) = 2 pruned per column


def test_nm_mask_keeps_largest_in_each_group() -> None:
    s = np.array([[4.0, 1.0, 3.0, 2.0, 0.1, 0.2, 0.3, 0.4]])
    np.testing.assert_array_equal(nm_mask(s, 2, 4, 1), [[1, 0, 1, 0, 0, 0, 1, 1]])
    with pytest.raises(ValueError):
        nm_mask(s, 4, 4, 1)


def matmul_model(b: np.ndarray) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, b.shape[0]])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    node = helper.make_node("MatMul", ["x", "b"], ["y"], name="mm")
    g = helper.make_graph([node], "g", [x], [y], [numpy_helper.from_array(b, "b")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _nm_cases() -> list[tuple[str, onnx.ModelProto, dict[str, np.ndarray]]]:
    rng = np.random.default_rng(1)
    f = np.float32
    return [
        ("conv", conv_model(rng.standard_normal((8, 8, 3, 3)).astype(f), 8, pads=[1, 1, 1, 1]),
         {"x": rng.standard_normal((4, 8, 6, 6)).astype(f)}),
        ("conv-group", conv_model(rng.standard_normal((8, 4, 3, 2)).astype(f), 8, group=2, pads=[1, 0, 1, 1]),
         {"x": rng.standard_normal((4, 8, 6, 6)).astype(f)}),
        ("matmul", matmul_model(rng.standard_normal((8, 6)).astype(f)), {"x": rng.standard_normal((4, 3, 8)).astype(f)}),
        ("gemm-t0", gemm_model(rng.standard_normal((8, 6)).astype(f), trans_b=0, k=8),
         {"x": rng.standard_normal((16, 8)).astype(f)}),
        ("gemm-t1", gemm_model(rng.standard_normal((6, 8)).astype(f), trans_b=1, k=8),
         {"x": rng.standard_normal((16, 8)).astype(f)}),
    ]


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
@pytest.mark.parametrize("case", range(5))
def test_nm_compliant_on_tensorrt_axis(method: str, case: int) -> None:
    name, model, feed = _nm_cases()[case]
    site = weight_sites(model)[0]
    res = sparsify(model, pattern=(2, 4), method=method, calibration=[feed])
    w = weights(res.model)[site.initializer]
    assert is_nm_compliant(w, site.reduction_axis, 2, 4), name
    # Exactly 2 of every 4 survive (the weights are dense Gaussians).
    assert np.count_nonzero(w) == w.size // 2
    # The expected axis: Conv 1, MatMul 0, Gemm 0 (transB=0) or 1 (transB=1).
    assert site.reduction_axis == {"conv": 1, "conv-group": 1, "matmul": 0, "gemm-t0": 0, "gemm-t1": 1}[name]
    rows = nm_report(res.model)
    assert rows[0].nm_compliant and rows[0].sparsity == pytest.approx(0.5)


def test_pass_copies_and_lists_skipped_layers() -> None:
    rng = np.random.default_rng(2)
    f = np.float32
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, None)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 8)).astype(f), n) for n in ("shared", "own", "odd")]
    inits[2] = numpy_helper.from_array(rng.standard_normal((6, 8)).astype(f), "odd")
    nodes = [
        helper.make_node("MatMul", ["x", "shared"], ["a"], name="mm_a"),
        helper.make_node("MatMul", ["a", "shared"], ["b"], name="mm_b"),
        helper.make_node("MatMul", ["b", "own"], ["c"], name="mm_own"),
        helper.make_node("Transpose", ["c"], ["c_t"], name="tr"),
        helper.make_node("MatMul", ["c", "c_t"], ["d"], name="mm_act"),  # activation x activation
        helper.make_node("Gemm", ["c", "odd"], ["out"], name="fc_odd", transB=1),
    ]
    d = helper.make_tensor_value_info("d", TensorProto.FLOAT, None)
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y, d], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    before = model.SerializeToString()
    res = SparsifyPass(pattern=(2, 4))(model)
    assert model.SerializeToString() == before
    text = "\n".join(res.notes)
    assert "skipped mm_a (MatMul): weight shared by 2 nodes" in text
    assert "skipped mm_b (MatMul): weight shared by 2 nodes" in text
    assert "skipped mm_act (MatMul): weight 'c_t' is not an initializer" in text
    assert "magnitude 2:4: sparsified 2 of 2 weights" in text  # mm_own and fc_odd (reduction 8)
    res5 = SparsifyPass(pattern=(2, 5))(model)
    assert "skipped fc_odd (Gemm): reduction length 8 is not a multiple of 5" in "\n".join(res5.notes)
    got = weights(res.model)
    assert np.count_nonzero(got["shared"]) == 64 and np.count_nonzero(got["own"]) == 32


def test_bad_options_and_random_fallback_warns() -> None:
    with pytest.raises(OnnxPruneError, match="exactly one"):
        SparsifyPass(sparsity=0.5, pattern=(2, 4))
    with pytest.raises(OnnxPruneError, match="exactly one"):
        SparsifyPass()
    with pytest.raises(OnnxPruneError, match="unknown method"):
        SparsifyPass(sparsity=0.5, method="obs")
    with pytest.raises(OnnxPruneError, match=r"\[0, 1\)"):
        SparsifyPass(sparsity=1.0)
    with pytest.raises(OnnxPruneError, match="N:M"):
        parse_pattern("4:2")
    assert parse_pattern("2:4") == (2, 4)
    model = gemm_model(W_ROWS, trans_b=1, k=4)
    with pytest.warns(CalibrationWarning, match="random inputs"):
        res = sparsify(model, sparsity=0.5, method="wanda")
    assert np.count_nonzero(weights(res.model)["w"]) == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sparsify(model, sparsity=0.5, method="magnitude")


def test_report_json_and_table() -> None:
    model = conv_model(np.ones((4, 3, 3, 3), np.float32), 3)
    rows = nm_report(model)
    assert rows[0].sparsity == 0.0 and not rows[0].nm_compliant  # 3 input channels: never 2:4
    data = report_json(rows)
    assert data["weights"][0]["shape"] == [4, 3, 3, 3] and data["count"] == 1
    assert report_table(rows).row_count == 1
