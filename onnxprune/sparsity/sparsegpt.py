"""SparseGPT (Frantar & Alistarh, 2023): one-shot pruning with OBS weight updates.

Works on a 2-D weight W [rows, cols] (cols = the reduction, in the order of H) with
H = XᵀX + λI, λ = percdamp * mean(diag(XᵀX)). Columns are processed left to right in blocks of
`blocksize` with lazy batch updates; U = chol(H⁻¹)ᵀ (upper) gives the OBS error propagation.
Unstructured: per block, the `sparsity` fraction with the lowest w²/[H⁻¹]ₖₖ² over the whole
block is pruned (as in the reference implementation). N:M: every M consecutive columns, the M-N
lowest of each row are pruned (so columns must be ordered with N:M groups consecutive).
"""

from __future__ import annotations

import numpy as np

from onnxprune.errors import OnnxPruneError


def inverse_cholesky_upper(h: np.ndarray, percdamp: float) -> np.ndarray:
    """Upper U with UᵀU = (H + λI)⁻¹; damping grows x10 until H is positive definite."""
    damp = percdamp * float(np.mean(np.diag(h)))
    if damp <= 0:
        damp = percdamp
    eye = np.eye(h.shape[0])
    for _ in range(6):
        try:
            low = np.linalg.cholesky(h + damp * eye)
            low_inv = np.linalg.solve(low, eye)  # L⁻¹
            hinv = low_inv.T @ low_inv  # (LLᵀ)⁻¹
            return np.linalg.cholesky(hinv).T
        except np.linalg.LinAlgError:
            damp *= 10
    raise OnnxPruneError("SparseGPT: the Hessian is not positive definite even with strong damping")


def _prepare(w: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w = np.array(w, dtype=np.float64)
    h = np.array(h, dtype=np.float64)
    if h.shape != (w.shape[1], w.shape[1]):
        raise ValueError(f"Hessian {h.shape} does not match weight columns {w.shape[1]}")
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    return w, h


def sparsegpt(w: np.ndarray, h: np.ndarray, *, sparsity: float | None = None,
              pattern: tuple[int, int] | None = None, blocksize: int = 128,
              percdamp: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Prune and update W [rows, cols] given H = XᵀX [cols, cols]. Returns (new W, keep mask)."""
    if (sparsity is None) == (pattern is None):
        raise ValueError("give exactly one of sparsity and pattern")
    prune_n, m = (pattern[1] - pattern[0], pattern[1]) if pattern else (0, 0)
    if pattern and w.shape[1] % m:
        raise ValueError(f"{w.shape[1]} columns are not a multiple of {m}")
    if pattern and blocksize % m:
        blocksize = max(m, blocksize - blocksize % m)
    w, h = _prepare(w, h)
    u = inverse_cholesky_upper(h, percdamp)
    cols = w.shape[1]
    keep = np.ones_like(w, dtype=bool)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        w1 = w[:, i1:i2].copy()
        u1 = u[i1:i2, i1:i2]
        d = np.diag(u1)
        err = np.zeros_like(w1)
        prune = np.zeros_like(w1, dtype=bool)
        if not pattern:
            s = w1**2 / d**2
            k = int(s.size * float(sparsity))  # type: ignore[arg-type]
            if k:
                flat = np.argsort(s, axis=None, kind="stable")[:k]
                prune.reshape(-1)[flat] = True
        for i in range(i2 - i1):
            if pattern and i % m == 0:
                s = w1[:, i:i + m] ** 2 / d[i:i + m] ** 2
                low = np.argsort(s, axis=1, kind="stable")[:, :prune_n]
                np.put_along_axis(prune[:, i:i + m], low, True, axis=1)
            col = w1[:, i]
            q = np.where(prune[:, i], 0.0, col)
            e = (col - q) / d[i]
            w1[:, i:] -= np.outer(e, u1[i, i:])
            w1[:, i] = q
            err[:, i] = e
        w[:, i1:i2] = w1
        keep[:, i1:i2] = ~prune
        w[:, i2:] -= err @ u[i1:i2, i2:]
    w[~keep] = 0.0
    return w, keep

