"""Elementwise ops: every channel maps to the same index on the output.

Unary activations pass tracks through. Broadcasting ops (Add, Mul, Where, PRelu, ...) couple the
ids of operands that share a tracked axis, slice constant operands along it, and block a channel
that meets an untracked activation (it could not be removed from that operand). An operand that
covers some axes of a channel grid and broadcasts over the others (RoPE's cos/sin tables: one value
per head_dim index, the same for every head) is cut along the axes it covers when they shrink, and
so is an activation with one value per head of attention scores (a position bias).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from onnxprune.graph.apply import ApplyContext
from onnxprune.graph.context import ROLE_PARAM, RuleContext
from onnxprune.graph.rules.registry import register
from onnxprune.graph.tracks import Track

UNARY = (
    "Relu", "LeakyRelu", "PRelu_unary", "Elu", "Selu", "Celu", "ThresholdedRelu", "Sigmoid", "HardSigmoid",
    "HardSwish", "Tanh", "Softplus", "Softsign", "Mish", "Gelu", "Erf", "Exp", "Log", "Abs", "Neg", "Sqrt",
    "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh",
    "Asinh", "Acosh", "Atanh", "Not", "IsNaN", "IsInf", "Shrink", "Identity", "Cast", "BitwiseNot", "Dropout",
)
BROADCAST = (
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu", "Where", "Equal", "Greater",
    "GreaterOrEqual", "Less", "LessOrEqual", "And", "Or", "Xor", "Mod", "BitShift", "BitwiseAnd", "BitwiseOr",
    "BitwiseXor", "CastLike", "Clip",
)


@register(*UNARY)
def unary(ctx: RuleContext) -> None:
    layout = ctx.in_layout(0)
    for out in ctx.node.output:
        ctx.set_layout(out, layout)


def _operands(ctx: RuleContext) -> list[str]:
    if ctx.node.op_type == "CastLike":
        return [ctx.input(0)]
    if ctx.node.op_type == "Clip":
        return [ctx.input(0)]  # min/max are scalars
    return [x for x in ctx.node.input]


@register(*BROADCAST)
def broadcast(ctx: RuleContext) -> None:
    ctx.set_layout(ctx.node.output[0], couple_operands(ctx, _operands(ctx)))


def couple_operands(ctx: RuleContext, names: list[str]) -> list[Track]:
    """The output layout of a broadcasting elementwise op over the operands `names` ("" = absent):
    operands sharing a tracked axis are coupled, constant ones sliced along it."""
    ranks = [len(ctx.shape(x) or ()) if x else 0 for x in names]
    out_rank = max(ranks, default=0)
    # Tracks of every operand, moved to output axes.
    mapped: dict[str, list[Track]] = {}
    for x, r in zip(names, ranks, strict=True):
        off = out_rank - r
        mapped[x] = [t.shifted({a: a + off for a in t.axes}) for t in ctx.layout(x)] if x else []
    out_layout: list[Track] = []
    claimed: set[int] = set()
    for x in names:
        for t in mapped.get(x, []):
            if set(t.axes) & claimed:
                continue
            claimed.update(t.axes)
            out_layout.append(_couple(ctx, t, names, ranks, out_rank, mapped))
    return out_layout


def _couple(ctx: RuleContext, t: Track, names: list[str], ranks: list[int], out_rank: int,
            mapped: dict[str, list[Track]]) -> Track:
    """Couple every operand along the axes of track t; return the output track."""
    for x, r in zip(names, ranks, strict=True):
        if not x:
            continue
        off = out_rank - r
        shape = ctx.shape(x)
        if shape is None:
            ctx.block(t, f"unknown shape of operand {x}")
            continue
        dims = [shape[a - off] if a - off >= 0 else 1 for a in t.axes]
        if all(d == 1 for d in dims):
            continue  # broadcast along the channel axes: one value for every channel
        other = next((u for u in mapped.get(x, []) if set(u.axes) & set(t.axes)), None)
        if other is not None:
            if other.axes != t.axes:
                ctx.block([t, other], "operands carry channels on different axes")
            elif other is not t:
                ctx.union(t.ids, other.ids, reason=f"{ctx.node.op_type} couples operands")
            continue
        covered = [pos for pos, d in enumerate(dims) if d != 1]
        cuts = [(pos, t.axes[pos] - off) for pos in covered]
        if list(dims) != list(t.ids.shape) and all(dims[pos] == t.ids.shape[pos] for pos in covered):
            _cut_operand(ctx, list(ctx.node.input).index(x), t, cuts)
        elif list(dims) != list(t.ids.shape):
            ctx.block(t, f"operand {x} broadcasts partially along the channel axis")
        elif ctx.is_const(x):
            ctx.member(x, Track(tuple(a - off for a in t.axes), t.ids), ROLE_PARAM)
        elif t.any_tracked() and set(t.ids[t.ids >= 0].tolist()) <= ctx.state.head_ids:
            # One value per head added to the attention scores (T5's position bias): a removed
            # head's value goes with it.
            _cut_operand(ctx, list(ctx.node.input).index(x), t, cuts)
        else:
            ctx.block(t, f"{ctx.node.op_type} with an activation that carries no prunable channels")
    return t


def _cut_operand(ctx: RuleContext, index: int, t: Track, cuts: list[tuple[int, int]]) -> None:
    """At apply, keep the operand's positions of the kept channels along each (grid position, operand
    axis) in `cuts`: a constant is sliced, an activation is read through a Gather."""
    def cut(actx: ApplyContext, node: onnx.NodeProto) -> None:
        for pos, axis in cuts:
            keep = actx.kept_along(t.ids, pos)
            if keep.all():
                continue
            idx = np.flatnonzero(keep).astype(np.int64)
            name = node.input[index]
            if actx.is_const(name):
                actx.set_input_const(node, index, np.take(actx.const(name), idx, axis=axis))
                continue
            kept = f"{name}__kept_for_{node.name}_{axis}"
            actx.insert_before(node, helper.make_node("Gather", [name, actx.add_const(f"{node.name}_kept", idx)],
                                                      [kept], name=f"{node.name}__kept_{axis}", axis=axis))
            node.input[index] = kept

    ctx.hook(cut)
