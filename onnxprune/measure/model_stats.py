"""Model statistics: parameters, MACs per node and in total, serialised size, op-type counts.

MAC conventions (one multiply-accumulate = 1 MAC; bias additions are not counted):

* Conv:          prod(Y.shape) * prod(W.shape[1:])      (W is [M, C/group, k...], any rank)
* ConvTranspose: prod(X.shape) * prod(W.shape[1:])      (W is [C, M/group, k...])
* Gemm:          M * K * N                              (after transA / transB)
* MatMul:        prod(Y.shape) * K                      (batched and broadcast; K = A.shape[-1])
* every other op: 0 MACs (still listed in the op counts)

Shapes come from ONNX shape inference on a copy whose dynamic input dimensions are pinned
(`shapes=` or batch 1 / 64 for other dynamic dims, as `onnxprune.io.inputs.random_inputs` does).
Where a needed shape is still unknown, one ONNX Runtime run on random input exposes the
missing intermediate tensors as outputs. Only the top-level graph is counted (not If/Loop bodies).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from onnxprune.errors import OnnxPruneError
from onnxprune.io.inputs import concrete_shapes, graph_inputs, random_inputs
from onnxprune.io.model_io import EXTERNAL_DATA_THRESHOLD
from onnxprune.io.skeleton import tensor_nbytes, without_weights

Shape = tuple[int, ...]

MAC_OPS: frozenset[str] = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul",
                                     "ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul"})

FLOAT_TYPES: frozenset[int] = frozenset({
    TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16,
    *(getattr(TensorProto, n) for n in ("FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ")
      if hasattr(TensorProto, n)),
})

# Initializers above this many payload bytes are replaced by dims-only stubs before shape
# inference: inference never needs their values, and it avoids serialising the weights.
_STUB_BYTES = 4096

# Input slots (after the QLinear*/Integer remapping) of (A/X, B/W) for each MAC op.
_OPERANDS: dict[str, tuple[int, int]] = {
    "Conv": (0, 1), "ConvTranspose": (0, 1), "Gemm": (0, 1), "MatMul": (0, 1),
    "ConvInteger": (0, 1), "MatMulInteger": (0, 1), "QLinearConv": (0, 3), "QLinearMatMul": (0, 3),
}


@dataclass(frozen=True)
class ModelStats:
    """Immutable statistics of one model. `to_dict()` gives a JSON-friendly dict."""

    params: int                       # elements of float weights (initializers, Constant, constant ConstantOfShape)
    param_bytes: int                  # bytes of those weights
    macs: int                         # sum of node_macs
    size_bytes: int                   # serialised size (initializer + node bytes for models >~1.8 GB)
    op_counts: Mapping[str, int]      # op type -> count (top-level graph; "domain:Op" outside ai.onnx)
    node_macs: Mapping[str, int]      # node key -> MACs for every MAC op (see `node_keys`)
    macs_by_op: Mapping[str, int]     # op type -> MACs
    input_shapes: Mapping[str, Shape] = field(default_factory=lambda: MappingProxyType({}))
    unresolved: tuple[str, ...] = ()  # MAC-op node keys whose shapes stayed unknown (counted as 0)
    shape_source: str = "inference"   # "inference" or "inference+runtime"

    @property
    def num_nodes(self) -> int:
        return sum(self.op_counts.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "params": self.params,
            "param_bytes": self.param_bytes,
            "macs": self.macs,
            "size_bytes": self.size_bytes,
            "num_nodes": self.num_nodes,
            "op_counts": dict(self.op_counts),
            "macs_by_op": dict(self.macs_by_op),
            "node_macs": dict(self.node_macs),
            "input_shapes": {k: list(v) for k, v in self.input_shapes.items()},
            "unresolved": list(self.unresolved),
            "shape_source": self.shape_source,
        }


def node_keys(graph: onnx.GraphProto) -> list[str]:
    """A unique key per node: its name, or `OpType#index` when unnamed or duplicated."""
    seen: Counter[str] = Counter(n.name for n in graph.node if n.name)
    keys = []
    for i, n in enumerate(graph.node):
        keys.append(n.name if n.name and seen[n.name] == 1 else f"{n.op_type}#{i}")
    return keys


def op_key(node: onnx.NodeProto) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}:{node.op_type}"


def _numel(dims: Iterable[int]) -> int:
    return int(math.prod(int(d) for d in dims))




def serialized_size(model: onnx.ModelProto) -> int:
    """Exact serialised size for normal models (no serialisation needed); for models near the
    2 GB protobuf limit, initializer payload bytes plus everything else."""
    init_bytes = sum(tensor_nbytes(t) for t in model.graph.initializer)
    external = any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer)
    if init_bytes < EXTERNAL_DATA_THRESHOLD and not external:
        return int(model.ByteSize())
    rest = sum(n.ByteSize() for n in model.graph.node)
    rest += sum(v.ByteSize() for v in (*model.graph.input, *model.graph.output, *model.graph.value_info))
    return init_bytes + rest


# ---------------------------------------------------------------------------------------- params


def _constant_tensor(node: onnx.NodeProto) -> tuple[int, int] | None:
    """(elements, dtype) of a Constant node's value, or None."""
    for a in node.attribute:
        if a.name == "value":
            return _numel(a.t.dims), a.t.data_type
        if a.name == "value_float":
            return 1, TensorProto.FLOAT
        if a.name == "value_floats":
            return len(a.floats), TensorProto.FLOAT
    return None


