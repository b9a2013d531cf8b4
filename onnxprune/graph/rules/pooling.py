"""Ops that work per channel over spatial positions: pooling, Resize/Upsample, Pad."""

from __future__ import annotations

import numpy as np
import onnx

from onnxprune.graph.apply import ApplyContext
from onnxprune.graph.context import RuleContext
from onnxprune.graph.rules.registry import register
from onnxprune.graph.tracks import Track

POOLS = ("MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "MaxRoiPool")


def _channel_only(ctx: RuleContext, what: str) -> list[Track]:
    kept: list[Track] = []
    for t in ctx.in_layout(0):
        if all(a <= 1 for a in t.axes):
            kept.append(t)
        else:
            ctx.block(t, f"{what} mixes the positions of a channel-carrying axis")
    return kept


@register(*POOLS)
def pool(ctx: RuleContext) -> None:
    kept = _channel_only(ctx, "pooling")
    if len(ctx.node.output) > 1 and ctx.node.output[1]:
        ctx.block(kept, "MaxPool indices depend on the channel count")
        return
    ctx.set_layout(ctx.node.output[0], kept)


@register("Resize", "Upsample")
def resize(ctx: RuleContext) -> None:
    """Per-channel as long as nothing is resized along a tracked axis."""
    layout = ctx.in_layout(0)
    scales, sizes = _resize_params(ctx)
    passed: list[Track] = []
    for t in layout:
        bad = [a for a in t.axes if (scales is not None and scales.size > a and scales[a] != 1.0)]
        if bad:
            ctx.block(t, "Resize scales a channel-carrying axis")
        else:
            passed.append(t)
    if sizes is not None and passed:
        sizes_index = 3 if ctx.node.op_type == "Resize" else -1
        tracked_axes = [(a, t) for t in passed for a in t.axes if t.is_single]

        def rewrite_sizes(actx: ApplyContext, node: onnx.NodeProto) -> None:
            new = actx.const(node.input[sizes_index]).copy()
            for a, t in tracked_axes:
                new[a] = actx.kept_count(t.ids)
            actx.set_input_const(node, sizes_index, new)

        if any(not t.is_single for t in passed):
            ctx.block(passed, "Resize sizes over a multi-axis channel grid")
            return
        ctx.hook(rewrite_sizes)
    ctx.set_layout(ctx.node.output[0], passed)


def _resize_params(ctx: RuleContext) -> tuple[np.ndarray | None, np.ndarray | None]:
    op = ctx.node.op_type
    if op == "Upsample":
        if ctx.opset < 9:
            s = ctx.attr("scales", None)
            return (np.array(s, dtype=np.float32) if s is not None else None), None
        name = ctx.input(1)
        return (ctx.const(name) if ctx.is_const(name) else None), None
    if ctx.opset < 11:
        name = ctx.input(1)
        return (ctx.const(name) if ctx.is_const(name) else None), None
    scales_name, sizes_name = ctx.input(2), ctx.input(3)
    scales = ctx.const(scales_name) if ctx.is_const(scales_name) and ctx.const(scales_name).size else None
    sizes = ctx.const(sizes_name) if ctx.is_const(sizes_name) and ctx.const(sizes_name).size else None
    if scales_name and not ctx.is_const(scales_name) or sizes_name and not ctx.is_const(sizes_name):
        name = scales_name or sizes_name
        ctx.block(ctx.in_layout(0), f"Resize {'scales' if scales_name else 'sizes'} computed at run time ({name})")
    if ctx.attr("axes", None) is not None:
        ctx.block(ctx.in_layout(0), "Resize with an axes attribute")
    return scales, sizes


@register("Pad")
def pad(ctx: RuleContext) -> None:
    shape = ctx.shape(ctx.input(0))
    rank = len(shape) if shape else 0
    if ctx.opset < 11:
        pads = ctx.ints_attr("pads") or ctx.ints_attr("paddings")
    else:
        name = ctx.input(1)
        pads = [int(v) for v in ctx.const(name).reshape(-1)] if ctx.is_const(name) else None
    axes = list(range(rank))
    if ctx.opset >= 18 and ctx.input(3):
        axes_name = ctx.input(3)
        axes = [int(a) % rank for a in ctx.const(axes_name)] if ctx.is_const(axes_name) else []
    if pads is None or len(pads) != 2 * len(axes):
        ctx.block(ctx.in_layout(0), "Pad amounts computed at run time")
        return
    padded = {ax for i, ax in enumerate(axes) if pads[i] != 0 or pads[i + len(axes)] != 0}
    passed: list[Track] = []
    for t in ctx.in_layout(0):
        if padded & set(t.axes):
            ctx.block(t, "Pad adds positions along a channel-carrying axis")
        else:
            passed.append(t)
    ctx.set_layout(ctx.node.output[0], passed)
