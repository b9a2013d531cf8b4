"""Streaming activation statistics: nothing but running sums is kept between batches."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ChannelStats:
    """Per-channel running sums along `axis` (1 for NC..., -1 for MatMul/Gemm inputs).

    `count` is the number of elements seen per channel (the same for every channel).
    """

    axis: int = 1
    count: int = 0
    sum: np.ndarray | None = None
    sumsq: np.ndarray | None = None
    sumabs: np.ndarray | None = None
    zeros: np.ndarray | None = None

    def update(self, x: np.ndarray) -> None:
        moved = np.moveaxis(np.asarray(x), self.axis, -1)
        flat = moved.reshape(-1, moved.shape[-1]).astype(np.float64, copy=False)
        if self.sum is None:
            c = flat.shape[1]
            self.sum, self.sumsq, self.sumabs = np.zeros(c), np.zeros(c), np.zeros(c)
            self.zeros = np.zeros(c, dtype=np.int64)
        elif flat.shape[1] != self.sum.shape[0]:
            raise ValueError(f"channel count changed from {self.sum.shape[0]} to {flat.shape[1]}")
        assert self.sumsq is not None and self.sumabs is not None and self.zeros is not None
        self.count += flat.shape[0]
        self.sum += flat.sum(axis=0)
        self.sumsq += np.einsum("ij,ij->j", flat, flat)
        self.sumabs += np.abs(flat).sum(axis=0)
        self.zeros += (flat == 0).sum(axis=0)

    def _need(self, arr: np.ndarray | None) -> np.ndarray:
        if arr is None or self.count == 0:
            raise ValueError("no activations accumulated")
        return arr

    @property
    def channels(self) -> int:
        return int(self._need(self.sum).shape[0])

    @property
    def mean(self) -> np.ndarray:
        return self._need(self.sum) / self.count

    @property
    def var(self) -> np.ndarray:
        """Population variance (clipped at 0 against round-off)."""
        return np.maximum(self._need(self.sumsq) / self.count - self.mean**2, 0.0)

    @property
    def l2(self) -> np.ndarray:
        """‖X_j‖₂ over everything seen (Wanda's input norm)."""
        return np.sqrt(self._need(self.sumsq))

    @property
    def mean_abs(self) -> np.ndarray:
        return self._need(self.sumabs) / self.count

    @property
    def apoz(self) -> np.ndarray:
        """Average percentage of zeros per channel, in [0, 1]."""
        return self._need(self.zeros) / self.count


@dataclass
class GramStats:
    """Running XᵀX (float64) over rows of X [rows, d], and optionally XᵀY for Y [rows, k].

    `rows` counts the rows represented; with subsampling each batch is weighted by
    total/sampled rows so `xtx` estimates the full sum. Optional per-row weights make every sum
    a weighted one (a weighted least-squares system). `xsum` (Σx), `ysum` (Σy) and `ysq`
    (Σy² per column) complete the system of a fit with a bias column and its residual.
    """

    xtx: np.ndarray | None = None
    xty: np.ndarray | None = None
    rows: float = 0.0
    xsum: np.ndarray | None = None
    ysum: np.ndarray | None = None
    ysq: np.ndarray | None = None

    def update(self, x: np.ndarray, y: np.ndarray | None = None, *, weight: float = 1.0,
               row_weights: np.ndarray | None = None) -> None:
        """Add rows x [rows, d] (and y [rows, k]); each row counts `weight` times `row_weights[i]`."""
        x64 = np.asarray(x, dtype=np.float64)
        rw = None if row_weights is None else np.asarray(row_weights, dtype=np.float64) * weight
        xw = (x64 if weight == 1.0 else x64 * weight) if rw is None else x64 * rw[:, None]
        self.xtx = xw.T @ x64 if self.xtx is None else self.xtx + xw.T @ x64
        xs = xw.sum(axis=0)
        self.xsum = xs if self.xsum is None else self.xsum + xs
        if y is not None:
            y64 = np.asarray(y, dtype=np.float64)
            yw = (y64 if weight == 1.0 else y64 * weight) if rw is None else y64 * rw[:, None]
            c = xw.T @ y64
            self.xty = c if self.xty is None else self.xty + c
            ys, yq = yw.sum(axis=0), np.einsum("ij,ij->j", yw, y64)
            self.ysum = ys if self.ysum is None else self.ysum + ys
            self.ysq = yq if self.ysq is None else self.ysq + yq
        self.rows += float(rw.sum()) if rw is not None else x64.shape[0] * weight

    @property
    def hessian(self) -> np.ndarray:
        """XᵀX (undamped)."""
        if self.xtx is None:
            raise ValueError("no activations accumulated")
        return self.xtx

    @property
    def mean_hessian(self) -> np.ndarray:
        """XᵀX / rows: the scale-free second moment."""
        return self.hessian / max(self.rows, 1.0)

    def combined(self, other: GramStats, sign: float = 1.0) -> GramStats:
        """The sums of both row sets (sign -1: the rows of `self` that are not in `other`, which must
        be a subset of them: a training fold as the whole minus its held-out fold)."""

        def mix(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
            if b is None:
                return a
            return sign * b if a is None else a + sign * b

        return GramStats(mix(self.xtx, other.xtx), mix(self.xty, other.xty), self.rows + sign * other.rows,
                         mix(self.xsum, other.xsum), mix(self.ysum, other.ysum), mix(self.ysq, other.ysq))
