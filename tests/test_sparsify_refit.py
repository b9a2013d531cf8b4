"""Wanda column norms, least-squares re-fits and the bias-free dense targets, against brute force."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.calib.collect import collect_stats, stream_tensors
from onnxprune.io import runtime
from onnxprune.passes.sparsify import sparsify
from onnxprune.sparsity.colnorms import column_norms
from onnxprune.sparsity.masks import wanda_column_score
from onnxprune.sparsity.refit import refit_rows
from onnxprune.sparsity.sites import select_targets
from onnxprune.sparsity.sparsegpt import sparsegpt
from onnxprune.sparsity.xw_targets import with_bias_free_outputs


def two_layer_model(rng: np.random.Generator, *, group: int = 1, gemm_trans_b: int = 1) -> onnx.ModelProto:
    """Conv (stride 2, asymmetric pads, bias) -> Relu -> Conv (grouped) -> GAP -> Gemm (alpha 0.5, bias)."""
    f = np.float32
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 7, 7])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    fc = rng.standard_normal((5, 16)).astype(f)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="c1", strides=[2, 2], pads=[1, 0, 1, 1]),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "w2"], ["c"], name="c2", pads=[1, 1, 1, 1], group=group),
        helper.make_node("GlobalAveragePool", ["c"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["fl"], name="flat"),
        helper.make_node("Gemm", ["fl", "wf", "bf"], ["y"], name="fc", transB=gemm_trans_b, alpha=0.5),
    ]
    inits = [numpy_helper.from_array(rng.standard_normal((16, 4, 3, 3)).astype(f), "w1"),
             numpy_helper.from_array(rng.standard_normal(16).astype(f), "b1"),
             numpy_helper.from_array(rng.standard_normal((16, 16 // group, 3, 3)).astype(f), "w2"),
             numpy_helper.from_array(fc if gemm_trans_b else fc.T.copy(), "wf"),
             numpy_helper.from_array(rng.standard_normal(5).astype(f), "bf")]
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits), opset_imports=[helper.make_opsetid("", 17)])


def feeds(rng: np.random.Generator, n: int = 24) -> list[dict[str, np.ndarray]]:
    x = rng.standard_normal((n, 4, 7, 7)).astype(np.float32) + 0.5
    return [{"x": x[: n // 2]}, {"x": x[n // 2:]}]


@pytest.mark.parametrize("group", [1, 2])
def test_column_norms_match_the_im2col_gram_diagonal(group: int) -> None:
    rng = np.random.default_rng(0)
    model = two_layer_model(rng, group=group)
    targets, _ = select_targets(model, pattern=None, method="wanda")
    data = feeds(rng)
    norms = column_norms(model, iter(data), targets)
    grams = collect_stats(model, iter(data), grams=[t.key for t in targets], max_rows=None).grams
    for t in targets:
        diag = np.stack([np.diag(g.hessian) for g in grams[t.key].groups])
        np.testing.assert_allclose(norms[t.key].reshape(diag.shape), np.sqrt(diag), rtol=1e-9, err_msg=t.key)
    # Stride 2, pad 1 on 7 rows: kernel row 0 sees input rows -1, 1, 3, 5 (3 of 4 real), row 1 all 4.
    c1 = norms["c1"][0] ** 2
    assert c1[:, 0, :].sum() == pytest.approx(0.75 * c1[:, 1, :].sum(), rel=0.1)


def test_wanda_column_score_broadcasts_per_group_and_tap() -> None:
    rng = np.random.default_rng(1)
    w = rng.standard_normal((6, 2, 3, 3))
    norm = rng.random((3, 2, 3, 3))  # group 3: output channels 2g, 2g+1 read group g
    score = wanda_column_score(w, norm, op_type="Conv", reduction_axis=1, group=3)
    for k in range(6):
        np.testing.assert_allclose(score[k], np.abs(w[k]) * norm[k // 2])


def test_refit_rows_is_the_masked_least_squares_solution() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((400, 12)) @ rng.standard_normal((12, 12))
    w = rng.standard_normal((5, 12))
    y = x @ w.T + 0.1 * rng.standard_normal((400, 5))
    keep = rng.random((5, 12)) < 0.5
    keep[0] = True
    keep[1] = False
    got = refit_rows(w * keep, keep, x.T @ x, x.T @ y, percdamp=0.0)
    for r in range(5):
        s = np.flatnonzero(keep[r])
        ref = np.zeros(12)
        if len(s):
            ref[s] = np.linalg.lstsq(x[:, s], y[:, r], rcond=None)[0]
        np.testing.assert_allclose(got[r], ref, atol=1e-8)


def test_bias_free_targets_give_pruned_x_times_dense_output() -> None:
    rng = np.random.default_rng(3)
    dense = two_layer_model(rng, gemm_trans_b=0)
    targets, _ = select_targets(dense, pattern=None, method="sparsegpt")
    aug, names = with_bias_free_outputs(dense, targets)
    assert len(aug.graph.node) == len(dense.graph.node) + 3 and set(names) == {"c1", "c2", "fc"}
    pruned = sparsify(dense, sparsity=0.5, method="magnitude", refit=False).model
    data = feeds(rng)
    keys = [t.key for t in targets]
    st = collect_stats(pruned, iter(data), grams=keys, targets=names, target_model=aug, max_rows=None).grams
    x_fc = np.concatenate([v["fl"] for v in stream_tensors(pruned, ["fl"], data)]).astype(np.float64)
    x_dense = np.concatenate([v["fl"] for v in stream_tensors(dense, ["fl"], data)]).astype(np.float64)
    wf = numpy_helper.to_array(next(t for t in dense.graph.initializer if t.name == "wf")).astype(np.float64)
    np.testing.assert_allclose(st["fc"].gram.xty, x_fc.T @ (x_dense @ wf), rtol=1e-4, atol=1e-4)  # no bias, alpha 1


def numpy_reference_sparsegpt(w: np.ndarray, h: np.ndarray, *, sparsity: float = 0.0, prunen: int = 0,
                              prunem: int = 0, blocksize: int = 128, percdamp: float = 0.01) -> np.ndarray:
    """Line-by-line numpy port of `SparseGPT.fasterprune` (IST-DASLab/sparsegpt).

    One deliberate difference: the reference prunes `tmp <= sorted[int(n * sparsity)]`, i.e. one
    weight more than the target per block; this port (like onnxprune) prunes exactly int(n * sparsity).
    """
    w, h = w.copy(), h.copy()
    cols = w.shape[1]
    dead = np.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    h += percdamp * np.mean(np.diag(h)) * np.eye(cols)
    hinv = np.linalg.cholesky(np.linalg.inv(h)).T
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        w1, q1, err1 = w[:, i1:i2].copy(), np.zeros((w.shape[0], i2 - i1)), np.zeros((w.shape[0], i2 - i1))
        hinv1 = hinv[i1:i2, i1:i2]
        if prunen == 0:
            tmp = w1**2 / np.diag(hinv1)[None] ** 2
            mask1 = tmp < np.sort(tmp.reshape(-1))[int(tmp.size * sparsity)]
        else:
            mask1 = np.zeros_like(w1, dtype=bool)
        for i in range(i2 - i1):
            col, d = w1[:, i], hinv1[i, i]
            if prunen and i % prunem == 0:
                tmp = w1[:, i:i + prunem] ** 2 / np.diag(hinv1)[i:i + prunem][None] ** 2
                low = np.argsort(tmp, axis=1)[:, :prunen]
                np.put_along_axis(mask1[:, i:i + prunem], low, True, axis=1)
            q = np.where(mask1[:, i], 0.0, col)
            q1[:, i] = q
            e = (col - q) / d
            w1[:, i:] -= np.outer(e, hinv1[i, i:])
            err1[:, i] = e
        w[:, i1:i2] = q1
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return w


@pytest.mark.parametrize(("sparsity", "pattern"), [(0.5, None), (None, (2, 4)), (0.7, None)])
def test_sparsegpt_matches_the_reference_implementation(sparsity: float | None, pattern: tuple[int, int] | None) -> None:
    rng = np.random.default_rng(4)
    x = np.maximum(rng.standard_normal((600, 96)) @ rng.standard_normal((96, 96)), 0.0)  # ReLU-like, correlated
    x[:, 5] = 0.0  # a dead column
    w = rng.standard_normal((24, 96))
    got, _ = sparsegpt(w, x.T @ x, sparsity=sparsity, pattern=pattern, blocksize=32)
    ref = numpy_reference_sparsegpt(w, x.T @ x, sparsity=sparsity or 0.0, prunen=2 if pattern else 0,
                                    prunem=4 if pattern else 0, blocksize=32)
    np.testing.assert_allclose(got, ref, rtol=1e-7, atol=1e-9)


def dense_output_error(dense: onnx.ModelProto, sparse: onnx.ModelProto, data: list[dict[str, np.ndarray]]) -> float:
    ref = np.concatenate([runtime.run(dense, f)["y"] for f in data])
    out = np.concatenate([runtime.run(sparse, f)["y"] for f in data])
    return float(((out - ref) ** 2).sum() / (ref**2).sum())


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
@pytest.mark.parametrize(("sparsity", "pattern"), [(0.5, None), (None, (2, 4))])
def test_refit_reduces_the_model_output_error(method: str, sparsity: float | None,
                                              pattern: tuple[int, int] | None) -> None:
    rng = np.random.default_rng(5)
    dense = two_layer_model(rng)
    data = feeds(rng, 64)
    errs = {}
    for refit in (False, True):
        res = sparsify(dense, sparsity=sparsity, pattern=pattern, method=method, calibration=data, refit=refit)
        errs[refit] = dense_output_error(dense, res.model, data)
        for t in res.model.graph.initializer:  # biases untouched
            if t.name.startswith("b"):
                orig = next(o for o in dense.graph.initializer if o.name == t.name)
                np.testing.assert_array_equal(numpy_helper.to_array(t), numpy_helper.to_array(orig))
    assert errs[True] < 0.7 * errs[False], errs
