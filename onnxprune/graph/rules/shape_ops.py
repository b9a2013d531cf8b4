"""Ops that read a tensor's shape. Normalisation folds static dims into constants; a Shape node
left over reads a dynamic dim. It is harmless unless it also reads a channel axis."""

from __future__ import annotations

import numpy as np

from onnxprune.graph.analysis import RuleContext
from onnxprune.graph.rules.registry import register


def _bound(v: int, rank: int) -> int:
    """A Shape start/end attribute as a position in 0..rank (negative counts from the end)."""
    return max(0, min(v + rank if v < 0 else v, rank))


def _selected_axes(ctx: RuleContext, rank: int) -> set[int]:
    """Axes whose sizes leave this Shape node: all of [start:end), or the ones Gathers pick out of it."""
    start = _bound(ctx.int_attr("start", 0), rank)
    end_attr = ctx.attr("end", None)
    end = rank if end_attr is None else _bound(int(end_attr), rank)  # type: ignore[call-overload]
    base = list(range(rank))[start:end]
    consumers = ctx.view.consumers.get(ctx.node.output[0], [])
    selected: set[int] = set()
    for node, _ in consumers:
        if node.op_type == "Gather" and ctx.is_const(node.input[1]):
            idx = ctx.const(node.input[1]).astype(np.int64).reshape(-1)
            selected.update(base[int(i)] for i in idx)
        else:
            return set(base)
    return selected


@register("Shape")
def shape(ctx: RuleContext) -> None:
    s = ctx.shape(ctx.input(0))
    layout = ctx.in_layout(0)
    if s is None:
        ctx.block(layout, "Shape of a tensor of unknown rank")
        return
    selected = _selected_axes(ctx, len(s))
    for t in layout:
        if set(t.axes) & selected:
            ctx.block(t, "the channel count is read at run time (Shape)")


@register("Size")
def size(ctx: RuleContext) -> None:
    ctx.block_inputs("the channel count is read at run time (Size)")
