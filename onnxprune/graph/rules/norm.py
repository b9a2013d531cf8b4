"""Normalisation layers.

BatchNormalization and InstanceNormalization work channel by channel: tracks on axis 1 pass
through and the per-channel parameters are sliced. LayerNormalization over the channel axis,
GroupNormalization and LRN mix channels, so removing one changes the others: blocked (exactness
cannot be claimed) unless the user opts in to approximate LayerNorm pruning.
"""

from __future__ import annotations

from onnxprune.graph.analysis import ROLE_NORM_SCALE, ROLE_PARAM, RuleContext
from onnxprune.graph.rules.registry import register
from onnxprune.graph.tracks import Track


def _per_channel(ctx: RuleContext, params: list[tuple[int, str]], *, spatial_ok: bool) -> None:
    layout = ctx.in_layout(0)
    passed: list[Track] = []
    for t in layout:
        if t.axes == (1,):
            consts = [ctx.input(i) for i, _ in params if ctx.input(i)]
            if not all(ctx.is_const(c) for c in consts):
                ctx.block(t, "normalisation parameters are computed at run time")
                continue
            for i, role in params:
                if ctx.input(i):
                    ctx.member(ctx.input(i), Track((0,), t.ids), role)
            passed.append(t)
        elif 1 in t.axes:
            ctx.block(t, "multi-axis channel grid reaches a normalisation")
        elif spatial_ok:
            passed.append(t)
        else:
            ctx.block(t, "normalisation statistics mix the positions of this axis")
    ctx.set_layout(ctx.node.output[0], passed)


@register("BatchNormalization")
def batchnorm(ctx: RuleContext) -> None:
    if len([o for o in ctx.node.output if o]) > 1:
        ctx.block_inputs("BatchNormalization in training mode")
        return
    _per_channel(ctx, [(1, ROLE_NORM_SCALE), (2, ROLE_PARAM), (3, ROLE_PARAM), (4, ROLE_PARAM)], spatial_ok=True)


@register("InstanceNormalization")
def instancenorm(ctx: RuleContext) -> None:
    _per_channel(ctx, [(1, ROLE_NORM_SCALE), (2, ROLE_PARAM)], spatial_ok=False)


@register("LayerNormalization", "RMSNormalization", "SimplifiedLayerNormalization")
def layernorm(ctx: RuleContext) -> None:
    shape = ctx.shape(ctx.input(0))
    rank = len(shape) if shape else 0
    axis = ctx.int_attr("axis", -1)
    axis = axis + rank if axis < 0 else axis
    passed: list[Track] = []
    for t in ctx.in_layout(0):
        if any(a >= axis for a in t.axes):
            ctx.block(t, "LayerNorm over the channel axis couples all channels (statistics change if one is removed)")
        else:
            passed.append(t)
    ctx.set_layout(ctx.node.output[0], passed)


@register("GroupNormalization", "LRN", "MeanVarianceNormalization")
def mixing_norm(ctx: RuleContext) -> None:
    ctx.block_inputs(f"{ctx.node.op_type} mixes neighbouring channels")
