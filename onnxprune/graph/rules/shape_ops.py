"""Ops that read a tensor's shape. Normalisation folds static dims into constants; a Shape node
left over reads a dynamic dim. It is harmless unless it also reads a channel axis."""

from __future__ import annotations

import numpy as np

from onnxprune.graph.analysis import RuleContext
from onnxprune.graph.rules.registry import register


def _selected_axes(ctx: RuleContext, rank: int) -> set[int] | None:
    start = ctx.int_attr("start", 0) % (rank + 1) if ctx.attr("start", None) is not None else 0
    end_attr = ctx.attr("end", None)
    end = int(end_attr) % (rank + 1) if end_attr is not None else rank  # type: ignore[call-overload]
    if end_attr is not None and int(end_attr) >= rank:  # type: ignore[call-overload]
        end = rank
    base = list(range(rank))[start:end]
    consumers = ctx.view.consumers.get(ctx.node.output[0], [])
    selected: set[int] = set()
    for node, _ in consumers:
        if node.op_type == "Gather" and ctx.is_const(node.input[1]):
            idx = ctx.const(node.input[1]).astype(np.int64).reshape(-1)
            selected.update(base[int(i)] for i in idx)
        else:
            return None
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
        if selected is None or set(t.axes) & selected:
            ctx.block(t, "the channel count is read at run time (Shape)")


@register("Size")
def size(ctx: RuleContext) -> None:
    ctx.block_inputs("the channel count is read at run time (Size)")
