"""An ONNX graph run by PyTorch, so its weights can be trained by autograd (distillation).

`TorchGraph(model, trainable)` interprets the graph node by node with torch ops: one rule per ONNX
op (`RULES`), the initializers named in `trainable` as `nn.Parameter`s keyed by their initializer
name, every other initializer a constant. Training a parameter and writing it back by that name is
therefore exact and complete by construction: no converter decides how weights are laid out, and a
tied weight stays one parameter. `unsupported(model)` lists the ops without a rule; a model with
any is refused. Shape arithmetic (Shape, Gather, Concat of int64 tensors) runs in torch as well.

Only the standard domain, float32 compute. Needs torch (the `[distill]` extra); import this module
lazily.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper

Tensor = torch.Tensor
Rule = Callable[[onnx.NodeProto, list[Any], dict[str, Any]], Any]
RULES: dict[str, Rule] = {}
INT_MAX = 2**62


def rule(*ops: str) -> Callable[[Rule], Rule]:
    def deco(fn: Rule) -> Rule:
        for op in ops:
            RULES[op] = fn
        return fn

    return deco


def _dtype(onnx_type: int) -> torch.dtype:
    np_type = helper.tensor_dtype_to_np_dtype(onnx_type)
    return torch.bool if np_type == np.bool_ else torch.from_numpy(np.zeros(1, dtype=np_type)).dtype


def _ints(t: Tensor | None) -> list[int]:
    return [] if t is None else [int(v) for v in t.reshape(-1).tolist()]


def _opset(attrs: Mapping[str, Any]) -> int:
    return int(attrs["__opset"])


# Element-wise ops: ONNX broadcasting is numpy's, as torch's.
_BINARY: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Pow": torch.pow, "Equal": torch.eq,
    "Greater": torch.gt, "Less": torch.lt, "GreaterOrEqual": torch.ge, "LessOrEqual": torch.le,
    "And": torch.logical_and, "Or": torch.logical_or, "Xor": torch.logical_xor,
}
_UNARY: dict[str, Callable[[Tensor], Tensor]] = {
    "Relu": F.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Exp": torch.exp, "Log": torch.log,
    "Sqrt": torch.sqrt, "Neg": torch.neg, "Abs": torch.abs, "Erf": torch.erf, "Sin": torch.sin, "Cos": torch.cos,
    "Reciprocal": torch.reciprocal, "Not": torch.logical_not, "Floor": torch.floor, "Ceil": torch.ceil,
    "Identity": lambda x: x, "Softplus": F.softplus, "Sign": torch.sign, "HardSwish": F.hardswish,
}


@rule(*_BINARY)
def _binary(node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> Tensor:
    return _BINARY[node.op_type](x[0], x[1])


@rule("Div")
def _div(node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> Tensor:
    if x[0].is_floating_point() or x[1].is_floating_point():
        return x[0] / x[1]
    return torch.div(x[0], x[1], rounding_mode="trunc")


@rule(*_UNARY)
def _unary(node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> Tensor:
    return _UNARY[node.op_type](x[0])


@rule("Dropout")
def _dropout(node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> Tensor:
    return x[0]  # inference semantics: the exported graph's behaviour


_VARIADIC: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "Sum": torch.add, "Mean": torch.add, "Max": torch.maximum, "Min": torch.minimum}


@rule(*_VARIADIC)
def _variadic(node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> Tensor:
    fn = _VARIADIC[node.op_type]
    out = x[0]
    for y in x[1:]:
        out = fn(out, y)
    return out / len(x) if node.op_type == "Mean" else out


@rule("LeakyRelu")
def _leaky(node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> Tensor:
    return F.leaky_relu(x[0], float(a.get("alpha", 0.01)))


@rule("PRelu")
def _prelu(node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> Tensor:
    return torch.where(x[0] < 0, x[0] * x[1], x[0])


@rule("HardSigmoid")
def _hard_sigmoid(node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> Tensor:
    return torch.clamp(float(a.get("alpha", 0.2)) * x[0] + float(a.get("beta", 0.5)), 0.0, 1.0)


@rule("Gelu")
def _gelu(node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> Tensor:
    return F.gelu(x[0], approximate=str(a.get("approximate", "none")))


@rule("Clip")
def _clip(node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> Tensor:
    lo = x[1] if len(x) > 1 and x[1] is not None else a.get("min")
    hi = x[2] if len(x) > 2 and x[2] is not None else a.get("max")
    out = x[0]
    if lo is not None:
        out = torch.maximum(out, torch.as_tensor(lo, dtype=out.dtype))
    if hi is not None:
        out = torch.minimum(out, torch.as_tensor(hi, dtype=out.dtype))
    return out


@rule("Where")
def _where(node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> Tensor:
    return torch.where(x[0], x[1], x[2])


@rule("Cast")
def _cast(node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> Tensor:
    return x[0].to(_dtype(int(a["to"])))


@rule("Softmax", "LogSoftmax")
def _softmax(node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> Tensor:
    axis = int(a.get("axis", -1 if _opset(a) >= 13 else 1))
    t = x[0]
    fn = torch.softmax if node.op_type == "Softmax" else torch.log_softmax
    if _opset(a) >= 13:
        return fn(t, axis)
    axis = axis % t.dim()  # before opset 13: over the flattened trailing dims
    return fn(t.reshape(*t.shape[:axis], -1), -1).reshape(t.shape)


def _pads(node: onnx.NodeProto, a: dict[str, Any], spatial: Sequence[int], kernel: Sequence[int],
          strides: Sequence[int], dilations: Sequence[int]) -> list[int]:
    """ONNX pads [b1.., e1..], auto_pad resolved."""
    n = len(kernel)
    auto = a.get("auto_pad", "NOTSET")
    if isinstance(auto, bytes):
        auto = auto.decode()
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for size, k, s, d in zip(spatial, kernel, strides, dilations, strict=True):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small, big = total // 2, total - total // 2
            begin.append(small if auto == "SAME_UPPER" else big)
            end.append(big if auto == "SAME_UPPER" else small)
        return begin + end
    if auto == "VALID":
        return [0] * (2 * n)
    return [int(p) for p in a.get("pads", [0] * (2 * n))]


def _torch_pad(pads: Sequence[int]) -> list[int]:
    """ONNX [b1, b2, e1, e2] to F.pad's last-dim-first [b2, e2, b1, e1]."""
    n = len(pads) // 2
    out: list[int] = []
    for i in reversed(range(n)):
        out += [pads[i], pads[i + n]]
    return out


