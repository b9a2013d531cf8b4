"""Residual blocks: the depth unit ("block"). A block is the branch f of an `Add(x, f(x))` whose
other operand is the branch's own input x (an identity shortcut), so that dropping f leaves x:

    x ──┬── f: interior nodes ── y ──┐
        └────────────────────────── Add ── out        (either operand order)

The interior is every node that depends on x and feeds y. A block is removable only when its
interior holds a layer with a constant weight (Conv/ConvTranspose/Gemm/MatMul: a learned branch,
not `x + 0.044715·x³` inside a GELU), no interior tensor is read outside the interior (or is a graph
output, or captured by a subgraph), no interior node carries a subgraph, and x, y and out have the
same shape where shapes are known. Inputs the branch reads from outside (an attention mask, rotary
tables) are fine: they stay for the other readers, or go with the branch when it was the only one.

A projection shortcut `Add(conv(x), f(x))` is not a block: neither operand is the other's input.
Post-norm transformer layers `LN(x + Attn(x))` give the branch before the Add; pre-norm layers
`x + Attn(LN(x))` and `x + MLP(LN(x))` give two blocks each (the norm belongs to the branch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import onnx

from onnxprune.graph.view import GraphView, has_subgraph

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
CONV_OPS = ("Conv", "ConvTranspose")

ShapeOf = Callable[[str], "tuple[int, ...] | None"]


@dataclass(frozen=True)
class Block:
    """One removable residual branch, named by its Add node (the name plans record)."""

    name: str  # the Add node
    fork: str  # x: the block's input, the Add's identity operand
    branch: str  # y = f(x): the Add's other operand
    output: str  # the Add's output
    nodes: tuple[str, ...]  # interior nodes, in graph order
    layers: tuple[str, ...]  # interior nodes with a constant weight
    channel_axis: int  # 1 for a conv branch (NCHW), -1 otherwise (the hidden axis of [.., H])

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "input": self.fork, "branch": self.branch, "output": self.output,
                "nodes": len(self.nodes), "layers": list(self.layers)}

    def overlaps(self, other: Block) -> bool:
        """The two cannot both be dropped: one lies inside the other's branch."""
        mine, theirs = {*self.nodes, self.name}, {*other.nodes, other.name}
        return bool(set(self.nodes) & theirs or set(other.nodes) & mine)


def _weighted(view: GraphView, node: onnx.NodeProto) -> bool:
    return node.op_type in WEIGHTED_OPS and len(node.input) > 1 and view.is_const(node.input[1])


def _interior(view: GraphView, order: dict[str, int], x: str, y: str) -> list[onnx.NodeProto] | None:
    """Nodes that depend on x and feed y (None when y does not depend on x)."""
    start = view.producer.get(y)
    if start is None:
        return None
    floor = order[view.producer[x][0].name] if x in view.producer else -1
    # Walk back from y's producer; nodes above x's producer cannot depend on x (graph order is topological).
    seen: dict[str, onnx.NodeProto] = {}
    feeds_from_x: dict[str, bool] = {}
    stack = [start[0]]
    while stack:
        node = stack.pop()
        if node.name in seen:
            continue
        seen[node.name] = node
        for t in node.input:
            p = view.producer.get(t) if t and t != x else None
            if p is not None and order[p[0].name] > floor and p[0].name not in seen:
                stack.append(p[0])
    for node in sorted(seen.values(), key=lambda n: order[n.name]):  # forward: which of them depend on x
        feeds_from_x[node.name] = any(t == x or (t in view.producer and feeds_from_x.get(view.producer[t][0].name,
                                                                                          False))
                                      for t in node.input if t)
    if not feeds_from_x.get(start[0].name):
        return None
    return [n for n in sorted(seen.values(), key=lambda n: order[n.name]) if feeds_from_x[n.name]]


def _why_not(view: GraphView, add: onnx.NodeProto, inner: list[onnx.NodeProto], x: str, y: str,
             shape: ShapeOf) -> str | None:
    names = {n.name for n in inner}
    if not any(_weighted(view, n) for n in inner):
        return "no weighted layer in the branch"
    for n in inner:
        if has_subgraph(n):
            return f"{n.name} holds a subgraph"
        for o in n.output:
            if not o:
                continue
            if o in view.graph_outputs or o in view.captured:
                return f"{o} is a graph output"
            readers = [c.name for c, _ in view.consumers.get(o, [])]
            if any(r not in names and not (r == add.name and o == y) for r in readers):
                return f"{o} is read outside the branch"
    shapes = [shape(t) for t in (x, y, add.output[0])]
    if all(s is not None for s in shapes) and len(set(shapes)) != 1:
        return "the branch does not keep the input's shape"
    return None


def find_blocks(model: onnx.ModelProto, *, shape: ShapeOf | None = None,
                view: GraphView | None = None) -> list[Block]:
    """Every removable residual block of `model`'s main graph, in graph order. `shape`: a tensor's
    static shape where known (the analysis' shape probe); without it shapes are not compared."""
    view = view or GraphView(model)
    shape_of: ShapeOf = shape or (lambda _t: None)
    order = {n.name: i for i, n in enumerate(model.graph.node)}
    out: list[Block] = []
    for add in model.graph.node:
        if add.op_type != "Add" or add.domain not in ("", "ai.onnx") or len(add.input) != 2 or not add.name:
            continue
        for i in (0, 1):
            x, y = add.input[1 - i], add.input[i]
            if x == y or view.is_const(x) or view.is_const(y):
                continue
            inner = _interior(view, order, x, y)
            if inner is None or _why_not(view, add, inner, x, y, shape_of) is not None:
                continue
            axis = 1 if any(n.op_type in CONV_OPS for n in inner) else -1
            out.append(Block(add.name, x, y, add.output[0], tuple(n.name for n in inner),
                             tuple(n.name for n in inner if _weighted(view, n)), axis))
            break
    return out


def compatible(blocks: Sequence[Block]) -> bool:
    """No two of `blocks` overlap (all can be dropped together)."""
    return not any(a.overlaps(b) for k, a in enumerate(blocks) for b in blocks[k + 1:])
