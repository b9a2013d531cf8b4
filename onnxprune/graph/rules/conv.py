"""Conv and ConvTranspose of any rank, plain, grouped and depthwise.

- group == 1: the output channels are a new source; the input channels are consumed
  (the weight's reduction axis is sliced, and the oracle masks the input here).
- depthwise (group == C_in, C_out = m * C_in; Conv or ConvTranspose): channel c maps to outputs
  c*m .. c*m+m-1, so the ids pass through (repeated m times) and the group count follows the kept channels.
- grouped (1 < group < C_in): channels are removed at the same index in every group, so the
  group structure survives; both sides are coupled across groups. With `analyse(grouped="whole")`
  (Conv only) whole groups leave instead: group k's input channels and output channels are one
  slot, the channels per group stay, and the group count follows the kept groups. On ONNX Runtime's
  CPU a grouped conv's time falls linearly with its group count but only about as the square root
  of its MACs when the channels per group shrink (benchmarks/README.md), and it runs in the blocked
  NCHWc kernels only while its channels per group are multiples of the block (8 or 16).
  `grouped="auto"` (the default) takes whole groups where a group holds fewer than
  AUTO_WHOLE_BELOW channels on either side (ResNeXt 32x4d's early stages, RegNet): such a group
  cannot lose a block of channels and stay in NCHWc, so only whole groups buy time; wider groups
  lose the same index in every group, at a finer grain. In auto mode a grouped conv falls back to
  the index rule where its input channels cannot be removed (whole mode blocks it), and where its
  whole groups end up coupled into one slot (a channel shuffle between grouped convs; analyse
  runs again).
"""

from __future__ import annotations

import numpy as np
import onnx

from onnxprune.graph.apply import ApplyContext
from onnxprune.graph.context import ROLE_PARAM, ROLE_WEIGHT_IN, ROLE_WEIGHT_OUT, RuleContext
from onnxprune.graph.rules.registry import register
from onnxprune.graph.tracks import Track, track_at

AUTO_WHOLE_BELOW = 16  # grouped="auto": whole groups when a group has fewer channels than this


def _set_group(node: onnx.NodeProto, value: int) -> None:
    for a in node.attribute:
        if a.name == "group":
            a.i = value
            return
    node.attribute.append(onnx.helper.make_attribute("group", value))


