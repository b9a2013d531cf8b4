"""SparseGPT: OBS updates beat magnitude pruning; Conv column order keeps N:M on the channel axis."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.calib.im2col import conv_geometry, im2col_rows, patch_view, sample_positions
from onnxprune.io import runtime
from onnxprune.passes.sparsify import sparsify
from onnxprune.sparsity.masks import nm_mask, unstructured_mask
from onnxprune.sparsity.sparsegpt import sparsegpt
from onnxprune.sparsity.views import conv_column_perm, weight_from_2d, weight_to_2d


def reconstruction_error(w_old: np.ndarray, w_new: np.ndarray, h: np.ndarray) -> float:
    """‖X Wᵀ_old - X Wᵀ_new‖²_F = tr((W_old - W_new) H (W_old - W_new)ᵀ)."""
    dw = np.asarray(w_old, np.float64) - np.asarray(w_new, np.float64)
    return float(np.einsum("ij,jk,ik->", dw, h, dw))


def correlated(rng: np.random.Generator, rows: int, d: int) -> np.ndarray:
    mix = np.eye(d) + 2.0 * rng.standard_normal((d, d)) / np.sqrt(d)
    return rng.standard_normal((rows, d)) @ mix


@pytest.mark.parametrize(("sparsity", "pattern"), [(0.5, None), (None, (2, 4)), (0.7, None)])
def test_sparsegpt_beats_magnitude_on_correlated_inputs(sparsity: float | None, pattern: tuple[int, int] | None) -> None:
    rng = np.random.default_rng(0)
    x = correlated(rng, 1024, 192)
    h = x.T @ x
    w = rng.standard_normal((48, 192))
    new, keep = sparsegpt(w, h, sparsity=sparsity, pattern=pattern, blocksize=64)
    mag = nm_mask(np.abs(w), 2, 4, 1) if pattern else unstructured_mask(np.abs(w), float(sparsity), (0,))
    err_gpt = reconstruction_error(w, new, h)
    err_mag = reconstruction_error(w, w * mag, h)
    assert err_gpt < 0.8 * err_mag
    assert (new[~keep] == 0).all()
    assert np.count_nonzero(new) == pytest.approx(w.size * (0.5 if pattern else 1 - float(sparsity)), rel=0.01)
    if pattern:
        assert (np.count_nonzero(new.reshape(48, -1, 4), axis=-1) <= 2).all()


def test_sparsegpt_handles_dead_columns() -> None:
    rng = np.random.default_rng(1)
    x = correlated(rng, 256, 16)
    x[:, 3] = 0.0
    new, _ = sparsegpt(rng.standard_normal((4, 16)), x.T @ x, pattern=(2, 4))
    assert np.isfinite(new).all() and (new[:, 3] == 0).all()


def test_conv_views_put_channels_consecutive_and_match_the_gram() -> None:
    rng = np.random.default_rng(2)
    w = rng.standard_normal((6, 8, 3, 2))
    w2 = weight_to_2d(w, "Conv", 1)
    np.testing.assert_array_equal(w2[:, :8], w[:, :, 0, 0])  # first M-groups: channels at kernel (0, 0)
    np.testing.assert_array_equal(w2[:, 8:16], w[:, :, 0, 1])
    np.testing.assert_array_equal(weight_from_2d(w2, w.shape, "Conv", 1), w)
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 0])
    geo = conv_geometry(node, w.shape)
    x = rng.standard_normal((2, 8, 5, 5))
    ni, hi, wi, _ = sample_positions(2, 5, 4, None, rng)
    cols = im2col_rows(patch_view(x, geo), ni, hi, wi, 1)[0]  # channel-major columns
    h = cols.T @ cols
    perm = conv_column_perm(8, 6)
    np.testing.assert_allclose(cols[:, perm] @ w2.T, cols @ w.reshape(6, -1).T)
    np.testing.assert_allclose(h[np.ix_(perm, perm)], cols[:, perm].T @ cols[:, perm])  # as methods.gram_weight


def _conv_model(w: np.ndarray) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", w.shape[1], 6, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])
    g = helper.make_graph([node], "g", [x], [y], [numpy_helper.from_array(w, "w")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("pattern", [None, (2, 4)])
def test_sparsegpt_pass_reduces_conv_output_error(pattern: tuple[int, int] | None) -> None:
    rng = np.random.default_rng(3)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    base = rng.standard_normal((32, 4, 6, 6))
    x = np.einsum("nchw,cd->ndhw", base, rng.standard_normal((4, 16))).astype(np.float32)  # rank-4 channels
    x += 0.05 * rng.standard_normal(x.shape).astype(np.float32)
    model = _conv_model(w)
    feeds = [{"x": x[:16]}, {"x": x[16:]}]
    ref = runtime.run(model, {"x": x})["y"]
    kw = {"pattern": pattern} if pattern else {"sparsity": 0.5}
    errs = {}
    for method in ("magnitude", "wanda", "sparsegpt"):
        out = sparsify(model, method=method, calibration=feeds, refit=False, **kw).model  # type: ignore[arg-type]
        errs[method] = float(((runtime.run(out, {"x": x})["y"] - ref) ** 2).mean())
    assert errs["sparsegpt"] < 0.5 * errs["magnitude"], errs
