"""Ops that read a tensor's shape, and the integer arithmetic exporters build on those reads.

Normalisation folds the dims it can prove static into constants. A `Shape` node left over reads a
dynamic dim (batch, sequence: harmless), or a channel axis whose size ONNX inference could not prove
(a head count behind a Reshape with -1). Such a read does not block by itself: every element of the
integer tensors computed from it carries a `DimRef` (the channel axis it counts, times a constant
factor), moved by `carry_dims` through Gather/Slice/Concat/Squeeze/Unsqueeze/Cast/Reshape,
multiplied by constants or by other channel counts (tf2onnx's ReduceProd of heads and head_dim).
Where it ends decides:

- a Reshape target entry for a channel axis with the same positions (or a constant multiple of them,
  as a GQA repeat makes, or their product with axes that never shrink): the pruned model reads the
  pruned size and reshapes correctly at every input size, nothing to rewrite (rules/reshape.py
  checks this after the walk);
- an Expand target entry for a channel axis: the rule makes those entries 1 (rules/reshape.py);
- anywhere else (a scale sqrt(head_dim), the size of another axis, Range, a graph output): the
  model's computation would change with the channel count, so those channels are blocked, unless
  the axis can never shrink (head_dim when whole heads go, the head axis when head_dim goes).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from onnxprune.graph.context import DimRef, RuleContext
from onnxprune.graph.rules.registry import register
from onnxprune.graph.tracks import track_at

# Ops that move the elements of an integer tensor without changing them (the data input, input 0).
MOVES = ("Cast", "Identity", "Squeeze", "Unsqueeze", "Reshape", "Flatten")
# Ops whose result depends on a channel count but is not a count itself (Where(Equal(x, -1), 1, x)
# is how the TorchScript exporter writes an Expand shape): the entries stay, marked inexact.
TAINTS = ("Equal", "Not", "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "And", "Or", "Where", "Add", "Sub",
          "Max", "Min", "Abs", "Neg")
# (op, input) pairs whose rule reads the entries itself: Reshape and Expand targets.
RULE_READS = {("Reshape", 1), ("Expand", 1)}
MAX_ELEMENTS = 64  # shape vectors; a channel count spread over a larger tensor is data


@register("Shape")
def shape(ctx: RuleContext) -> None:
    s = ctx.shape(ctx.input(0))
    layout = ctx.in_layout(0)
    if s is None:
        ctx.block(layout, "Shape of a tensor of unknown rank")
        return
    rank = len(s)
    start = _bound(ctx.int_attr("start", 0), rank)
    end_attr = ctx.attr("end", None)
    end = rank if end_attr is None else _bound(int(end_attr), rank)  # type: ignore[call-overload]
    entries: list[DimRef | None] = []
    for a in range(start, end):
        t = track_at(layout, a)
        entries.append(None if t is None else DimRef(t, t.axes.index(a)))
    ctx.set_dims(ctx.node.output[0], entries)


@register("Size")
def size(ctx: RuleContext) -> None:
    ctx.block_inputs("the channel count is read at run time (Size)")


def _bound(v: int, rank: int) -> int:
    """A Shape start/end attribute as a position in 0..rank (negative counts from the end)."""
    return max(0, min(v + rank if v < 0 else v, rank))


def carry_dims(ctx: RuleContext, *, rule_runs: bool) -> None:
    """Move the DimRefs of this node's inputs to its output, or block their channels (module doc).
    `rule_runs`: the node's own rule runs and reads its Reshape/Expand target itself."""
    node = ctx.node
    op = node.op_type
    ins = [ctx.dims(x) for x in node.input]
    free = [i for i, e in enumerate(ins) if e is not None and not (rule_runs and (op, i) in RULE_READS)]
    if not free:
        return
    out = _carried(ctx, ins, free)
    if out is None:
        for i in free:
            ctx.escape(ins[i], "computed with")
        return
    ctx.set_dims(node.output[0], out)


def _elements(ctx: RuleContext, name: str) -> int | None:
    shape = ctx.shape(name)
    return None if shape is None else int(np.prod(shape, dtype=np.int64))


