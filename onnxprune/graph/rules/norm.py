"""Normalisation layers.

BatchNormalization and InstanceNormalization work channel by channel: tracks on axis 1 pass
through and the per-channel parameters are sliced. LayerNormalization and RMSNorm over the channel
axis, GroupNormalization and LRN mix channels, so removing one changes the others: blocked
(exactness cannot be claimed) unless the user opts in to approximate pruning through the norm
(`--approximate layernorm` / `rmsnorm`). The channels a norm normalises are the hidden width (the
residual stream of a transformer: Group.kind "hidden").

An RMSNorm that loses channels keeps its original denominator: eps is scaled by H/H' and gamma by
sqrt(H/H') (H channels before, H' after), so the pruned norm computes exactly what the dense norm
computes with the removed channels zeroed (as SliceGPT's RMSN divides by the original width). A
LayerNorm's mean cannot be kept that way: it is left to the approximation (and to the re-fit).
"""

from __future__ import annotations

import numpy as np
import onnx

from onnxprune.graph.apply import ApplyContext
from onnxprune.graph.context import ROLE_NORM_SCALE, ROLE_PARAM, RuleContext
from onnxprune.graph.layernorm_chains import LayerNormChain
from onnxprune.graph.rules.registry import register
from onnxprune.graph.tracks import Track, track_at

RMS_OPS = ("RMSNormalization", "SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization")
# ONNX Runtime's default epsilon of each op (LayerNormalization's is 1e-5 too).
DEFAULT_EPSILON = {"SkipSimplifiedLayerNormalization": 1e-12, "SkipLayerNormalization": 1e-12}


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
RMSNORM_REASON = "RMSNorm over the channel axis couples all channels (their root mean square changes if one is removed)"
REASONS = {"layernorm": LAYERNORM_REASON, "rmsnorm": RMSNORM_REASON}


def norm_kind(op_type: str) -> str:
    """The approximate kind a norm op needs: "rmsnorm" or "layernorm"."""
    return "rmsnorm" if op_type in RMS_OPS else "layernorm"


@register("LayerNormalization", "RMSNormalization", "SimplifiedLayerNormalization")
def layernorm(ctx: RuleContext) -> None:
    """Blocks the normalised axes; with `--approximate layernorm` (`rmsnorm`) lets the last axis through.

    Removing a channel changes the statistics every other channel is normalised with, so the result
    is close (the removed channels are the least important) but not proven exact.
    """
    shape = ctx.shape(ctx.input(0))
    rank = len(shape) if shape else 0
    axis = ctx.int_attr("axis", -1)
    axis = axis + rank if axis < 0 else axis
    params = [(ctx.input(1), ROLE_NORM_SCALE), (ctx.input(2), ROLE_PARAM)]
    kind = norm_kind(ctx.node.op_type)
    ctx.set_layout(ctx.node.output[0], normalised(ctx, ctx.in_layout(0), rank=rank, axis=axis, params=params,
                                                  kind=kind))
    if kind == "rmsnorm":
        fused_rms_hook(ctx, ctx.in_layout(0), rank=rank, gamma=1)


def normalised(ctx: RuleContext, layout: list[Track], *, rank: int, axis: int,
               params: list[tuple[str, str]], kind: str = "layernorm") -> list[Track]:
    """The layout after a LayerNorm-like op normalising axes `axis`.. of a rank-`rank` tensor, whose
    per-channel scale/bias `params` ((name or "", role)) span the last axis: tracks on other axes pass;
    the last axis passes only as approximate (`--approximate kind`), with the params sliced."""
    passed: list[Track] = []
    for t in layout:
        if not any(a >= axis for a in t.axes):
            passed.append(t)
        elif t.axes == (rank - 1,) and axis == rank - 1:
            ctx.state.hidden.update(t.ids[t.ids >= 0].tolist())
            if not ctx.approximate(t, REASONS[kind], kind=kind):  # blocked, with the opt-in named
                continue
            for name, role in params:
                if name and ctx.is_const(name) and len(ctx.shape(name) or ()) >= 1:
                    r = len(ctx.shape(name) or ())
                    ctx.member(name, Track((r - 1,), t.ids), role)
                elif name:
                    ctx.block(t, "LayerNorm scale/bias computed at run time")
            passed.append(t)
        else:
            ctx.block(t, REASONS[kind])
    return passed


