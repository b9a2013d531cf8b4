"""Normalisation layers.

BatchNormalization and InstanceNormalization work channel by channel: tracks on axis 1 pass
through and the per-channel parameters are sliced. LayerNormalization over the channel axis,
GroupNormalization and LRN mix channels, so removing one changes the others: blocked (exactness
cannot be claimed) unless the user opts in to approximate LayerNorm pruning.
"""

from __future__ import annotations

import onnx

from onnxprune.graph.apply import ApplyContext
from onnxprune.graph.context import ROLE_NORM_SCALE, ROLE_PARAM, RuleContext
from onnxprune.graph.layernorm_chains import LayerNormChain
from onnxprune.graph.rules.registry import register
from onnxprune.graph.tracks import Track, track_at


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


LAYERNORM_REASON = "LayerNorm over the channel axis couples all channels (statistics change if one is removed)"


@register("LayerNormalization", "RMSNormalization", "SimplifiedLayerNormalization")
def layernorm(ctx: RuleContext) -> None:
    """Blocks the normalised axes; with `--approximate layernorm` lets the last axis through.

    Removing a channel changes the mean and variance every other channel is normalised with, so the
    result is close (the removed channels are the least important) but never exact.
    """
    shape = ctx.shape(ctx.input(0))
    rank = len(shape) if shape else 0
    axis = ctx.int_attr("axis", -1)
    axis = axis + rank if axis < 0 else axis
    params = [(ctx.input(1), ROLE_NORM_SCALE), (ctx.input(2), ROLE_PARAM)]
    ctx.set_layout(ctx.node.output[0], normalised(ctx, ctx.in_layout(0), rank=rank, axis=axis, params=params))


def normalised(ctx: RuleContext, layout: list[Track], *, rank: int, axis: int,
               params: list[tuple[str, str]]) -> list[Track]:
    """The layout after a LayerNorm-like op normalising axes `axis`.. of a rank-`rank` tensor, whose
    per-channel scale/bias `params` ((name or "", role)) span the last axis: tracks on other axes pass;
    the last axis passes only as approximate (`--approximate layernorm`), with the params sliced."""
    passed: list[Track] = []
    for t in layout:
        if not any(a >= axis for a in t.axes):
            passed.append(t)
        elif t.axes == (rank - 1,) and axis == rank - 1:
            if not ctx.approximate(t, LAYERNORM_REASON, kind="layernorm"):  # blocked, with the opt-in named
                continue
            for name, role in params:
                if name and ctx.is_const(name) and len(ctx.shape(name) or ()) >= 1:
                    r = len(ctx.shape(name) or ())
                    ctx.member(name, Track((r - 1,), t.ids), role)
                elif name:
                    ctx.block(t, "LayerNorm scale/bias computed at run time")
            passed.append(t)
        else:
            ctx.block(t, LAYERNORM_REASON)
    return passed


def layernorm_chain(ctx: RuleContext, chain: LayerNormChain) -> None:
    """A LayerNorm written out op by op (graph/layernorm_chains.py), read at its last node (ctx): as
    LayerNormalization over the last axis; gamma and beta are sliced where the chain reads them."""
    shape = ctx.shape(chain.input)
    rank = len(shape) if shape else 0
    passed = normalised(ctx, ctx.layout(chain.input), rank=rank, axis=rank - 1, params=[])
    nodes = {n.name: n for n in ctx.view.graph.node if n.name in chain.nodes}
    for t in passed:
        if rank - 1 in t.axes:
            for found, role in ((chain.scale, ROLE_NORM_SCALE), (chain.bias, ROLE_PARAM)):
                if found is not None:
                    RuleContext(ctx.state, nodes[found[1]]).member(
                        found[0], Track((len(ctx.shape(found[0]) or ()) - 1,), t.ids), role)
    ctx.set_layout(chain.output, passed)


@register("GroupNormalization")
def groupnorm(ctx: RuleContext) -> None:
    """Whole groups only: removing one channel would change its group's statistics.

    The channels of a group are coupled into one slot; num_groups follows the kept groups. Scale and
    bias are per group before opset 21 and per channel from 21.
    """
    t = track_at(ctx.in_layout(0), 1)
    groups = ctx.int_attr("num_groups", 1)
    others = [u for u in ctx.in_layout(0) if u is not t]
    if others:
        ctx.block(others, "GroupNormalization mixes the positions of this axis")
    if t is None:
        return
    if not t.is_single or t.ids.size % groups or not all(ctx.is_const(ctx.input(i)) for i in (1, 2)):
        ctx.block(t, "GroupNormalization with run-time parameters or a channel grid")
        return
    grid = Track((0, 1), t.ids.reshape(groups, -1))
    ctx.union_along(grid, 0)
    per_group = grid.ids[:, 0]
    for i, role in ((1, ROLE_NORM_SCALE), (2, ROLE_PARAM)):
        shape = ctx.shape(ctx.input(i)) or ()
        ctx.member(ctx.input(i), Track((0,), per_group if shape == (groups,) else t.ids), role)

    def set_groups(actx: ApplyContext, node: onnx.NodeProto) -> None:
        actx.set_attr(node, "num_groups", actx.kept_count(per_group))

    ctx.hook(set_groups)
    ctx.set_layout(ctx.node.output[0], [t])


@register("LRN", "MeanVarianceNormalization")
def mixing_norm(ctx: RuleContext) -> None:
    ctx.block_inputs(f"{ctx.node.op_type} mixes neighbouring channels")
