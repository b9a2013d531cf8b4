"""Ridge least squares on accumulated Grams, and the squared error of any weights on the same data.

With a bias column the normal equations are over [X, 1]:

    A = [[XᵀX, Σx], [Σxᵀ, n]] + λ·diag(1, ..., 1, 0),   B = [[XᵀY], [Σy]],   [Wᵀ; b] = A⁻¹ B

λ = damp · mean(diag(XᵀX)); the bias is not damped. Without a bias column the bias stays fixed
and is moved to the right-hand side. The error ‖[X, 1][Wᵀ; b] − Y‖² is evaluated from the same
sums (θᵀAθ − 2θᵀB + Σy²), so "before" and "after" are measured on exactly the rows the fit saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnxprune.calib.stats import GramStats

DAMP_RETRIES = 4  # λ is multiplied by 10 this many times before a system is declared ill-conditioned


@dataclass(frozen=True)
class Fit:
    weight: np.ndarray  # [k, d]
    bias: np.ndarray  # [k]
    damp: float  # the relative damping finally used


def _system(g: GramStats) -> tuple[np.ndarray, np.ndarray, float]:
    """Undamped augmented A, B and Σy² (raises ValueError if Y was not accumulated)."""
    if g.xtx is None or g.xty is None or g.xsum is None or g.ysum is None or g.ysq is None:
        raise ValueError("Gram has no target statistics (XᵀY)")
    d = g.xtx.shape[0]
    a = np.empty((d + 1, d + 1))
    a[:d, :d] = g.xtx
    a[:d, d] = a[d, :d] = g.xsum
    a[d, d] = g.rows
    b = np.vstack([g.xty, g.ysum[None, :]])
    return a, b, float(g.ysq.sum())


def squared_error(g: GramStats, weight: np.ndarray, bias: np.ndarray) -> tuple[float, float]:
    """(‖XWᵀ + b − Y‖², ‖Y‖²) over the accumulated rows."""
    a, b, yy = _system(g)
    theta = np.vstack([weight.T, bias[None, :]])
    err = float(np.einsum("ik,ij,jk->", theta, a, theta) - 2.0 * np.einsum("ik,ik->", theta, b) + yy)
    return max(err, 0.0), yy


def ridge_fit(g: GramStats, *, damp: float, bias: np.ndarray, fit_bias: bool) -> Fit | None:
    """Minimise ‖X W'ᵀ + b' − Y‖² + λ‖W'‖²; None if the system stays singular or the result is not finite.

    `bias` is the fixed bias when `fit_bias` is False (and ignored otherwise).
    """
    a, b, _ = _system(g)
    d = a.shape[0] - 1
    scale = float(np.mean(np.diag(a)[:d])) if d else 0.0
    if not np.isfinite(scale) or scale <= 0.0:
        scale = 1.0
    if fit_bias:
        lhs, rhs, n = a, b, d + 1
    else:
        lhs, rhs, n = a[:d, :d], b[:d] - np.outer(a[:d, d], bias), d
    rel = damp
    for _ in range(DAMP_RETRIES + 1):
        m = lhs.copy()
        m[np.arange(d), np.arange(d)] += rel * scale
        try:
            chol = np.linalg.cholesky(m)
        except np.linalg.LinAlgError:
            rel = max(rel * 10.0, 1e-8)
            continue
        theta = np.linalg.solve(chol.T, np.linalg.solve(chol, rhs))
        if not np.all(np.isfinite(theta)):
            return None
        w = theta[:d].T
        out_bias = theta[d] if n == d + 1 else bias
        return Fit(np.ascontiguousarray(w), np.asarray(out_bias, dtype=np.float64), rel)
    return None