def hidden_track(layout: list[Track], rank: int) -> Track | None:
    """The track a norm over the last axis lets through as hidden channels (None: no such track)."""
    return next((t for t in layout if t.axes == (rank - 1,)), None)


def rms_factor(actx: ApplyContext, t: Track) -> float | None:
    """H / H' for a track that lost channels (None when it kept all)."""
    kept = actx.kept_count(t.ids)
    return None if kept in (0, t.ids.size) else t.ids.size / kept


def scaled(value: np.ndarray, factor: float) -> np.ndarray:
    return (value.astype(np.float64) * factor).astype(value.dtype)


def fused_rms_hook(ctx: RuleContext, layout: list[Track], *, rank: int, gamma: int) -> None:
    """An RMSNorm op that loses channels keeps its denominator: epsilon · H/H', gamma · sqrt(H/H')."""
    t = hidden_track(layout, rank)
    if t is None:
        return
    default = DEFAULT_EPSILON.get(ctx.node.op_type, 1e-5)

    def rescale(actx: ApplyContext, node: onnx.NodeProto) -> None:
        f = rms_factor(actx, t)
        if f is None:
            return
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), default)
        actx.set_attr(node, "epsilon", float(eps) * f)
        if actx.is_const(node.input[gamma]):
            actx.set_input_const(node, gamma, scaled(actx.const(node.input[gamma]), np.sqrt(f)))

    ctx.hook(rescale)


def layernorm_chain(ctx: RuleContext, chain: LayerNormChain) -> None:
    """A LayerNorm or RMSNorm written out op by op (graph/layernorm_chains.py), read at its last node
    (ctx): as the fused op over the last axis; gamma and beta are sliced where the chain reads them."""
    shape = ctx.shape(chain.input)
    rank = len(shape) if shape else 0
    kind = "layernorm" if chain.centered else "rmsnorm"
    passed = normalised(ctx, ctx.layout(chain.input), rank=rank, axis=rank - 1, params=[], kind=kind)
    nodes = {n.name: n for n in ctx.view.graph.node if n.name in chain.nodes}
    for t in passed:
        if rank - 1 in t.axes:
            for found, role in ((chain.scale, ROLE_NORM_SCALE), (chain.bias, ROLE_PARAM)):
                if found is not None:
                    RuleContext(ctx.state, nodes[found[1]]).member(
                        found[0], Track((len(ctx.shape(found[0]) or ()) - 1,), t.ids), role)
    ctx.set_layout(chain.output, passed)
    hidden = hidden_track(passed, rank)
    if not chain.centered and hidden is not None:
        _chain_rms_hook(ctx, chain, hidden, nodes)


def _chain_rms_hook(ctx: RuleContext, chain: LayerNormChain, t: Track, nodes: dict[str, onnx.NodeProto]) -> None:
    """An RMSNorm chain that loses channels keeps its denominator: the mean of squares is scaled by H'/H
    (eps · H/H' and gamma · sqrt(H/H'), or, without gamma, a Mul by H'/H before eps is added)."""
    assert chain.eps_input is not None
    eps_name, add_name = chain.eps_input
    add = nodes[add_name]
    eps_at = list(add.input).index(eps_name)

    def rescale_eps(actx: ApplyContext, node: onnx.NodeProto) -> None:
        f = rms_factor(actx, t)
        if f is None:
            return
        if chain.scale is None:
            mean = node.input[1 - eps_at]
            share = scaled(np.ones((), dtype=actx.const(node.input[eps_at]).dtype), 1.0 / f)
            actx.insert_before(node, onnx.helper.make_node(
                "Mul", [mean, actx.add_const(f"{node.name}_kept_share", share)], [f"{mean}__kept_mean"],
                name=f"{node.name}__kept_mean"))
            node.input[1 - eps_at] = f"{mean}__kept_mean"
            return
        actx.set_input_const(node, eps_at, scaled(actx.const(node.input[eps_at]), f))

    ctx.hook(rescale_eps, node=add_name)
    if chain.scale is not None:
        gamma_name, mul_name = chain.scale
        gamma_at = list(nodes[mul_name].input).index(gamma_name)

        def rescale_gamma(actx: ApplyContext, node: onnx.NodeProto) -> None:
            f = rms_factor(actx, t)
            if f is not None:
                actx.set_input_const(node, gamma_at, scaled(actx.const(node.input[gamma_at]), np.sqrt(f)))

        ctx.hook(rescale_gamma, node=mul_name)


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