def _padded(t: Tensor, pads: list[int], value: float = 0.0) -> tuple[Tensor, list[int]]:
    """Symmetric pads as the op's padding; asymmetric ones applied first (the op then pads 0)."""
    n = len(pads) // 2
    if pads[:n] == pads[n:]:
        return t, pads[:n]
    return F.pad(t, _torch_pad(pads), value=value), [0] * n


def _conv_geometry(node: onnx.NodeProto, x: list[Any], a: dict[str, Any], k: Sequence[int],
                   ) -> tuple[list[int], list[int]]:
    n = len(k)
    return [int(s) for s in a.get("strides", [1] * n)], [int(d) for d in a.get("dilations", [1] * n)]


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@rule("Conv")
def _conv(node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> Tensor:
    w = x[1]
    k = list(w.shape[2:])
    strides, dilations = _conv_geometry(node, x, a, k)
    pads = _pads(node, a, list(x[0].shape[2:]), k, strides, dilations)
    t, padding = _padded(x[0], pads)
    bias = x[2] if len(x) > 2 else None
    return _CONV[len(k)](t, w, bias, stride=strides, padding=padding, dilation=dilations, groups=int(a.get("group", 1)))


@rule("ConvTranspose")
def _conv_transpose(node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> Tensor:
    if "output_shape" in a:
        raise NotImplementedError("ConvTranspose with output_shape")
    w = x[1]
    k = list(w.shape[2:])
    n = len(k)
    strides, dilations = _conv_geometry(node, x, a, k)
    auto = a.get("auto_pad", "NOTSET")
    if auto not in ("NOTSET", b"NOTSET", "VALID", b"VALID"):
        raise NotImplementedError(f"ConvTranspose with auto_pad {auto!r}")
    pads = [int(p) for p in a.get("pads", [0] * (2 * n))]
    outpad = [int(p) for p in a.get("output_padding", [0] * n)]
    bias = x[2] if len(x) > 2 else None
    out = _CONV_T[n](x[0], w, bias, stride=strides, padding=0, output_padding=outpad,
                     groups=int(a.get("group", 1)), dilation=dilations)
    index = [slice(None), slice(None)] + [slice(pads[i], out.shape[2 + i] - pads[i + n]) for i in range(n)]
    return out[tuple(index)]


@rule("Gemm")
def _gemm(node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> Tensor:
    A = x[0].transpose(0, 1) if int(a.get("transA", 0)) else x[0]
    B = x[1].transpose(0, 1) if int(a.get("transB", 0)) else x[1]
    out = float(a.get("alpha", 1.0)) * (A @ B)
    if len(x) > 2 and x[2] is not None:
        out = out + float(a.get("beta", 1.0)) * x[2]
    return out


@rule("MatMul")
def _matmul(node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> Tensor:
    return torch.matmul(x[0], x[1])


@rule("Einsum")
def _einsum(node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> Tensor:
    return torch.einsum(str(a["equation"]), *x)


@rule("BatchNormalization")
def _batchnorm(node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> Tensor:
    if int(a.get("training_mode", 0)):
        raise NotImplementedError("BatchNormalization in training mode")
    return F.batch_norm(x[0], x[3], x[4], x[1], x[2], training=False, eps=float(a.get("epsilon", 1e-5)))


@rule("LayerNormalization")
def _layernorm(node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> Tensor:
    t = x[0]
    axis = int(a.get("axis", -1)) % t.dim()
    dims = tuple(range(axis, t.dim()))
    mean = t.mean(dim=dims, keepdim=True)
    var = ((t - mean) ** 2).mean(dim=dims, keepdim=True)
    out = (t - mean) / torch.sqrt(var + float(a.get("epsilon", 1e-5))) * x[1]
    return out + x[2] if len(x) > 2 and x[2] is not None else out


def _pool_setup(node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> tuple[list[int], list[int], list[int], list[int]]:
    k = [int(v) for v in a["kernel_shape"]]
    strides = [int(s) for s in a.get("strides", [1] * len(k))]
    dilations = [int(d) for d in a.get("dilations", [1] * len(k))]
    return k, strides, dilations, _pads(node, a, list(x[0].shape[2:]), k, strides, dilations)


@rule("MaxPool")
def _maxpool(node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> Tensor:
    k, strides, dilations, pads = _pool_setup(node, x, a)
    n = len(k)
    t, padding = _padded(x[0], pads, value=-math.inf)
    fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[n]
    return fn(t, k, strides, padding, dilations, ceil_mode=bool(int(a.get("ceil_mode", 0))))  # type: ignore[operator]


@rule("AveragePool")
def _avgpool(node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> Tensor:
    k, strides, dilations, pads = _pool_setup(node, x, a)
    n = len(k)
    if pads[:n] != pads[n:] or any(d != 1 for d in dilations):
        raise NotImplementedError("AveragePool with asymmetric pads or dilations")
    fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[n]
    return fn(x[0], k, strides, pads[:n], ceil_mode=bool(int(a.get("ceil_mode", 0))),  # type: ignore[operator]
              count_include_pad=bool(int(a.get("count_include_pad", 0))))


@rule("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> Tensor:
    dims = tuple(range(2, x[0].dim()))
    if node.op_type == "GlobalAveragePool":
        return x[0].mean(dim=dims, keepdim=True)
    return x[0].amax(dim=dims, keepdim=True)


def _axes(x: list[Any], a: dict[str, Any], *, opset_input: int) -> list[int] | None:
    if _opset(a) >= opset_input:
        return _ints(x[1]) if len(x) > 1 and x[1] is not None else None
    return [int(v) for v in a["axes"]] if "axes" in a else None


@rule("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2", "ReduceSumSquare")
def _reduce(node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> Tensor:
    axes = _axes(x, a, opset_input=13 if node.op_type == "ReduceSum" else 18)
    t = x[0]
    keep = bool(int(a.get("keepdims", 1)))
    if not axes:
        if int(a.get("noop_with_empty_axes", 0)):
            return t
        axes = list(range(t.dim()))
    dims = tuple(v % t.dim() for v in axes)
    op = node.op_type
    if op == "ReduceMean":
        return t.mean(dim=dims, keepdim=keep)
    if op == "ReduceSum":
        return t.sum(dim=dims, keepdim=keep)
    if op == "ReduceSumSquare":
        return (t * t).sum(dim=dims, keepdim=keep)
    if op == "ReduceL2":
        return torch.sqrt((t * t).sum(dim=dims, keepdim=keep))
    if op == "ReduceProd":
        out = t
        for d in sorted(dims, reverse=True):
            out = out.prod(dim=d, keepdim=keep)
        return out
    return t.amax(dim=dims, keepdim=keep) if op == "ReduceMax" else t.amin(dim=dims, keepdim=keep)


@rule("Concat")
def _concat(node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> Tensor:
    parts = [t for t in x if t is not None and t.numel() > 0] or [x[0]]
    return torch.cat(parts, dim=int(a["axis"]))


@rule("Split")
def _split(node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> tuple[Tensor, ...]:
    axis = int(a.get("axis", 0))
    sizes = _ints(x[1]) if len(x) > 1 and x[1] is not None else [int(v) for v in a.get("split", [])]
    if not sizes:
        n = len(node.output)
        size = x[0].shape[axis]
        chunk = -(-size // n)
        sizes = [chunk] * (n - 1) + [size - chunk * (n - 1)]
    return tuple(torch.split(x[0], sizes, dim=axis))


@rule("Slice")
def _slice(node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> Tensor:
    t = x[0]
    if _opset(a) < 10:
        starts, ends = [int(v) for v in a["starts"]], [int(v) for v in a["ends"]]
        axes = [int(v) for v in a.get("axes", range(len(starts)))]
        steps = [1] * len(starts)
    else:
        starts, ends = _ints(x[1]), _ints(x[2])
        axes = _ints(x[3]) if len(x) > 3 and x[3] is not None else list(range(len(starts)))
        steps = _ints(x[4]) if len(x) > 4 and x[4] is not None else [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        axis %= t.dim()
        size = t.shape[axis]
        if step > 0:
            lo = min(max(start + size if start < 0 else start, 0), size)
            hi = min(max(end + size if end < 0 else end, 0), size)
            t = t.narrow(axis, lo, max(hi - lo, 0))[(slice(None),) * axis + (slice(None, None, step),)]
        else:  # torch slices forward only: flip, then slice forward
            lo = min(max(start + size if start < 0 else start, -1), size - 1)
            hi = min(max(end + size if end < 0 else end, -1), size - 1)
            idx = torch.arange(lo, hi, step)
            t = t.index_select(axis, idx)
    return t


@rule("Reshape")
def _reshape(node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> Tensor:
    shape = _ints(x[1])
    if not int(a.get("allowzero", 0)):
        shape = [x[0].shape[i] if v == 0 else v for i, v in enumerate(shape)]
    return x[0].reshape(tuple(shape))


@rule("Transpose")
def _transpose(node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> Tensor:
    perm = [int(p) for p in a.get("perm", reversed(range(x[0].dim())))]
    return x[0].permute(perm)


@rule("Flatten")
def _flatten(node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> Tensor:
    t = x[0]
    axis = int(a.get("axis", 1)) % (t.dim() + 1) if t.dim() else 0
    return t.reshape(int(np.prod(t.shape[:axis])), -1)


@rule("Squeeze")
def _squeeze(node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> Tensor:
    axes = _axes(x, a, opset_input=13)
    t = x[0]
    if axes is None:
        return t.squeeze()
    for d in sorted((v % t.dim() for v in axes), reverse=True):
        t = t.squeeze(d)
    return t


@rule("Unsqueeze")
def _unsqueeze(node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> Tensor:
    axes = _axes(x, a, opset_input=13) or []
    t = x[0]
    rank = t.dim() + len(axes)
    for d in sorted(v % rank for v in axes):
        t = t.unsqueeze(d)
    return t


@rule("Gather")
def _gather(node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> Tensor:
    t, idx = x[0], x[1].long()
    axis = int(a.get("axis", 0)) % t.dim()
    idx = torch.where(idx < 0, idx + t.shape[axis], idx)
    flat = t.index_select(axis, idx.reshape(-1))
    return flat.reshape((*t.shape[:axis], *idx.shape, *t.shape[axis + 1:]))


@rule("Shape")
def _shape(node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> Tensor:
    dims = list(x[0].shape)
    start, end = int(a.get("start", 0)), a.get("end")
    return torch.tensor(dims[start:None if end is None else int(end)], dtype=torch.int64)


@rule("Size")
def _size(node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> Tensor:
    return torch.tensor(x[0].numel(), dtype=torch.int64)


@rule("ConstantOfShape")
def _constant_of_shape(node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> Tensor:
    value = a.get("value")
    fill = torch.from_numpy(numpy_helper.to_array(value).copy()) if value is not None else torch.zeros(1)
    return fill.reshape(-1)[0].expand(tuple(_ints(x[0]))).clone()


@rule("Constant")
def _constant(node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> Tensor:
    if "value" in a:
        return torch.from_numpy(numpy_helper.to_array(a["value"]).copy())
    for key, dtype in (("value_float", torch.float32), ("value_floats", torch.float32), ("value_int", torch.int64),
                       ("value_ints", torch.int64)):
        if key in a:
            return torch.tensor(a[key], dtype=dtype)
    raise NotImplementedError(f"Constant with {sorted(k for k in a if not k.startswith('__'))}")


@rule("Expand")
def _expand(node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> Tensor:
    shape = torch.broadcast_shapes(tuple(x[0].shape), tuple(_ints(x[1])))
    return x[0].expand(shape)


@rule("Tile")
def _tile(node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> Tensor:
    return x[0].repeat(*_ints(x[1]))


@rule("Range")
def _range(node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> Tensor:
    return torch.arange(x[0].item(), x[1].item(), x[2].item(), dtype=x[0].dtype)


@rule("Trilu")
def _trilu(node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> Tensor:
    k = int(x[1].item()) if len(x) > 1 and x[1] is not None else 0
    return torch.triu(x[0], k) if int(a.get("upper", 1)) else torch.tril(x[0], k)


@rule("Pad")
def _pad(node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> Tensor:
    mode = a.get("mode", "constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    pads = _ints(x[1]) if _opset(a) >= 11 else [int(v) for v in a["pads"]]
    axes = _ints(x[3]) if len(x) > 3 and x[3] is not None else list(range(x[0].dim()))
    if mode != "constant" or sorted(v % x[0].dim() for v in axes) != list(range(x[0].dim())):
        raise NotImplementedError(f"Pad mode {mode} or axes")
    value = float(x[2].item()) if len(x) > 2 and x[2] is not None and x[2].numel() else float(a.get("value", 0.0))
    return F.pad(x[0], _torch_pad(pads), value=value)


def _resize_index(out_size: int, in_size: int, scale: float, coord: str, nearest: str) -> Tensor:
    """Input index of every output position for nearest-neighbour Resize, as the spec computes it."""
    i = torch.arange(out_size, dtype=torch.float64)
    if coord == "asymmetric":
        src = i / scale
    elif coord == "align_corners":
        src = i * (in_size - 1) / max(out_size - 1, 1)
    elif coord == "half_pixel":
        src = (i + 0.5) / scale - 0.5
    elif coord == "pytorch_half_pixel":
        src = (i + 0.5) / scale - 0.5 if out_size > 1 else torch.zeros_like(i)
    else:
        raise NotImplementedError(f"Resize coordinate_transformation_mode {coord}")
    if nearest == "floor":
        idx = torch.floor(src)
    elif nearest == "ceil":
        idx = torch.ceil(src)
    elif nearest == "round_prefer_ceil":
        idx = torch.floor(src + 0.5)
    else:  # round_prefer_floor
        idx = torch.ceil(src - 0.5)
    return idx.clamp(0, in_size - 1).long()


@rule("Resize", "Upsample")
def _resize(node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> Tensor:
    t = x[0]
    mode, coord, nearest = (str(v.decode() if isinstance(v, bytes) else v) for v in (
        a.get("mode", "nearest"), a.get("coordinate_transformation_mode", "half_pixel" if _opset(a) >= 11 else
                                        "asymmetric"), a.get("nearest_mode", "round_prefer_floor")))
    if node.op_type == "Upsample" or _opset(a) < 11:
        scales = [float(v) for v in (x[1].tolist() if len(x) > 1 and x[1] is not None else a["scales"])]
        sizes = [int(math.floor(s * d)) for s, d in zip(scales, t.shape, strict=True)]
    else:
        sizes_in = x[3] if len(x) > 3 and x[3] is not None and x[3].numel() else None
        scales_in = x[2] if len(x) > 2 and x[2] is not None and x[2].numel() else None
        if sizes_in is not None:
            sizes = _ints(sizes_in)
            scales = [o / i for o, i in zip(sizes, t.shape, strict=True)]
        else:
            assert scales_in is not None
            scales = [float(v) for v in scales_in.tolist()]
            sizes = [int(math.floor(s * d)) for s, d in zip(scales, t.shape, strict=True)]
    if sizes[:2] != list(t.shape[:2]):
        raise NotImplementedError("Resize of the batch or channel axes")
    if mode == "nearest":
        for axis in range(2, t.dim()):
            if sizes[axis] != t.shape[axis] or scales[axis] != 1.0:
                t = t.index_select(axis, _resize_index(sizes[axis], t.shape[axis], scales[axis], coord, nearest))
        return t
    if mode == "linear" and coord in ("half_pixel", "align_corners", "pytorch_half_pixel") and t.dim() in (3, 4, 5):
        interp = {3: "linear", 4: "bilinear", 5: "trilinear"}[t.dim()]
        return F.interpolate(t, size=sizes[2:], mode=interp, align_corners=coord == "align_corners")
    raise NotImplementedError(f"Resize mode {mode} with {coord}")


def _attributes(node: onnx.NodeProto, opset: int) -> dict[str, Any]:
    out: dict[str, Any] = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    for k, v in list(out.items()):
        if isinstance(v, bytes):
            out[k] = v.decode()
    out["__opset"] = opset
    return out


def opset_of(model: onnx.ModelProto) -> int:
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def unsupported(model: onnx.ModelProto) -> list[str]:
    """The op types of `model` without a torch rule here (sorted; contrib domains are listed too)."""
    bad = {f"{n.domain}.{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type
           for n in model.graph.node if n.domain not in ("", "ai.onnx") or n.op_type not in RULES}
    return sorted(bad)


class TorchGraph(torch.nn.Module):
    """The graph of `model` as a torch module; `trainable` initializers are its parameters.

    `forward(feed, names)` returns the named tensors (graph outputs or any intermediate tensor)."""

    def __init__(self, model: onnx.ModelProto, trainable: Sequence[str]) -> None:
        super().__init__()
        self.nodes = list(model.graph.node)
        self.opset = opset_of(model)
        self.attrs = [_attributes(n, self.opset) for n in self.nodes]
        inits = {t.name: t for t in model.graph.initializer}
        self.names = [n for n in dict.fromkeys(trainable) if n in inits]
        self.params = torch.nn.ParameterList(
            torch.nn.Parameter(torch.from_numpy(numpy_helper.to_array(inits[n]).astype(np.float32)))
            for n in self.names)
        self.consts: dict[str, Tensor] = {
            name: torch.from_numpy(np.array(numpy_helper.to_array(t))) for name, t in inits.items()
            if name not in set(self.names)}
        self.outputs = [o.name for o in model.graph.output]
        last: dict[str, int] = {}
        for i, n in enumerate(self.nodes):
            for v in n.input:
                last[v] = i
        self._last_use = last

    def parameter(self, name: str) -> torch.nn.Parameter:
        return self.params[self.names.index(name)]

    def state(self) -> dict[str, np.ndarray]:
        """The current value of every trainable initializer, by initializer name."""
        return {n: p.detach().numpy().copy() for n, p in zip(self.names, self.params, strict=True)}

    def load(self, values: Mapping[str, np.ndarray]) -> None:
        with torch.no_grad():
            for n, p in zip(self.names, self.params, strict=True):
                p.copy_(torch.from_numpy(values[n]))

    def forward(self, feed: Mapping[str, np.ndarray], names: Sequence[str] | None = None) -> dict[str, Tensor]:
        wanted = list(names) if names is not None else self.outputs
        keep = set(wanted)
        env: dict[str, Any] = dict(self.consts)
        env.update(zip(self.names, self.params, strict=True))
        env.update({k: torch.from_numpy(np.asarray(v)) for k, v in feed.items()})
        for i, (node, attrs) in enumerate(zip(self.nodes, self.attrs, strict=True)):
            args = [env[v] if v else None for v in node.input]
            out = RULES[node.op_type](node, args, attrs)
            outs = out if isinstance(out, tuple) else (out,)
            for name, value in zip(node.output, outs, strict=False):
                if name:
                    env[name] = value
            for v in node.input:  # free activations no later node reads (autograd keeps what it needs)
                if v and self._last_use.get(v) == i and v not in keep and v not in self.consts:
                    env.pop(v, None)
        return {n: env[n] for n in wanted}
