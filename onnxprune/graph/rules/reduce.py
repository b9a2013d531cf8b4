"""Reductions and axis-mixing ops.

A sum over the channel axis (ReduceSum, ReduceSumSquare, ReduceL1, ReduceL2) is a consumer: a
removed channel contributes exactly what a zeroed one would. A mean, max or product over
channels changes if a channel is removed: blocked. Softmax/ArgMax/TopK/CumSum over a tracked
axis are blocked; over other axes they pass the tracks through.
"""

from __future__ import annotations

from onnxprune.graph.context import RuleContext
from onnxprune.graph.rules.registry import register
from onnxprune.graph.tracks import Track

LINEAR_SUMS = ("ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2")
NONLINEAR = ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceLogSum", "ReduceLogSumExp")
AXES_AS_INPUT_SINCE = {"ReduceSum": 13}


def _reduce_axes(ctx: RuleContext, rank: int) -> set[int] | None:
    since = AXES_AS_INPUT_SINCE.get(ctx.node.op_type, 18)
    if ctx.opset >= since:
        name = ctx.input(1)
        if name and not ctx.is_const(name):
            return None
        axes = [int(v) for v in ctx.const(name)] if name else []
        if not axes and ctx.int_attr("noop_with_empty_axes", 0):
            return set()
    else:
        axes = ctx.ints_attr("axes") or []
    return {a % rank for a in axes} if axes else set(range(rank))


@register(*LINEAR_SUMS, *NONLINEAR)
def reduce(ctx: RuleContext) -> None:
    shape = ctx.shape(ctx.input(0))
    layout = ctx.in_layout(0)
    if shape is None:
        ctx.block(layout, "reduction of unknown rank")
        return
    axes = _reduce_axes(ctx, len(shape))
    if axes is None:
        ctx.block(layout, "reduction axes computed at run time")
        return
    keepdims = ctx.int_attr("keepdims", 1)
    mapping: dict[int, int] = {}
    k = 0
    for i in range(len(shape)):
        if keepdims or i not in axes:
            mapping[i] = k
            k += 1
    out: list[Track] = []
    for t in layout:
        if not set(t.axes) & axes:
            out.append(t.shifted(mapping))
        elif ctx.node.op_type in LINEAR_SUMS and set(t.axes) <= axes:
            ctx.consume(0, t)
        elif ctx.node.op_type == "ReduceMean" and keepdims and t.is_single and t.axes[0] == len(shape) - 1:
            # A LayerNorm written out by the exporter (mean, variance over the last axis).
            ctx.approximate(t, "ReduceMean over channels (decomposed LayerNorm) changes when one is removed",
                            kind="layernorm")
        else:
            ctx.block(t, f"{ctx.node.op_type} over channels changes when one is removed")
    ctx.set_layout(ctx.node.output[0], out)


def _mix_axis(ctx: RuleContext, mixed: set[int] | None, what: str) -> None:
    layout = ctx.in_layout(0)
    passed = []
    for t in layout:
        if mixed is None or set(t.axes) & mixed:
            ctx.block(t, f"{what} mixes the channels of this axis")
        else:
            passed.append(t)
    for out in ctx.node.output:
        ctx.set_layout(out, passed)


@register("Softmax", "LogSoftmax", "Hardmax", since=13)
def softmax13(ctx: RuleContext) -> None:
    shape = ctx.shape(ctx.input(0))
    if shape is None:
        _mix_axis(ctx, None, ctx.node.op_type)
        return
    _mix_axis(ctx, {ctx.int_attr("axis", -1) % len(shape)}, ctx.node.op_type)


@register("Softmax", "LogSoftmax", "Hardmax", until=12)
def softmax_legacy(ctx: RuleContext) -> None:
    """Before opset 13 the input is coerced to 2-D at `axis`: every axis from there on is mixed."""
    shape = ctx.shape(ctx.input(0))
    if shape is None:
        _mix_axis(ctx, None, ctx.node.op_type)
        return
    axis = ctx.int_attr("axis", 1) % len(shape)
    _mix_axis(ctx, set(range(axis, len(shape))), ctx.node.op_type)


@register("ArgMax", "ArgMin", "CumSum", "TopK")
def arg_ops(ctx: RuleContext) -> None:
    shape = ctx.shape(ctx.input(0))
    if shape is None:
        _mix_axis(ctx, None, ctx.node.op_type)
        return
    default = -1 if ctx.node.op_type == "TopK" else 0
    if ctx.node.op_type == "CumSum":
        name = ctx.input(1)
        if not ctx.is_const(name):
            _mix_axis(ctx, None, "CumSum")
            return
        axis = int(ctx.const(name).reshape(-1)[0])
    else:
        axis = ctx.int_attr("axis", default)
    axis %= len(shape)
    if ctx.node.op_type in ("ArgMax", "ArgMin") and not ctx.int_attr("keepdims", 1):
        layout = ctx.in_layout(0)
        if any(axis in t.axes for t in layout):
            _mix_axis(ctx, {axis}, ctx.node.op_type)
            return
        ctx.set_layout(ctx.node.output[0], [t.shifted({a: a - (a > axis) for a in t.axes}) for t in layout])
        return
    _mix_axis(ctx, {axis}, ctx.node.op_type)
