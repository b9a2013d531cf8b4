"""Structural checks of a loaded model that ONNX Runtime would otherwise be the first to fail on.

`io.load_model` runs them on every file it reads, so every command (also `check-trt`, which does
not need ONNX Runtime) refuses a broken model with one line naming the tensor or node: tensor data
whose length does not match its dims, negative dims, a non-finite Gemm alpha/beta, a tensor read but
never defined, a tensor defined twice, a cycle.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import onnx
from onnx import AttributeProto, TensorProto, helper

from onnxprune.graph.view import subgraph_captures, subgraphs

# Element types stored several to a byte (raw_data) or to one int32_data entry.
_PACKED: dict[int, int] = {getattr(TensorProto, n): per
                           for n, per in (("INT4", 2), ("UINT4", 2), ("FLOAT4E2M1", 2), ("INT2", 4), ("UINT2", 4))
                           if hasattr(TensorProto, n)}
# The typed field holding each element type's values, and values per element (complex: 2);
# every other type lives in int32_data, one value per element.
_FIELDS: dict[int, tuple[str, int]] = {
    TensorProto.FLOAT: ("float_data", 1), TensorProto.COMPLEX64: ("float_data", 2),
    TensorProto.DOUBLE: ("double_data", 1), TensorProto.COMPLEX128: ("double_data", 2),
    TensorProto.INT64: ("int64_data", 1), TensorProto.UINT32: ("uint64_data", 1),
    TensorProto.UINT64: ("uint64_data", 1), TensorProto.STRING: ("string_data", 1)}


def all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for g in subgraphs(node):
            yield from all_nodes(g)


def all_tensors(graph: onnx.GraphProto) -> Iterator[tuple[str, TensorProto]]:
    """(what, tensor) for every initializer and tensor attribute (a Constant's value), subgraphs included."""
    for t in graph.initializer:
        yield f"initializer {t.name!r}", t
    for node in graph.node:
        for a in node.attribute:
            what = f"node {node.name or node.op_type!r} ({node.op_type}) attribute {a.name!r}"
            if a.type == AttributeProto.TENSOR:
                yield what, a.t
            elif a.type == AttributeProto.TENSORS:
                yield from ((what, t) for t in a.tensors)
        for g in subgraphs(node):
            yield from all_tensors(g)


def raw_bytes(t: TensorProto) -> int | None:
    """The bytes `t`'s dims and element type need as raw data (None: strings or an unknown type)."""
    if t.data_type in (TensorProto.STRING, TensorProto.UNDEFINED):
        return None
    n = math.prod(int(d) for d in t.dims)
    per = _PACKED.get(t.data_type)
    try:
        return -(-n // per) if per else n * helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    except (KeyError, ValueError):
        return None


def tensor_problem(t: TensorProto) -> str | None:
    """Why ONNX Runtime would refuse this tensor's data, or None. External data is not read here."""
    dims = [int(d) for d in t.dims]
    if any(d < 0 for d in dims):
        return f"has a negative dimension {dims}"
    if t.data_location == TensorProto.EXTERNAL or t.data_type == TensorProto.UNDEFINED:
        return None
    n = math.prod(dims)
    per = _PACKED.get(t.data_type)
    if t.HasField("raw_data"):
        want = raw_bytes(t)
        if want is None:
            return None  # strings, or an element type this onnx does not know: left to the runtime
        got = len(t.raw_data)
        return None if got == want else f"holds {got} bytes of raw_data, its dims {dims} need {want}"
    field, per_element = _FIELDS.get(t.data_type, ("int32_data", 1))
    want = -(-n // per) if per else n * per_element
    got = len(getattr(t, field))
    return None if got == want else f"holds {got} values, its dims {dims} need {want}"


def _gemm_problem(node: onnx.NodeProto) -> str | None:
    for a in node.attribute:
        if a.name in ("alpha", "beta") and a.type == AttributeProto.FLOAT and not math.isfinite(a.f):
            return f"node {node.name or 'Gemm'!r} (Gemm): {a.name} is {a.f}; it must be a finite number"
    return None


def _graph_problem(graph: onnx.GraphProto, outer: frozenset[str]) -> str | None:
    """A tensor defined twice, read but never defined, or a cycle; subgraphs see the enclosing scope."""
    own = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    producer: dict[str, int] = {}
    for i, node in enumerate(graph.node):
        for o in node.output:
            if not o:
                continue
            if o in producer or o in own:
                first = "a graph input or initializer" if o in own else f"node {graph.node[producer[o]].name!r}"
                return f"tensor {o!r} is defined twice: by {first} and by node {node.name!r}"
            producer[o] = i
    scope = outer | own | producer.keys()
    uses: list[set[str]] = []
    for node in graph.node:
        for g in subgraphs(node):
            problem = _graph_problem(g, frozenset(scope))
            if problem is not None:
                return problem
        reads = {x for x in node.input if x} | subgraph_captures(node)
        missing = sorted(reads - scope)
        if missing:
            return f"node {node.name or node.op_type!r} reads {missing[0]!r}, which no node, input or initializer defines"
        uses.append(reads)
    missing = [o.name for o in graph.output if o.name not in scope]
    if missing:
        return f"graph output {missing[0]!r} is not defined by any node, input or initializer"
    return _cycle_problem(graph, [{producer[x] for x in reads if x in producer} for reads in uses])


def _cycle_problem(graph: onnx.GraphProto, deps: list[set[int]]) -> str | None:
    """Kahn's algorithm on node dependencies (node order itself is free: ONNX Runtime sorts nodes)."""
    users: list[list[int]] = [[] for _ in graph.node]
    for i, d in enumerate(deps):
        for j in d:
            users[j].append(i)
    waiting = [len(d) for d in deps]
    ready = [i for i, w in enumerate(waiting) if w == 0]
    while ready:
        for u in users[ready.pop()]:
            waiting[u] -= 1
            if waiting[u] == 0:
                ready.append(u)
    stuck = next((n for n, w in zip(graph.node, waiting, strict=True) if w), None)
    return None if stuck is None else f"the graph has a cycle through node {stuck.name or stuck.op_type!r}"


def model_problem(model: onnx.ModelProto) -> str | None:
    """The first structural defect of `model`, as one line, or None."""
    for what, t in all_tensors(model.graph):
        problem = tensor_problem(t)
        if problem is not None:
            return f"{what} {problem}"
    for node in all_nodes(model.graph):
        if node.op_type == "Gemm" and node.domain in ("", "ai.onnx"):
            problem = _gemm_problem(node)
            if problem is not None:
                return problem
    return _graph_problem(model.graph, frozenset())
