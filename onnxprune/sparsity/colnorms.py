"""Wanda's ‖X_j‖₂ per column of the layer's im2col input, in one calibration pass.

For a Conv, column j = (c, i, j') of W[k].reshape(-1) sees a *shifted* copy of channel c, and with
zero padding the border kernel positions see fewer pixels: at 2x2 or 4x4 feature maps the corner
taps see a quarter or half of the data. The exact column norms come from the per-pixel sum of
squares of the input, S[c, h, w] = Σₙ x², summed over the window of each kernel position
(no im2col, no sampling). Gemm/MatMul: the sum of squares of each reduction index.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import onnx

from onnxprune.calib.collect import stream_tensors
from onnxprune.calib.im2col import conv_geometry, patch_view
from onnxprune.calib.layer_grams import linear_rows
from onnxprune.errors import OnnxPruneError
from onnxprune.io.types import Feed
from onnxprune.sparsity.sites import Target


def _fold(acc: np.ndarray | None, x: np.ndarray) -> np.ndarray:
    return x if acc is None else acc + x


def column_norms(model: onnx.ModelProto, batches: Iterable[Feed], targets: Sequence[Target]) -> dict[str, np.ndarray]:
    """{target key: ‖X_j‖₂}: Conv -> [group, C/g, kh, kw] (1-D: [group, C/g, 1, k]); others -> [K]."""
    pixel_sq: dict[str, np.ndarray | None] = {t.input: None for t in targets if t.site.op_type == "Conv"}
    row_sq: dict[str, np.ndarray | None] = {t.key: None for t in targets if t.site.op_type != "Conv"}
    linear = [t for t in targets if t.site.op_type != "Conv"]
    names = list(dict.fromkeys(t.input for t in targets))
    seen = 0
    for vals in stream_tensors(model, names, batches):
        seen += 1
        for name in pixel_sq:
            x = np.asarray(vals[name], np.float64)
            pixel_sq[name] = _fold(pixel_sq[name], np.einsum("nc...,nc...->c...", x, x))
        for t in linear:
            rows = np.asarray(linear_rows(t.node, vals[t.input]), np.float64)
            row_sq[t.key] = _fold(row_sq[t.key], np.einsum("ij,ij->j", rows, rows))
    if not seen:
        raise OnnxPruneError("calibration data produced no batches")
    out: dict[str, np.ndarray] = {}
    for t in targets:
        if t.site.op_type == "Conv":
            geo = conv_geometry(t.node, t.site.shape)
            sq = pixel_sq[t.input]
            assert sq is not None
            per_tap = patch_view(sq[None], geo)[0].sum(axis=(1, 2))  # [C, kh, kw]
            cg = t.site.shape[1]
            out[t.key] = np.sqrt(per_tap.reshape(t.group, cg, *per_tap.shape[1:]))
        else:
            sq = row_sq[t.key]
            assert sq is not None
            out[t.key] = np.sqrt(sq)
    return out