def _carried(ctx: RuleContext, ins: list[list[DimRef | None] | None], free: list[int]) -> list[DimRef | None] | None:
    """The output's entries, or None when the value leaves shape arithmetic."""
    node, op = ctx.node, ctx.node.op_type
    n_out = _elements(ctx, node.output[0])
    if n_out is None or n_out > MAX_ELEMENTS or len(node.output) != 1:
        return None
    entries = ins[free[0]]
    assert entries is not None
    if op in MOVES:
        return list(entries) if free == [0] and len(entries) == n_out else None
    if op == "Gather" and free == [0] and ctx.is_const(ctx.input(1)) and ctx.int_attr("axis", 0) == 0:
        idx = ctx.const(ctx.input(1)).astype(np.int64).reshape(-1)
        return [entries[int(i)] for i in idx] if len(ctx.shape(ctx.input(0)) or ()) == 1 else None
    if op == "Slice" and free == [0]:
        picked = _sliced(ctx, len(entries))
        return None if picked is None else [entries[i] for i in picked]
    if op == "Concat" and ctx.int_attr("axis", 0) in (0, -1):
        out: list[DimRef | None] = []
        for x, e in zip(node.input, ins, strict=True):
            n = _elements(ctx, x)
            if n is None:
                return None
            out.extend(e if e is not None else [None] * n)
        return out if len(out) == n_out else None
    if op == "Mul" and len(free) == 1 and len(node.input) == 2 and ctx.is_const(ctx.input(1 - free[0])):
        factor = ctx.const(ctx.input(1 - free[0]))
        if factor.dtype.kind not in "iu" or factor.size != 1 or int(factor.reshape(-1)[0]) < 1:
            return None
        k = int(factor.reshape(-1)[0])
        return [None if e is None else dataclasses.replace(e, mult=e.mult * k) for e in entries]
    if op == "Mul" and free == [0, 1] and n_out == 1:
        return _product([*entries, *(ins[1] or [])])
    if op == "ReduceProd" and free == [0] and n_out == 1:  # a 1-D vector to its product
        return _product(entries)
    if op in TAINTS and all(i in free or ctx.is_const(x) or not x for i, x in enumerate(node.input)):
        return _tainted(ins, n_out)
    return None


def _product(entries: list[DimRef | None]) -> list[DimRef | None] | None:
    """One entry: the product of channel counts (heads times head_dim); None if a factor is another dim."""
    if not entries or any(e is None for e in entries):
        return None
    first, *rest = [e for e in entries if e is not None]
    times = first.times + tuple(a for e in rest for a in e.axes())
    return [dataclasses.replace(first, mult=math.prod(e.mult for e in (first, *rest)), times=times,
                                exact=all(e.exact for e in (first, *rest)))]


def _sliced(ctx: RuleContext, n: int) -> list[int] | None:
    names = [ctx.input(i) for i in range(1, 5)]
    if any(x and not ctx.is_const(x) for x in names) or not names[0] or not names[1]:
        return None
    starts, ends = ctx.const(names[0]).reshape(-1), ctx.const(names[1]).reshape(-1)
    axes = ctx.const(names[2]).reshape(-1) if names[2] else np.zeros(1, dtype=np.int64)
    steps = ctx.const(names[3]).reshape(-1) if names[3] else np.ones(1, dtype=np.int64)
    if starts.size != 1 or int(axes[0]) not in (0, -1) or int(steps[0]) == 0:
        return None
    return list(range(n))[slice(int(starts[0]), int(ends[0]), int(steps[0]))]


def _tainted(ins: list[list[DimRef | None] | None], n_out: int) -> list[DimRef | None] | None:
    """Elementwise (one-element inputs broadcast): any DimRef at a position marks it, inexact."""
    out: list[DimRef | None] = [None] * n_out
    for entries in ins:
        if entries is None:
            continue
        if len(entries) not in (1, n_out):
            return None
        for k in range(n_out):
            e = entries[0 if len(entries) == 1 else k]
            if e is not None and out[k] is None:
                out[k] = dataclasses.replace(e, exact=False)
    return out
