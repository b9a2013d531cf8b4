"""Per-weight sparsification for each method, given the statistics it needs."""

from __future__ import annotations

import numpy as np

from onnxprune.calib.layer_grams import LayerGram
from onnxprune.calib.stats import ChannelStats
from onnxprune.sparsity.masks import magnitude_score, make_mask, wanda_column_score, wanda_score
from onnxprune.sparsity.refit import refit_dense, refit_rows
from onnxprune.sparsity.sites import Target
from onnxprune.sparsity.sparsegpt import sparsegpt
from onnxprune.sparsity.views import conv_column_perm, weight_from_2d, weight_to_2d

METHODS = ("magnitude", "wanda", "sparsegpt")


def mask_weight(w: np.ndarray, target: Target, *, sparsity: float | None, pattern: tuple[int, int] | None,
                stats: ChannelStats | None = None, column_norm: np.ndarray | None = None) -> np.ndarray:
    """Magnitude (no stats) or Wanda masked weight (per-column norms win over channel stats)."""
    mask = _mask(w, target, sparsity=sparsity, pattern=pattern, stats=stats, column_norm=column_norm)
    return np.where(mask, w, np.zeros_like(w))


def _mask(w: np.ndarray, target: Target, *, sparsity: float | None, pattern: tuple[int, int] | None,
          stats: ChannelStats | None, column_norm: np.ndarray | None) -> np.ndarray:
    site = target.site
    if column_norm is not None:
        score = wanda_column_score(w, column_norm, op_type=site.op_type, reduction_axis=site.reduction_axis,
                                   group=target.group)
    elif stats is not None:
        score = wanda_score(w, stats.l2, op_type=site.op_type, reduction_axis=site.reduction_axis,
                            group=target.group)
    else:
        score = magnitude_score(w)
    return make_mask(score, op_type=site.op_type, reduction_axis=site.reduction_axis, sparsity=sparsity,
                     pattern=pattern)


def _order(target: Target) -> np.ndarray | None:
    """Gram column -> 2-D view column permutation (Conv: kernel-position major), None for identity."""
    site = target.site
    if site.op_type != "Conv":
        return None
    return conv_column_perm(site.shape[1], int(np.prod(site.shape[2:], dtype=np.int64)))


def gram_weight(w: np.ndarray, target: Target, gram: LayerGram, *, method: str, sparsity: float | None,
                pattern: tuple[int, int] | None, refit: bool = False, blocksize: int = 128,
                percdamp: float = 0.01) -> np.ndarray:
    """Sparsify one weight from its input Gram (and, with `refit`, the dense-output target XᵀY).

    magnitude / wanda (‖X_j‖ = sqrt of the Gram diagonal): mask, then optionally re-fit the kept
    weights of every row by least squares. sparsegpt: with a target, first the dense ridge fit of
    W to the dense output (so the OBS updates start from the best dense weights for this input),
    then SparseGPT, then optionally the re-fit on its mask. Conv groups are solved one by one.
    """
    site = target.site
    w64 = np.asarray(w, np.float64)
    w2 = weight_to_2d(w64, site.op_type, site.reduction_axis)
    perm = _order(target)
    keep2 = None
    if method != "sparsegpt":
        norms = np.stack([np.sqrt(np.maximum(np.diag(gs.hessian), 0.0)) for gs in gram.groups])
        mask = _mask(w64, target, sparsity=sparsity, pattern=pattern, stats=None,
                     column_norm=norms if method == "wanda" else None)
        keep2 = weight_to_2d(mask, site.op_type, site.reduction_axis)
    out = np.empty_like(w2)
    rows = w2.shape[0] // len(gram.groups)
    for g, gs in enumerate(gram.groups):
        sl = slice(g * rows, (g + 1) * rows)
        h = gs.hessian if perm is None else gs.hessian[np.ix_(perm, perm)]
        xty = None if not refit or gs.xty is None else (gs.xty if perm is None else gs.xty[perm])
        if keep2 is None:
            start = w2[sl] if xty is None else refit_dense(w2[sl], h, xty, percdamp=percdamp)
            new, keep = sparsegpt(start, h, sparsity=sparsity, pattern=pattern, blocksize=blocksize,
                                  percdamp=percdamp)
        else:
            keep = keep2[sl]
            new = np.where(keep, w2[sl], 0.0)
        out[sl] = new if xty is None else refit_rows(new, keep, h, xty, percdamp=percdamp)
    return weight_from_2d(out, site.shape, site.op_type, site.reduction_axis)

