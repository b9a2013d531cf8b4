"""Per-weight sparsification for each method, given the statistics it needs."""

from __future__ import annotations

import numpy as np

from onnxprune.calib.layers import LayerGram
from onnxprune.calib.stats import ChannelStats
from onnxprune.sparsity.masks import magnitude_score, make_mask, wanda_score
from onnxprune.sparsity.sites import Target
from onnxprune.sparsity.sparsegpt import sparsegpt
from onnxprune.sparsity.views import hessian_to_2d_order, weight_from_2d, weight_to_2d

METHODS = ("magnitude", "wanda", "sparsegpt")


def mask_weight(w: np.ndarray, target: Target, *, sparsity: float | None, pattern: tuple[int, int] | None,
                stats: ChannelStats | None) -> np.ndarray:
    """Magnitude (stats None) or Wanda masked weight."""
    site = target.site
    if stats is None:
        score = magnitude_score(w)
    else:
        score = wanda_score(w, stats.l2, op_type=site.op_type, reduction_axis=site.reduction_axis,
                            group=target.group)
    mask = make_mask(score, op_type=site.op_type, reduction_axis=site.reduction_axis, sparsity=sparsity,
                     pattern=pattern)
    return np.where(mask, w, np.zeros_like(w))


def sparsegpt_weight(w: np.ndarray, target: Target, gram: LayerGram, *, sparsity: float | None,
                     pattern: tuple[int, int] | None, blocksize: int = 128, percdamp: float = 0.01) -> np.ndarray:
    """SparseGPT on the [rows, reduction] view; Conv groups are solved one by one with their own Gram."""
    site = target.site
    w2 = weight_to_2d(np.asarray(w, np.float64), site.op_type, site.reduction_axis)
    out = np.empty_like(w2)
    groups = len(gram.groups)
    rows = w2.shape[0] // groups
    kk = int(np.prod(site.shape[2:], dtype=np.int64)) if site.op_type == "Conv" else 1
    for g, gs in enumerate(gram.groups):
        h = hessian_to_2d_order(gs.hessian, site.op_type, site.shape[1], kk)
        sl = slice(g * rows, (g + 1) * rows)
        out[sl], _ = sparsegpt(w2[sl], h, sparsity=sparsity, pattern=pattern, blocksize=blocksize,
                               percdamp=percdamp)
    return weight_from_2d(out, site.shape, site.op_type, site.reduction_axis)
