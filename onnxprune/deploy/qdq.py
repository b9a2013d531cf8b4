"""Reading a Q/DQ (QuantizeLinear / DequantizeLinear) model: which ops are quantized, and their int8 weights.

A weighted layer (Conv, ConvTranspose, Gemm, MatMul) runs in INT8 on TensorRT and in ONNX Runtime's
QLinear kernels when both its activation input and its weight arrive through a DequantizeLinear.
The weight is either stored quantized (DequantizeLinear of an int8 initializer, ONNX Runtime's form)
or as FP32 behind a QuantizeLinear -> DequantizeLinear pair (ModelOpt's form); `quantized_weight`
reads both as the integers TensorRT would build with.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.graph.rules import contrib_quantized

WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
# Ops that only exist in an already quantized graph: ONNX's, and ONNX Runtime's com.microsoft ones the
# pruning rules refuse (one list for both).
QUANTIZED_OPS = QDQ_OPS | frozenset({"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"}) | \
    frozenset(contrib_quantized.LAYERS) | frozenset(contrib_quantized.OTHERS)


def quantized_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Nodes that only a quantized model holds: Q/DQ, QLinear*, *Integer and ONNX Runtime's quantized ops."""
    return [n for n in model.graph.node if n.op_type in QUANTIZED_OPS or n.op_type.startswith("QLinear")]


class Producers:
    """Who produces each tensor, which tensors are initializers, who reads each tensor."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.by_output = {o: n for n in model.graph.node for o in n.output if o}
        self.inits = {t.name: t for t in model.graph.initializer}
        self.readers: dict[str, list[onnx.NodeProto]] = {}
        for n in model.graph.node:
            for x in n.input:
                if x:
                    self.readers.setdefault(x, []).append(n)

    def producer(self, tensor: str) -> onnx.NodeProto | None:
        return self.by_output.get(tensor)

    def dequantized(self, tensor: str) -> onnx.NodeProto | None:
        """The DequantizeLinear producing `tensor`, or None."""
        p = self.producer(tensor)
        return p if p is not None and p.op_type == "DequantizeLinear" else None

    def constant(self, tensor: str) -> np.ndarray | None:
        t = self.inits.get(tensor)
        if t is None:
            return None
        try:
            return numpy_helper.to_array(t)
        except Exception:  # noqa: BLE001 - external data not loaded: unknown
            return None


@dataclass(frozen=True)
class QuantWeight:
    """The integer weight of a quantized layer as stored (or as its QuantizeLinear would make it)."""

    values: np.ndarray  # integers, the weight's shape
    scale: np.ndarray
    axis: int | None  # per-channel axis; None: per tensor
    stored: str  # the initializer holding it (int8, or the FP32 one behind a QuantizeLinear)


def _axis(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 1)


def _quantize(x: np.ndarray, scale: np.ndarray, zero: np.ndarray | None, axis: int, dtype: np.dtype) -> np.ndarray:
    """QuantizeLinear's arithmetic: saturate(round_half_even(x / scale) + zero_point)."""
    shape = [1] * x.ndim
    if scale.ndim == 1 and scale.size > 1:
        shape[axis % x.ndim] = scale.size
    s = scale.reshape(shape) if scale.ndim else scale
    z = (zero.reshape(shape) if zero is not None and zero.ndim else zero) if zero is not None else 0
    info = np.iinfo(dtype)
    return np.clip(np.rint(x / s) + z, info.min, info.max).astype(dtype)


def quantized_weight(view: Producers, node: onnx.NodeProto) -> QuantWeight | None:
    """The weight input (index 1) of a weighted node as integers, or None if it is not quantized."""
    if len(node.input) < 2:
        return None
    dq = view.dequantized(node.input[1])
    if dq is None:
        return None
    scale = view.constant(dq.input[1]) if len(dq.input) > 1 else None
    if scale is None:
        return None
    axis = _axis(dq) if scale.size > 1 else None
    stored = view.constant(dq.input[0])
    if stored is not None and stored.dtype.kind in "iu":
        return QuantWeight(stored, scale, axis, dq.input[0])
    q = view.producer(dq.input[0])
    if q is None or q.op_type != "QuantizeLinear":
        return None
    fp = view.constant(q.input[0])
    if fp is None:
        return None
    zero = view.constant(q.input[2]) if len(q.input) > 2 and q.input[2] else None
    dtype = zero.dtype if zero is not None else np.dtype(np.uint8)
    return QuantWeight(_quantize(fp, scale, zero, _axis(q), dtype), scale, axis, q.input[0])


@dataclass(frozen=True)
class Int8Layer:
    node: str
    op_type: str
    activation_quantized: bool
    weight: QuantWeight | None

    @property
    def int8(self) -> bool:
        return self.activation_quantized and self.weight is not None


def weighted_layers(model: onnx.ModelProto, view: Producers | None = None) -> Iterator[tuple[onnx.NodeProto, Int8Layer]]:
    """Every Conv/ConvTranspose/Gemm/MatMul with how its inputs are quantized."""
    v = view or Producers(model)
    for node in model.graph.node:
        if node.op_type not in WEIGHTED_OPS or len(node.input) < 2:
            continue
        act = v.dequantized(node.input[0]) is not None
        yield node, Int8Layer(node.name, node.op_type, act, quantized_weight(v, node))


def int8_layers(model: onnx.ModelProto) -> list[Int8Layer]:
    """The weighted layers whose activation and weight both come through DequantizeLinear."""
    return [layer for _, layer in weighted_layers(model) if layer.int8]
