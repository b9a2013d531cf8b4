"""Where N:M sparsity runs for each weight, in the layout TensorRT needs.

TensorRT's sparse kernels want, for every output channel (and kernel position), groups of
M consecutive weights along the *input-channel* (reduction) axis to hold at most N non-zeros.
- Conv W[K, C/g, kh, kw]: axis 1.
- MatMul B[K, N] (y = x @ B): axis 0.
- Gemm B: axis 0 if transB == 0 ([K, N]), axis 1 if transB == 1 ([N, K]).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx


@dataclass(frozen=True)
class WeightSite:
    node: str
    op_type: str
    input_index: int
    initializer: str
    reduction_axis: int
    shape: tuple[int, ...]


def reduction_axis(node: onnx.NodeProto, weight_rank: int) -> int | None:
    """Axis of the weight input that is summed over, or None for ops without a weight."""
    if node.op_type == "Conv":
        return 1
    if node.op_type == "MatMul":
        return weight_rank - 2 if weight_rank >= 2 else None
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 1 if trans_b else 0
    return None


def weight_sites(model: onnx.ModelProto) -> list[WeightSite]:
    """Conv/Gemm/MatMul weights that are initializers, with their reduction axis."""
    inits = {t.name: t for t in model.graph.initializer}
    sites: list[WeightSite] = []
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2:
            continue
        name = node.input[1]
        if name not in inits:
            continue
        shape = tuple(int(d) for d in inits[name].dims)
        axis = reduction_axis(node, len(shape))
        if axis is None:
            continue
        sites.append(WeightSite(node.name, node.op_type, 1, name, axis, shape))
    return sites


def nm_groups(w: np.ndarray, axis: int, m: int) -> np.ndarray:
    """Reshape w so the last axis holds groups of m consecutive weights along `axis`.

    Returns shape (..., n_groups, m). Requires w.shape[axis] % m == 0.
    """
    moved = np.moveaxis(w, axis, -1)
    if moved.shape[-1] % m:
        raise ValueError(f"reduction length {moved.shape[-1]} is not a multiple of {m}")
    return moved.reshape(*moved.shape[:-1], moved.shape[-1] // m, m)


def is_nm_compliant(w: np.ndarray, axis: int, n: int, m: int) -> bool:
    """True when every group of m along `axis` has at most n non-zeros."""
    if w.shape[axis] % m:
        return False
    return bool((np.count_nonzero(nm_groups(w, axis, m), axis=-1) <= n).all())
