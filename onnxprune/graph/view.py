"""A read-only index over an ONNX graph: producers, consumers, constants, shapes, opset."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from functools import cached_property

import numpy as np
import onnx

from onnxprune.io.external import mapped, tensor_array

SUBGRAPH_ATTR_TYPES = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)


def node_attr(node: onnx.NodeProto, name: str, default: object = None) -> object:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def has_subgraph(node: onnx.NodeProto) -> bool:
    return any(a.type in SUBGRAPH_ATTR_TYPES for a in node.attribute)


def subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    """The bodies of an If/Loop/Scan (every GRAPH or GRAPHS attribute)."""
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            yield a.g
        elif a.type == onnx.AttributeProto.GRAPHS:
            yield from a.graphs


def subgraph_captures(node: onnx.NodeProto) -> set[str]:
    """Names a node's subgraphs read from the enclosing scope (implicit inputs)."""
    names: set[str] = set()
    for g in subgraphs(node):
        local = {i.name for i in g.input} | {t.name for t in g.initializer}
        for n in g.node:
            local.update(n.output)
        for n in g.node:
            names.update(x for x in n.input if x and x not in local)
            if has_subgraph(n):
                names.update(x for x in subgraph_captures(n) if x not in local)
        names.update(o.name for o in g.output if o.name not in local)
    return names


class GraphView:
    """Indexes a model's main graph. Does not copy or modify the model."""

    def __init__(self, model: onnx.ModelProto, *, shapes: dict[str, tuple[int, ...]] | None = None,
                 dtypes: dict[str, np.dtype] | None = None) -> None:
        self.model = model
        self.graph = model.graph
        self.shapes: dict[str, tuple[int, ...]] = dict(shapes or {})
        self.dtypes: dict[str, np.dtype] = dict(dtypes or {})
        self._arrays: dict[str, np.ndarray] = {}

    @cached_property
    def opset(self) -> int:
        for o in self.model.opset_import:
            if o.domain in ("", "ai.onnx"):
                return int(o.version)
        return 1

    def opset_of(self, domain: str) -> int:
        """The model's opset version of `domain` ("" or "ai.onnx": the default domain; 0 if not imported)."""
        if domain in ("", "ai.onnx"):
            return self.opset
        return next((int(o.version) for o in self.model.opset_import if o.domain == domain), 0)

    @cached_property
    def initializers(self) -> dict[str, onnx.TensorProto]:
        return {t.name: t for t in self.graph.initializer}

    @cached_property
    def producer(self) -> dict[str, tuple[onnx.NodeProto, int]]:
        out: dict[str, tuple[onnx.NodeProto, int]] = {}
        for n in self.graph.node:
            for i, o in enumerate(n.output):
                if o:
                    out[o] = (n, i)
        return out

    @cached_property
    def consumers(self) -> dict[str, list[tuple[onnx.NodeProto, int]]]:
        out: dict[str, list[tuple[onnx.NodeProto, int]]] = defaultdict(list)
        for n in self.graph.node:
            for i, x in enumerate(n.input):
                if x:
                    out[x].append((n, i))
        return out

    @cached_property
    def graph_outputs(self) -> set[str]:
        return {o.name for o in self.graph.output}

    @cached_property
    def graph_inputs(self) -> set[str]:
        return {i.name for i in self.graph.input if i.name not in self.initializers}

    @cached_property
    def captured(self) -> set[str]:
        names: set[str] = set()
        for n in self.graph.node:
            if has_subgraph(n):
                names |= subgraph_captures(n)
        return names

    def is_const(self, name: str) -> bool:
        return name in self.initializers

    def array(self, name: str) -> np.ndarray:
        """An initializer's values; a large one that stays on disk is mapped afresh on each call
        (read-only, not cached: its pages are dropped with the array)."""
        if name in self._arrays:
            return self._arrays[name]
        t = self.initializers[name]
        value = tensor_array(t)
        if not mapped(t):
            self._arrays[name] = value
        return value

    def shape(self, name: str) -> tuple[int, ...] | None:
        if name in self.initializers:
            return tuple(int(d) for d in self.initializers[name].dims)
        return self.shapes.get(name)