def _count_params(model: onnx.ModelProto, consts: Mapping[str, np.ndarray]) -> tuple[int, int]:
    n = nbytes = 0
    for t in model.graph.initializer:
        if t.data_type in FLOAT_TYPES:
            n += _numel(t.dims)
            nbytes += tensor_nbytes(t)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            got = _constant_tensor(node)
            if got and got[1] in FLOAT_TYPES:
                n += got[0]
                nbytes += got[0] * helper.tensor_dtype_to_np_dtype(got[1]).itemsize
        elif node.op_type == "ConstantOfShape" and node.input and node.input[0] in consts:
            # A constant-shaped fill is a materialised weight (ONNX "light" models build weights this way).
            dtype = TensorProto.FLOAT
            for a in node.attribute:
                if a.name == "value":
                    dtype = a.t.data_type
            if dtype in FLOAT_TYPES:
                k = _numel(consts[node.input[0]].reshape(-1).tolist())
                n += k
                nbytes += k * helper.tensor_dtype_to_np_dtype(dtype).itemsize
    return n, nbytes


def _small_constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Values of small integer initializers / Constant nodes (used for ConstantOfShape shapes)."""
    out: dict[str, np.ndarray] = {}
    for t in model.graph.initializer:
        if t.data_type in (TensorProto.INT64, TensorProto.INT32) and _numel(t.dims) <= 16 \
                and t.data_location != TensorProto.EXTERNAL:
            out[t.name] = onnx.numpy_helper.to_array(t)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            for a in node.attribute:
                if a.name == "value" and a.t.data_type in (TensorProto.INT64, TensorProto.INT32):
                    out[node.output[0]] = onnx.numpy_helper.to_array(a.t)
                elif a.name == "value_ints":
                    out[node.output[0]] = np.array(list(a.ints), dtype=np.int64)
    return out


# ---------------------------------------------------------------------------------------- shapes


def _dims_of(vi: onnx.ValueInfoProto) -> Shape | None:
    if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
        return None
    dims = []
    for d in vi.type.tensor_type.shape.dim:
        if not d.HasField("dim_value") or d.dim_value < 0:
            return None
        dims.append(int(d.dim_value))
    return tuple(dims)


def _skeleton(model: onnx.ModelProto, pinned: Mapping[str, Shape]) -> onnx.ModelProto:
    """A light copy for shape inference: big initializers reduced to dims, real inputs pinned."""
    sk = without_weights(model, stub_bytes=_STUB_BYTES)
    for vi in sk.graph.input:
        if vi.name in pinned:
            shape = vi.type.tensor_type.shape
            del shape.dim[:]
            for d in pinned[vi.name]:
                shape.dim.add().dim_value = int(d)
    return sk




def _inferred_shapes(model: onnx.ModelProto, pinned: Mapping[str, Shape]) -> dict[str, Shape]:
    sk = _skeleton(model, pinned)
    shapes: dict[str, Shape] = {t.name: tuple(int(d) for d in t.dims) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            for a in node.attribute:
                if a.name == "value":
                    shapes[node.output[0]] = tuple(int(d) for d in a.t.dims)
    try:
        inferred = onnx.shape_inference.infer_shapes(sk, data_prop=True)
    except Exception:  # noqa: BLE001 - inference errors on odd models: fall back to the runtime
        inferred = sk
    g = inferred.graph
    for vi in (*g.input, *g.value_info, *g.output):
        dims = _dims_of(vi)
        if dims is not None and vi.name not in shapes:
            shapes[vi.name] = dims
    return shapes


def _needed_tensors(node: onnx.NodeProto) -> list[str]:
    a_idx, b_idx = _OPERANDS[node.op_type]
    names = [node.input[i] for i in (a_idx, b_idx) if i < len(node.input) and node.input[i]]
    return [*names, *node.output[:1]]


def _runtime_shapes(model: onnx.ModelProto, names: list[str], *,
                    shapes: Mapping[str, Shape] | None) -> dict[str, Shape]:
    """Shapes of `names` from one ONNX Runtime run with random input (the tensors become outputs)."""
    from onnxprune.io import runtime  # imported lazily: ORT is heavy and rarely needed here

    if not names:
        return {}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = {o.name for o in probe.graph.output}
    inits = {t.name for t in probe.graph.initializer}
    wanted = [n for n in dict.fromkeys(names) if n not in inits]
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in wanted if n not in existing)
    feed = random_inputs(model, shapes=shapes)
    out = runtime.run(runtime.session(probe), feed, outputs=wanted)  # large models: weights stay on disk
    return {k: tuple(int(d) for d in np.shape(v)) for k, v in out.items()}


# ------------------------------------------------------------------------------------------ MACs


def _attr_int(node: onnx.NodeProto, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(a.i)
    return default


def _broadcast(a: Shape, b: Shape) -> Shape | None:
    try:
        return tuple(int(x) for x in np.broadcast_shapes(a, b))
    except ValueError:
        return None


def _matmul_out(a: Shape, b: Shape) -> Shape | None:
    if not a or not b:
        return None
    a2 = (1, *a) if len(a) == 1 else a
    b2 = (*b, 1) if len(b) == 1 else b
    batch = _broadcast(a2[:-2], b2[:-2])
    if batch is None:
        return None
    out = (*batch, a2[-2], b2[-1])
    if len(a) == 1:
        out = (*out[:-2], out[-1])
    if len(b) == 1:
        out = out[:-1]
    return out


def node_macs(node: onnx.NodeProto, shapes: Mapping[str, Shape]) -> int | None:
    """MACs of one node from tensor shapes; 0 for non-MAC ops, None if a needed shape is unknown."""
    op = node.op_type
    if op not in MAC_OPS or node.domain not in ("", "ai.onnx"):
        return 0
    a_idx, b_idx = _OPERANDS[op]
    if len(node.input) <= b_idx:
        return None
    a, w = shapes.get(node.input[a_idx]), shapes.get(node.input[b_idx])
    y = shapes.get(node.output[0]) if node.output else None
    if op in ("Conv", "ConvInteger", "QLinearConv"):
        if w is None or y is None or len(w) < 2:
            return None
        return _numel(y) * _numel(w[1:])
    if op == "ConvTranspose":
        if w is None or a is None or len(w) < 2:
            return None
        return _numel(a) * _numel(w[1:])
    if op == "Gemm":
        if a is None or w is None or len(a) != 2 or len(w) != 2:
            return None
        m, k = (a[1], a[0]) if _attr_int(node, "transA", 0) else a
        n = w[0] if _attr_int(node, "transB", 0) else w[1]
        return int(m) * int(k) * int(n)
    # MatMul family
    if a is None:
        return None
    if y is None and w is not None:
        y = _matmul_out(a, w)
    if y is None:
        return None
    return _numel(y) * int(a[-1])


def _pinned_inputs(model: onnx.ModelProto, shapes: Mapping[str, Shape] | None) -> dict[str, Shape]:
    return concrete_shapes(graph_inputs(model), shapes=shapes)


def model_stats(model: onnx.ModelProto, *, shapes: Mapping[str, Shape] | None = None,
                runtime_fallback: bool = True) -> ModelStats:
    """Parameters, MACs (per node and total), serialised size and op counts of `model`.

    `shapes` pins dynamic input dimensions (name -> shape); other dynamic dims use batch 1 and 64,
    as `onnxprune.io.inputs.random_inputs` does. MACs are for that input shape.
    """
    if not model.graph.node:
        raise OnnxPruneError("model has no nodes")
    pinned = _pinned_inputs(model, shapes)
    known = _inferred_shapes(model, pinned)
    keys = node_keys(model.graph)
    macs: dict[str, int | None] = {}
    for key, node in zip(keys, model.graph.node, strict=True):
        if node.op_type in MAC_OPS and node.domain in ("", "ai.onnx"):
            macs[key] = node_macs(node, known)
    source = "inference"
    missing = [k for k, v in macs.items() if v is None]
    if missing and runtime_fallback:
        by_key = dict(zip(keys, model.graph.node, strict=True))
        names = [t for k in missing for t in _needed_tensors(by_key[k]) if t not in known]
        try:
            known.update(_runtime_shapes(model, names, shapes=pinned))
            source = "inference+runtime"
        except OnnxPruneError:
            pass  # leave them unresolved; the caller sees `unresolved`
        for k in missing:
            macs[k] = node_macs(by_key[k], known)
    resolved = {k: int(v) for k, v in macs.items() if v is not None}
    by_op: Counter[str] = Counter()
    for key, node in zip(keys, model.graph.node, strict=True):
        if key in resolved:
            by_op[op_key(node)] += resolved[key]
    params, param_bytes = _count_params(model, _small_constants(model))
    return ModelStats(
        params=params,
        param_bytes=param_bytes,
        macs=sum(resolved.values()),
        size_bytes=serialized_size(model),
        op_counts=MappingProxyType(dict(Counter(op_key(n) for n in model.graph.node))),
        node_macs=MappingProxyType(resolved),
        macs_by_op=MappingProxyType(dict(by_op)),
        input_shapes=MappingProxyType(pinned),
        unresolved=tuple(k for k, v in macs.items() if v is None),
        shape_source=source,
    )


def macs_kept(before: ModelStats, after: ModelStats) -> float:
    """Fraction of MACs the pruned model keeps (1.0 if the original has none)."""
    return after.macs / before.macs if before.macs else 1.0
