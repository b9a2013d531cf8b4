"""2-D [rows, reduction] views of Conv/Gemm/MatMul weights for SparseGPT, and back.

Conv W [K, C/g, kh, kw]: rows are output channels; columns are ordered *kernel-position major*,
q = (i*kw + j) * C/g + c, so M consecutive columns are M input channels at one kernel position,
which is where TensorRT wants N:M groups. The Gram from `onnxprune.calib.im2col` uses the
channel-major order c*kh*kw + i*kw + j (= W.reshape(K, -1)); `conv_column_perm` maps between them.
Gemm: B [K, N] (transB=0) -> Bᵀ; B [N, K] (transB=1) as is. MatMul: B [K, N] -> Bᵀ.
"""

from __future__ import annotations

import numpy as np


def conv_column_perm(cg: int, kernel_size: int) -> np.ndarray:
    """perm[q] = channel-major column of position-major column q."""
    return np.arange(cg * kernel_size).reshape(cg, kernel_size).T.reshape(-1)


def weight_to_2d(w: np.ndarray, op_type: str, reduction_axis: int) -> np.ndarray:
    if op_type == "Conv":
        k, cg = w.shape[0], w.shape[1]
        kk = int(np.prod(w.shape[2:], dtype=np.int64))
        return w.reshape(k, -1)[:, conv_column_perm(cg, kk)]
    if w.ndim != 2:
        raise ValueError(f"{op_type} weight of rank {w.ndim}: only 2-D weights have a [rows, reduction] view")
    return w.T if reduction_axis == 0 else w


def weight_from_2d(w2: np.ndarray, shape: tuple[int, ...], op_type: str, reduction_axis: int) -> np.ndarray:
    if op_type == "Conv":
        cg = shape[1]
        kk = int(np.prod(shape[2:], dtype=np.int64))
        out = np.empty_like(w2)
        out[:, conv_column_perm(cg, kk)] = w2
        return out.reshape(shape)
    return w2.T if reduction_axis == 0 else w2

