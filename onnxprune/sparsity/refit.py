"""Least-squares re-fit of the weights a mask keeps, from a Gram XᵀX and a target XᵀY (solved by
`recovery.solve.solve_ridge`, the re-fits' one ridge solver).

Per output row r with kept columns S (rows of W2 [rows, cols], columns in the order of H):

    w_S = (H_SS + λI)⁻¹ ((XᵀY)_S + λ a_S),    H = XᵀX,  λ = percdamp · mean(diag H),

the ridge solution of min ‖Y_r − X_S w‖² + λ‖w − a_S‖² with `anchor` a (the masked weights before the
re-fit): the data decide where they can, the original weights where X says little (rank-deficient
Grams, e.g. fewer calibration rows than columns). Pruned entries stay exactly zero.
"""

from __future__ import annotations

import numpy as np

from onnxprune.recovery.solve import damping, solve_ridge

MIN_DAMP = 1e-12  # λ at percdamp 0: every masked sub-system stays solvable


def _lambda(h: np.ndarray, percdamp: float) -> float:
    return damping(np.diag(h), percdamp) or MIN_DAMP


def refit_dense(anchor: np.ndarray, h: np.ndarray, xty: np.ndarray, *, percdamp: float) -> np.ndarray:
    """Ridge fit of all columns: W2 [rows, cols] = ((H + λI)⁻¹ (XᵀY + λ anchorᵀ))ᵀ."""
    a = np.asarray(anchor, np.float64)
    return solve_ridge(h, np.asarray(xty, np.float64), _lambda(h, percdamp), anchor=a.T).T


def refit_rows(anchor: np.ndarray, keep: np.ndarray, h: np.ndarray, xty: np.ndarray, *,
               percdamp: float) -> np.ndarray:
    """Re-fit every row of `anchor` [rows, cols] on its kept columns; xty is [cols, rows].

    Each row costs one solve of min(|S|, |P|) unknowns: rows that keep more than half of the columns
    use the pruned set P, w = w* − (A⁻¹)_{:,P} ((A⁻¹)_{PP})⁻¹ w*_P with w* = A⁻¹c the unconstrained fit
    (A = H + λI), which is the same minimiser.
    """
    a = np.asarray(anchor, np.float64)
    keep = np.asarray(keep, bool)
    h = np.asarray(h, np.float64)
    b = np.asarray(xty, np.float64)
    if a.shape != keep.shape or h.shape != (a.shape[1], a.shape[1]) or b.shape != (a.shape[1], a.shape[0]):
        raise ValueError(f"refit: weight {a.shape}, mask {keep.shape}, H {h.shape}, XᵀY {b.shape} do not match")
    lam = _lambda(h, percdamp)
    out = np.zeros_like(a)
    cols = a.shape[1]
    complement = keep.sum(axis=1) > cols // 2
    inv = full = None
    if complement.any():
        inv = np.linalg.inv(h + lam * np.eye(cols))
        full = (b.T + lam * a) @ inv  # unconstrained fits, c of every row times A⁻¹ (A symmetric)
    for r in range(a.shape[0]):
        s = np.flatnonzero(keep[r])
        if not len(s):
            continue
        if complement[r] and inv is not None and full is not None:
            p = np.flatnonzero(~keep[r])
            w = full[r].copy()
            if len(p):
                w -= inv[:, p] @ np.linalg.solve(inv[np.ix_(p, p)], full[r, p])
            out[r, s] = w[s]
        else:
            out[r, s] = solve_ridge(h[np.ix_(s, s)], b[s, r], lam, anchor=a[r, s])
    return out