@register("Conv", "ConvTranspose", source=True)
def conv(ctx: RuleContext) -> None:
    x, w, b = ctx.input(0), ctx.input(1), ctx.input(2)
    transpose = ctx.node.op_type == "ConvTranspose"
    x_layout = ctx.layout(x)
    for t in x_layout:
        if t.axes != (1,):
            ctx.block(t, "tracks on spatial or batch axes reach a convolution")
    xt = track_at(x_layout, 1)
    if xt is not None and not xt.is_single:
        xt = None
    if not ctx.is_const(w) or (b and not ctx.is_const(b)):
        if xt is not None:
            ctx.block(xt, "convolution weight is computed at run time")
        return
    wshape = ctx.shape(w)
    assert wshape is not None
    group = ctx.int_attr("group", 1)
    cin = wshape[0] if transpose else wshape[1] * group
    cout = wshape[1] * group if transpose else wshape[0]
    out = ctx.node.output[0]
    out_axis, in_axis = (1, 0) if transpose else (0, 1)
    if group > 1 and group == cin:
        _depthwise(ctx, xt, cin, cout, out, transpose)
        return
    if group > 1 and not transpose and _takes_whole_groups(ctx, xt, cin // group, cout // group):
        _whole_groups(ctx, xt, cout, group, out)
        return
    if group > 1:
        _grouped(ctx, xt, cin, cout, group, transpose, out)
        return
    out_ids = ctx.new_source(cout, out)
    ctx.member(w, Track((out_axis,), out_ids), ROLE_WEIGHT_OUT)
    if b:
        ctx.member(b, Track((0,), out_ids), ROLE_PARAM)
    ctx.set_layout(out, [Track((1,), out_ids)])
    if xt is not None:
        ctx.member(w, Track((in_axis,), xt.ids), ROLE_WEIGHT_IN)
        ctx.consume(0, xt)


def _takes_whole_groups(ctx: RuleContext, xt: Track | None, cin_per_group: int, cout_per_group: int) -> bool:
    """Whether a grouped (not depthwise) Conv loses whole groups (module docstring)."""
    if ctx.state.grouped == "auto":
        return (xt is not None and min(cin_per_group, cout_per_group) < AUTO_WHOLE_BELOW
                and ctx.node.name not in ctx.state.index_convs)
    return ctx.state.grouped == "whole"


def _depthwise(ctx: RuleContext, xt: Track | None, cin: int, cout: int, out: str, transpose: bool) -> None:
    w, b = ctx.input(1), ctx.input(2)
    if xt is None:
        return  # its channels are the input's, which nothing here can remove
    in_ids = xt.ids
    ids = np.repeat(in_ids, cout // cin)
    # Conv weights are (C_out, 1, ...); ConvTranspose weights are (C_in, m, ...).
    ctx.member(w, Track((0,), in_ids if transpose else ids), ROLE_WEIGHT_OUT)
    if b:
        ctx.member(b, Track((0,), ids), ROLE_PARAM)
    ctx.set_layout(out, [Track((1,), ids)])

    def set_groups(actx: ApplyContext, node: onnx.NodeProto) -> None:
        _set_group(node, actx.kept_count(in_ids))

    ctx.hook(set_groups)


def _grouped(ctx: RuleContext, xt: Track | None, cin: int, cout: int, group: int, transpose: bool,
             out: str) -> None:
    w, b = ctx.input(1), ctx.input(2)
    out_ids = ctx.new_source(cout, out)
    # Remove the same index in every group: couple ids across groups on both sides.
    out_grid = Track((0, 1), out_ids.reshape(group, cout // group))
    ctx.union_along(out_grid, 1)
    out_axis, in_axis = (1, 0) if transpose else (0, 1)
    if transpose:
        ctx.member(w, Track((out_axis,), out_ids.reshape(group, -1)[0]), ROLE_WEIGHT_OUT)
    else:
        ctx.member(w, Track((out_axis,), out_ids), ROLE_WEIGHT_OUT)
    if b:
        ctx.member(b, Track((0,), out_ids), ROLE_PARAM)
    ctx.set_layout(out, [Track((1,), out_ids)])
    if xt is None:
        return
    in_grid = Track((0, 1), xt.ids.reshape(group, cin // group))
    ctx.union_along(in_grid, 1)
    if transpose:
        ctx.member(w, Track((in_axis,), xt.ids), ROLE_WEIGHT_IN)
    else:
        ctx.member(w, Track((in_axis,), xt.ids.reshape(group, -1)[0]), ROLE_WEIGHT_IN)
    ctx.consume(0, xt)


def _whole_groups(ctx: RuleContext, xt: Track | None, cout: int, group: int, out: str) -> None:
    """Conv only: group k's input and output channels leave together; the weight keeps its
    per-group input axis (axis 1), and the group attribute becomes the number of kept groups."""
    w, b = ctx.input(1), ctx.input(2)
    out_ids = ctx.new_source(cout, out)
    out_rows = out_ids.reshape(group, cout // group)
    ctx.union_along(Track((0, 1), out_rows), 0)  # a group's output channels go together
    ctx.member(w, Track((0,), out_ids), ROLE_WEIGHT_OUT)
    if b:
        ctx.member(b, Track((0,), out_ids), ROLE_PARAM)
    ctx.set_layout(out, [Track((1,), out_ids)])
    if xt is None:
        ctx.block(out_ids, "whole-group removal needs the grouped conv's input channels to be removable too")
        return
    in_rows = xt.ids.reshape(group, -1)
    ctx.union_along(Track((0, 1), in_rows), 0)
    ctx.union(in_rows[:, 0], out_rows[:, 0], reason="a conv group's inputs and outputs leave together")
    ctx.consume(0, xt)
    ctx.state.whole_convs[ctx.node.name] = out_ids
    per_group = cout // group

    def set_groups(actx: ApplyContext, node: onnx.NodeProto) -> None:
        _set_group(node, actx.kept_count(out_ids) // per_group)

    ctx.hook(set_groups)
