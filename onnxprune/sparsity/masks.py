"""Pruning masks (True = keep) from importance scores: per-row unstructured and N:M.

Scores: `magnitude_score` (|W|) and `wanda_score` (|W| * ‖X_j‖₂, j the input-channel / reduction
index). Comparison groups follow Wanda: unstructured sparsity is applied per output row (Conv: one
output channel over all of C/g x kh x kw; Gemm/MatMul: one output column over the reduction axis).
N:M groups run along the reduction axis (TensorRT layout, see `layout.py`).
"""

from __future__ import annotations

import numpy as np

from onnxprune.sparsity.layout import nm_groups


def row_axes(op_type: str, rank: int, reduction_axis: int) -> tuple[int, ...]:
    """Axes that identify one comparison row (everything else is compared together)."""
    if op_type == "Conv":
        return (0,)
    return tuple(a for a in range(rank) if a != reduction_axis)


def magnitude_score(w: np.ndarray) -> np.ndarray:
    return np.abs(np.asarray(w, dtype=np.float64))


def wanda_score(w: np.ndarray, input_norm: np.ndarray, *, op_type: str, reduction_axis: int,
                group: int = 1) -> np.ndarray:
    """|W| x ‖X_j‖₂ broadcast along the reduction axis.

    Conv: `input_norm` has one value per input channel C; output channel k of group g reads
    channels g*C/g ... (g+1)*C/g - 1. Gemm/MatMul: one value per reduction index.
    """
    w64 = np.abs(np.asarray(w, dtype=np.float64))
    norm = np.asarray(input_norm, dtype=np.float64)
    if op_type == "Conv":
        k, cg = w64.shape[0], w64.shape[1]
        if norm.shape[0] != cg * group:
            raise ValueError(f"input norm has {norm.shape[0]} channels, the conv reads {cg * group}")
        per_out = np.repeat(norm.reshape(group, cg), k // group, axis=0)  # [K, C/g]
        return w64 * per_out.reshape(k, cg, *([1] * (w64.ndim - 2)))
    if norm.shape[0] != w64.shape[reduction_axis]:
        raise ValueError(f"input norm has {norm.shape[0]} values, the reduction axis has {w64.shape[reduction_axis]}")
    shape = [1] * w64.ndim
    shape[reduction_axis] = norm.shape[0]
    return w64 * norm.reshape(shape)


def wanda_column_score(w: np.ndarray, column_norm: np.ndarray, *, op_type: str, reduction_axis: int,
                       group: int = 1) -> np.ndarray:
    """|W| x ‖X_j‖₂ with one norm per im2col column (`colnorms.column_norms`).

    Conv: `column_norm` is [group, C/g, kh, kw] (any shape with group * prod(W.shape[1:]) values):
    every kernel position has its own norm, which differs from the channel norm at the borders.
    Gemm/MatMul: one value per reduction index, as `wanda_score`.
    """
    if op_type != "Conv":
        return wanda_score(w, np.reshape(column_norm, -1), op_type=op_type, reduction_axis=reduction_axis)
    w64 = np.abs(np.asarray(w, dtype=np.float64))
    norm = np.asarray(column_norm, dtype=np.float64)
    if norm.size != group * int(np.prod(w64.shape[1:])):
        raise ValueError(f"column norms have {norm.size} values, the conv reads {group} x {w64.shape[1:]}")
    per_out = np.repeat(norm.reshape(group, *w64.shape[1:]), w64.shape[0] // group, axis=0)
    return w64 * per_out


def unstructured_mask(score: np.ndarray, sparsity: float, rows: tuple[int, ...]) -> np.ndarray:
    """Zero the floor(sparsity * row length) lowest scores of every row (ties: lower index first)."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    others = [a for a in range(score.ndim) if a not in rows]
    moved = np.transpose(score, (*rows, *others))
    flat = moved.reshape(int(np.prod([score.shape[a] for a in rows], dtype=np.int64)), -1)
    n_prune = int(flat.shape[1] * sparsity)
    keep = np.ones(flat.shape, dtype=bool)
    if n_prune:
        order = np.argsort(flat, axis=1, kind="stable")[:, :n_prune]
        np.put_along_axis(keep, order, False, axis=1)
    return np.transpose(keep.reshape(moved.shape), np.argsort((*rows, *others)))


def nm_mask(score: np.ndarray, n: int, m: int, axis: int) -> np.ndarray:
    """Keep the n highest scores in every group of m consecutive entries along `axis`."""
    if not 0 < n < m:
        raise ValueError(f"N:M pattern needs 0 < N < M, got {n}:{m}")
    groups = nm_groups(score, axis, m)
    keep = np.zeros(groups.shape, dtype=bool)
    top = np.argsort(-groups, axis=-1, kind="stable")[..., :n]
    np.put_along_axis(keep, top, True, axis=-1)
    moved_shape = np.moveaxis(score, axis, -1).shape
    return np.moveaxis(keep.reshape(moved_shape), -1, axis)


def make_mask(score: np.ndarray, *, op_type: str, reduction_axis: int, sparsity: float | None = None,
              pattern: tuple[int, int] | None = None) -> np.ndarray:
    """N:M when `pattern` is given, else per-row unstructured at `sparsity`."""
    if pattern is not None:
        return nm_mask(score, pattern[0], pattern[1], reduction_axis)
    if sparsity is None:
        raise ValueError("give a sparsity or an N:M pattern")
    return unstructured_mask(score, sparsity, row_axes(op_type, score.ndim, reduction_axis))
