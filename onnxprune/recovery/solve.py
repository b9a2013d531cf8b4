"""Ridge least squares on accumulated Grams: the one solver of the layer re-fits (passes.reconstruct)
and of the sparse re-fits (sparsity.refit), and the squared error of any weights on the same data.

`solve_ridge` solves the damped normal equations, optionally towards an anchor a:

    min ‖Y − Xθ‖² + λ‖θ − a‖²   ->   (XᵀX + λI) θ = XᵀY + λa

with λ = damp · mean(diag(XᵀX)) (`damping`). `ridge_fit` fits a layer with a bias column, over [X, 1]:

    A = [[XᵀX, Σx], [Σxᵀ, n]] + λ·diag(1, ..., 1, 0),   B = [[XᵀY], [Σy]],   [Wᵀ; b] = A⁻¹ B

the bias not damped. Without a bias column the bias stays fixed and is moved to the right-hand side.
The error ‖[X, 1][Wᵀ; b] − Y‖² is evaluated from the same sums (θᵀAθ − 2θᵀB + Σy²), so "before"
and "after" are measured on exactly the rows the fit saw.

`heldout_error` and `anchored_fit` serve a re-fit whose damping is chosen on samples the fit did not
see: ridge towards the layer's current (pruned) weights W₀, `min ‖Y − XWᵀ − b‖² + λ‖W − W₀‖²`, for
relative λ along DAMP_PATH (up to λ = ∞: W₀ kept, the bias alone re-fitted), fitted on one half of the
calibration samples and scored on the other, both ways. A few hundred samples of a wide layer are
fitted far better than new ones; how far to trust them over the trained weights depends on the
layer and the data, so it is measured, not fixed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnxprune.calib.stats import GramStats

DAMP_RETRIES = 4  # λ is multiplied by 10 this many times before a system is declared ill-conditioned
BIAS_ONLY = float("inf")
# The held-out choice walks λ up from the least damping and stops where the error rises again (one minimum in λ):
# more damping is taken only as far as the held-out samples show that it helps.
DAMP_PATH: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, BIAS_ONLY)


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
    # θᵀAθ through a matrix product: a three-operand einsum loops in C without BLAS (seconds per layer)
    err = float(np.einsum("ik,ik->", theta, a @ theta) - 2.0 * np.einsum("ik,ik->", theta, b) + yy)
    return max(err, 0.0), yy


def damping(diag: np.ndarray, rel: float) -> float:
    """λ = rel · mean(diag(XᵀX)): relative to the scale of the inputs (the mean taken as 1 where it is
    not positive and finite)."""
    scale = float(np.mean(diag)) if diag.size else 0.0
    return rel * (scale if np.isfinite(scale) and scale > 0.0 else 1.0)


def solve_ridge(h: np.ndarray, rhs: np.ndarray, lam: float, *, anchor: np.ndarray | None = None,
                damped: int | None = None, definite: bool = False) -> np.ndarray:
    """θ of (H + λD) θ = rhs + λD·anchor, D the identity on the first `damped` rows (all by default;
    a bias row is left undamped). `anchor` is shaped like the damped rows of θ (zero when None).
    Raises np.linalg.LinAlgError where the system is singular, or with `definite` where it is not
    positive definite (a Cholesky factorisation fails: more damping is the cure)."""
    n = h.shape[0] if damped is None else damped
    m = h.copy()
    m[np.arange(n), np.arange(n)] += lam
    if definite:
        np.linalg.cholesky(m)
    if anchor is not None:
        rhs = rhs.copy()
        rhs[:n] += lam * anchor
    return np.linalg.solve(m, rhs)


def _fit(g: GramStats, *, rel: float, bias: np.ndarray, fit_bias: bool, anchor: np.ndarray | None,
         definite: bool) -> Fit | None:
    """The ridge fit over [X, 1] (towards `anchor`, shaped like Wᵀ; 0 when None); None where it is not
    finite. Raises np.linalg.LinAlgError as `solve_ridge` does."""
    a, b, _ = _system(g)
    d = a.shape[0] - 1
    lhs, rhs = (a, b) if fit_bias else (a[:d, :d], b[:d] - np.outer(a[:d, d], bias))
    theta = solve_ridge(lhs, rhs, damping(np.diag(a)[:d], rel), anchor=anchor, damped=d, definite=definite)
    if not np.all(np.isfinite(theta)):
        return None
    return Fit(np.ascontiguousarray(theta[:d].T), np.asarray(theta[d] if fit_bias else bias, dtype=np.float64), rel)


def ridge_fit(g: GramStats, *, damp: float, bias: np.ndarray, fit_bias: bool) -> Fit | None:
    """Minimise ‖X W'ᵀ + b' − Y‖² + λ‖W'‖²; None if the system stays singular or the result is not finite.

    `bias` is the fixed bias when `fit_bias` is False (and ignored otherwise).
    """
    rel = damp
    for _ in range(DAMP_RETRIES + 1):
        try:
            return _fit(g, rel=rel, bias=bias, fit_bias=fit_bias, anchor=None, definite=True)
        except np.linalg.LinAlgError:
            rel = max(rel * 10.0, 1e-8)
    return None


def anchored_fit(g: GramStats, *, rel: float, weight: np.ndarray, bias: np.ndarray, fit_bias: bool,
                 definite: bool = True) -> Fit | None:
    """Minimise ‖X W'ᵀ + b' − Y‖² + λ‖W' − weight‖², λ = rel · mean(diag(XᵀX)); rel = BIAS_ONLY keeps
    `weight` and re-fits the bias alone (or nothing without a bias column). None where the system is
    singular (with `definite`: not positive definite) or the result not finite."""
    if rel == BIAS_ONLY:
        a, b, _ = _system(g)
        d = a.shape[0] - 1
        new_bias = (b[d] - weight @ a[:d, d]) / a[d, d] if fit_bias and a[d, d] > 0 else bias
        return Fit(weight, np.asarray(new_bias, dtype=np.float64), rel)
    try:
        return _fit(g, rel=rel, bias=bias, fit_bias=fit_bias, anchor=weight.T, definite=definite)
    except np.linalg.LinAlgError:
        return None


def split_folds(whole: GramStats, held: GramStats) -> tuple[GramStats, GramStats]:
    """The two folds: the rows of `whole` outside `held`, and `held`."""
    return whole.combined(held, -1.0), held


def heldout_error(folds: tuple[GramStats, GramStats], *, rel: float, weight: np.ndarray, bias: np.ndarray,
                  fit_bias: bool) -> float:
    """The squared error of `anchored_fit` fitted on one fold and scored on the other, summed over both
    ways; inf where a fit fails."""
    total = 0.0
    for fit_on, score_on in (folds, folds[::-1]):
        # the system is damped: a solve without the Cholesky test is enough to compare errors
        fit = anchored_fit(fit_on, rel=rel, weight=weight, bias=bias, fit_bias=fit_bias, definite=False)
        if fit is None:
            return float("inf")
        total += squared_error(score_on, fit.weight, fit.bias)[0]
    return total
