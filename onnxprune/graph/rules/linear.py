"""Gemm and MatMul.

With a constant weight the output features are a new source and the input features are
consumed (the weight's reduction axis is sliced). MatMul between two activations (attention)
couples the contracted channels of both operands and passes the others through.
"""

from __future__ import annotations

from onnxprune.graph.analysis import ROLE_PARAM, ROLE_WEIGHT_IN, ROLE_WEIGHT_OUT, RuleContext
from onnxprune.graph.rules.registry import register
from onnxprune.graph.tracks import Track, track_at


@register("Gemm", source=True)
def gemm(ctx: RuleContext) -> None:
    a, b, c = ctx.input(0), ctx.input(1), ctx.input(2)
    trans_a, trans_b = ctx.int_attr("transA", 0), ctx.int_attr("transB", 0)
    k_axis, m_axis = (0, 1) if trans_a else (1, 0)
    a_layout = ctx.layout(a)
    if not ctx.is_const(b) or (c and not ctx.is_const(c)):
        ctx.block(a_layout, "Gemm weight or bias is computed at run time")
        return
    out = ctx.node.output[0]
    bshape = ctx.shape(b)
    assert bshape is not None
    n_axis, bk_axis = (0, 1) if trans_b else (1, 0)
    out_ids = ctx.new_source(bshape[n_axis], out)
    ctx.member(b, Track((n_axis,), out_ids), ROLE_WEIGHT_OUT)
    cshape = ctx.shape(c) if c else None
    if c and cshape and cshape[-1] == bshape[n_axis] and bshape[n_axis] > 1:
        ctx.member(c, Track((len(cshape) - 1,), out_ids), ROLE_PARAM)
    layout = [Track((1,), out_ids)]
    kt = track_at(a_layout, k_axis)
    if kt is not None:
        if kt.is_single:
            ctx.member(b, Track((bk_axis,), kt.ids), ROLE_WEIGHT_IN)
            ctx.consume(0, kt)
        else:
            ctx.block(kt, "multi-axis channel grid reaches Gemm")
    mt = track_at(a_layout, m_axis)
    if mt is not None:
        if cshape and len(cshape) == 2 and cshape[0] > 1:
            ctx.block(mt, "Gemm bias varies along the rows")
        else:
            layout.append(Track((0,), mt.ids))
    ctx.set_layout(out, layout)


@register("MatMul", source=True)
def matmul(ctx: RuleContext) -> None:
    a, b = ctx.input(0), ctx.input(1)
    ashape, bshape = ctx.shape(a), ctx.shape(b)
    if ashape is None or bshape is None or len(ashape) < 2 or len(bshape) < 1:
        ctx.block_inputs("MatMul operand of unknown or vector shape")
        return
    ra, rb = len(ashape), len(bshape)
    if rb == 1:
        ctx.block_inputs("MatMul by a vector")
        return
    out = ctx.node.output[0]
    ro = max(ra, rb)
    a_layout, b_layout = ctx.layout(a), ctx.layout(b)
    out_layout: list[Track] = []
    ka, kb = ra - 1, rb - 2
    a_k = track_at(a_layout, ka)
    b_k = track_at(b_layout, kb)
    if ctx.is_const(b) and not ctx.is_const(a):
        if rb != 2:
            ctx.block_inputs("MatMul with a batched constant weight")
            return
        out_ids = ctx.new_source(bshape[1], out)
        ctx.member(b, Track((1,), out_ids), ROLE_WEIGHT_OUT)
        out_layout.append(Track((ro - 1,), out_ids))
        if a_k is not None:
            if a_k.is_single:
                ctx.member(b, Track((0,), a_k.ids), ROLE_WEIGHT_IN)
                ctx.consume(0, a_k)
            else:
                ctx.block(a_k, "multi-axis channel grid reaches a MatMul weight")
    elif ctx.is_const(a):
        ctx.block(b_layout, "MatMul with a constant left operand")
        return
    elif a_k is not None or b_k is not None:
        _contract(ctx, a_k, b_k, ra, rb, ro)
    # Channels on the other axes pass through (batch axes broadcast, M from A, N from B).
    for t in a_layout:
        if ka not in t.axes:
            out_layout.append(t.shifted({x: x + ro - ra for x in t.axes}))
    for t in b_layout:
        if kb not in t.axes and (rb - 1 in t.axes) and not ctx.is_const(b):
            out_layout.append(t.shifted({x: x + ro - rb for x in t.axes}))
        elif kb not in t.axes and not ctx.is_const(b):
            ctx.block(t, "channels on a batch axis of the right MatMul operand")
    ctx.set_layout(out, _dedupe(ctx, out_layout))


def _contract(ctx: RuleContext, a_k: Track | None, b_k: Track | None, ra: int, rb: int, ro: int) -> None:
    if a_k is None or b_k is None:
        ctx.block([t for t in (a_k, b_k) if t is not None],
                  "contracted channels meet an operand without prunable channels")
        return
    a_rest = sorted(x + ro - ra for x in a_k.axes if x != ra - 1)
    b_rest = sorted(x + ro - rb for x in b_k.axes if x != rb - 2)
    if a_rest != b_rest or a_k.ids.shape != b_k.ids.shape:
        ctx.block([a_k, b_k], "contracted channel grids of the two operands do not line up")
        return
    ctx.union(a_k.ids, b_k.ids, reason="MatMul contraction couples operands")
    ctx.consume(0, a_k)
    ctx.consume(1, b_k)


def _dedupe(ctx: RuleContext, layout: list[Track]) -> list[Track]:
    seen: set[int] = set()
    out: list[Track] = []
    for t in layout:
        if set(t.axes) & seen:
            ctx.block(t, "two channel tracks land on one MatMul output axis")
            continue
        seen.update(t.axes)
        out.append(t)
    return out
