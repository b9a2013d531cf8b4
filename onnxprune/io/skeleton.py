"""Weightless copies of a model, for shape inference and type lookups at any model size.

Shape inference and the checker cannot take a protobuf of 2 GB or more, and copying weights
just to infer shapes wastes memory anyway: a skeleton keeps the graph and replaces every large
initializer by a dims-only stub.
"""

from __future__ import annotations

import math

import onnx
from onnx import TensorProto

STUB_BYTES = 4096


def tensor_nbytes(t: TensorProto) -> int:
    """Payload bytes of an initializer (its dims times the item size when stored outside raw_data)."""
    if t.data_location == TensorProto.EXTERNAL or not t.HasField("raw_data"):
        if t.data_type in (TensorProto.STRING, TensorProto.UNDEFINED):
            return t.ByteSize()
        n = math.prod(int(d) for d in t.dims)
        return n * int(onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize)
    return len(t.raw_data)


def without_weights(model: onnx.ModelProto, *, stub_bytes: int = STUB_BYTES) -> onnx.ModelProto:
    """Copy of `model` whose initializers above stub_bytes (or external) become dims-only stubs."""
    graph = model.graph
    dst = onnx.ModelProto(ir_version=model.ir_version, producer_name=model.producer_name,
                          opset_import=list(model.opset_import), functions=list(model.functions))
    g = dst.graph
    g.name = graph.name
    g.node.extend(graph.node)
    g.input.extend(graph.input)
    g.output.extend(graph.output)
    g.value_info.extend(graph.value_info)
    for t in graph.initializer:
        if t.data_location == TensorProto.EXTERNAL or tensor_nbytes(t) > stub_bytes:
            g.initializer.append(TensorProto(name=t.name, data_type=t.data_type, dims=list(t.dims)))
        else:
            g.initializer.append(t)
    return dst


def infer(model: onnx.ModelProto, *, strict: bool = False, data_prop: bool = False) -> onnx.ModelProto:
    """ONNX shape inference on the skeleton (raises like onnx does when strict)."""
    return onnx.shape_inference.infer_shapes(without_weights(model), strict_mode=strict, data_prop=data_prop)


def elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor shape inference can type (best effort: {} on failure)."""
    try:
        inferred = infer(model)
    except Exception:  # noqa: BLE001 - inference raises several types on odd models
        inferred = model
    g = inferred.graph
    return {vi.name: vi.type.tensor_type.elem_type for vi in (*g.value_info, *g.input, *g.output)
            if vi.type.tensor_type.elem_type}
