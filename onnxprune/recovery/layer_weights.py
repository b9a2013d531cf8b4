"""A layer's effective weight and bias as per-group matrices, and writing re-fitted values back.

The effective form is what the Gram columns describe: for group g, `y = x @ W_g.T + b_g` with
W_g [K/g, d] (Conv: `W[g*K/g:(g+1)*K/g].reshape(K/g, -1)`; ConvTranspose, W [C, K/g, kh, kw]:
`W[g*C/g:(g+1)*C/g].swapaxes(0, 1).reshape(K/g, -1)`; Gemm: alpha * B (transposed unless transB);
MatMul: Bᵀ) and b_g the bias (Gemm: beta * C; MatMul: none).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from onnxprune.io.external import new_tensor, tensor_array
from onnxprune.recovery.layers import use_counts


def _attr(node: onnx.NodeProto, name: str, default: float) -> float:
    for a in node.attribute:
        if a.name == name:
            return float(helper.get_attribute_value(a))
    return default


@dataclass
class LayerWeights:
    """Effective per-group weights and biases of one node; `has_bias` False means no bias column."""

    weights: list[np.ndarray]  # [k_g, d_g] float64
    biases: list[np.ndarray]  # [k_g] float64 (zeros when the node has none yet)
    has_bias: bool


def _inits(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def _conv_groups(w: np.ndarray, group: int, transpose: bool) -> list[np.ndarray]:
    """Per group [K/g, d]: Conv W [K, C/g, ...] split on axis 0; ConvTranspose W [C, K/g, ...] split on
    axis 0 and transposed to (K/g, C/g, ...)."""
    if not transpose:
        return list(w.reshape(w.shape[0], -1).reshape(group, w.shape[0] // group, -1))
    cg = w.shape[0] // group
    return [w[g * cg:(g + 1) * cg].swapaxes(0, 1).reshape(w.shape[1], -1) for g in range(group)]


def _conv_weight(mats: list[np.ndarray], shape: tuple[int, ...], transpose: bool) -> np.ndarray:
    """Inverse of `_conv_groups`: the [K, C/g, ...] (Conv) or [C, K/g, ...] (ConvTranspose) weight."""
    if not transpose:
        return np.concatenate(mats, axis=0).reshape(shape)
    cg = shape[0] // len(mats)
    return np.concatenate([m.reshape(shape[1], cg, *shape[2:]).swapaxes(0, 1) for m in mats], axis=0)


def read_layer(model: onnx.ModelProto, node: onnx.NodeProto, bias_add: tuple[onnx.NodeProto, int] | None = None,
               ) -> LayerWeights:
    """bias_add: for a MatMul, the Add (and its constant's input index) holding the bias."""
    inits = _inits(model)
    w = tensor_array(inits[node.input[1]]).astype(np.float64)
    bias_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if node.op_type in ("Conv", "ConvTranspose"):
        group = int(_attr(node, "group", 1))
        mats = _conv_groups(w, group, node.op_type == "ConvTranspose")
        k = sum(m.shape[0] for m in mats)
        b = tensor_array(inits[bias_name]).astype(np.float64) if bias_name else np.zeros(k)
        kg = k // group
        return LayerWeights(mats, [b[g * kg:(g + 1) * kg] for g in range(group)], True)
    if node.op_type == "Gemm":
        mat = w if _attr(node, "transB", 0) else w.T
        mat = mat * _attr(node, "alpha", 1.0)
        n = mat.shape[0]
        beta = _attr(node, "beta", 1.0)
        if bias_name:
            c = tensor_array(inits[bias_name]).astype(np.float64)
            fit_bias = c.size == n and beta != 0.0
            b = np.broadcast_to(c * beta, (n,)).copy() if c.size in (1, n) else np.zeros(n)
            return LayerWeights([mat], [b], fit_bias)
        return LayerWeights([mat], [np.zeros(n)], beta != 0.0)
    if bias_add is not None:  # MatMul + Add(constant)
        add, idx = bias_add
        b = tensor_array(inits[add.input[idx]]).astype(np.float64).reshape(-1)
        return LayerWeights([w.T], [b], True)
    return LayerWeights([w.T], [np.zeros(w.shape[1])], False)  # MatMul


def _set_const(model: onnx.ModelProto, node: onnx.NodeProto, index: int, value: np.ndarray, *, suffix: str) -> None:
    """Write `value` as the node's input `index`: in place if only this node reads it, else a new initializer."""
    inits = _inits(model)
    name = node.input[index] if index < len(node.input) else ""
    if name and name in inits and use_counts(model)[name] == 1:
        inits[name].CopyFrom(new_tensor(model, value, name))  # scratch data when the weights stay on disk
        return
    base = name or f"{node.name}{suffix}"
    new, i = f"{base}__refit", 1
    while new in inits:
        i += 1
        new = f"{base}__refit{i}"
    model.graph.initializer.append(new_tensor(model, value, new))
    while len(node.input) <= index:
        node.input.append("")
    node.input[index] = new


Value = tuple[onnx.NodeProto, int, np.ndarray, str]  # (node, input index, value, suffix for a new name)


def _layer_values(model: onnx.ModelProto, node: onnx.NodeProto, lw: LayerWeights,
                  bias_add: tuple[onnx.NodeProto, int] | None = None) -> list[Value]:
    """Effective weights/biases in the node's own dtype and layout, with the input slot each goes to."""
    inits = _inits(model)
    wt = inits[node.input[1]]
    dtype = helper.tensor_dtype_to_np_dtype(wt.data_type)
    shape = tuple(int(d) for d in wt.dims)
    if node.op_type in ("Conv", "ConvTranspose"):
        w = _conv_weight(lw.weights, shape, node.op_type == "ConvTranspose")
        out: list[Value] = [(node, 1, w.astype(dtype), "_W")]
        if lw.has_bias:
            out.append((node, 2, np.concatenate(lw.biases).astype(dtype), "_B"))
        return out
    mat = lw.weights[0]
    if node.op_type == "Gemm":
        mat = mat / _attr(node, "alpha", 1.0)
        out = [(node, 1, (mat if _attr(node, "transB", 0) else mat.T).astype(dtype), "_W")]
        if lw.has_bias:
            bias_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
            c = lw.biases[0] / _attr(node, "beta", 1.0)
            if bias_name:
                c = c.reshape(tuple(int(d) for d in inits[bias_name].dims))
            out.append((node, 2, c.astype(dtype), "_C"))
        return out
    out = [(node, 1, mat.T.astype(dtype), "_W")]  # MatMul
    if bias_add is not None and lw.has_bias:
        add, idx = bias_add
        old = inits[add.input[idx]]
        out.append((add, idx, lw.biases[0].reshape(tuple(int(d) for d in old.dims)).astype(
            helper.tensor_dtype_to_np_dtype(old.data_type)), "_B"))
    return out


def write_layer(model: onnx.ModelProto, node: onnx.NodeProto, lw: LayerWeights,
                bias_add: tuple[onnx.NodeProto, int] | None = None) -> None:
    """Store effective weights/biases back in the node's own dtype and layout."""
    for target, index, value, suffix in _layer_values(model, node, lw, bias_add):
        _set_const(model, target, index, value, suffix=suffix)


def layer_arrays(model: onnx.ModelProto, node: onnx.NodeProto, lw: LayerWeights,
                 bias_add: tuple[onnx.NodeProto, int] | None = None) -> dict[str, np.ndarray] | None:
    """The same values keyed by the initializers they would replace, without touching the model;
    None when one has no initializer of its own (a missing bias, or a constant other nodes read too)."""
    inits, uses = _inits(model), use_counts(model)
    out: dict[str, np.ndarray] = {}
    for target, index, value, _ in _layer_values(model, node, lw, bias_add):
        name = target.input[index] if index < len(target.input) else ""
        if not name or name not in inits or uses[name] != 1:
            return None
        out[name] = value
    return out
