"""Gemm and MatMul.

With a constant weight the output features are a new source and the input features are
consumed (the weight's reduction axis is sliced). MatMul between two activations (attention)
couples the contracted channels of both operands, passes the others through, and keeps the
heads on the batch axes in step (`_activations`).
"""

from __future__ import annotations

import numpy as np

from onnxprune.graph.context import ROLE_PARAM, ROLE_WEIGHT_IN, ROLE_WEIGHT_OUT, RuleContext
from onnxprune.graph.rules.registry import register
from onnxprune.graph.tracks import Track, planes, track_at


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
    ka = ra - 1
    if ctx.is_const(a):
        ctx.block(b_layout, "MatMul with a constant left operand")
        return
    if not ctx.is_const(b):
        _activations(ctx, ashape, bshape)
        return
    if rb != 2:
        ctx.block_inputs("MatMul with a batched constant weight")
        return
    out_ids = ctx.new_source(bshape[1], out)
    ctx.member(b, Track((1,), out_ids), ROLE_WEIGHT_OUT)
    out_layout = [Track((ro - 1,), out_ids)]
    a_k = track_at(a_layout, ka)
    if a_k is not None:
        if a_k.is_single:
            ctx.member(b, Track((0,), a_k.ids), ROLE_WEIGHT_IN)
            ctx.consume(0, a_k)
        else:
            ctx.block(a_k, "multi-axis channel grid reaches a MatMul weight")
    # Channels on the other axes of A pass through (batch axes broadcast, M).
    out_layout += [t.shifted({x: x + ro - ra for x in t.axes}) for t in a_layout if ka not in t.axes]
    ctx.set_layout(out, _dedupe(ctx, out_layout))


def _activations(ctx: RuleContext, ashape: tuple[int, ...], bshape: tuple[int, ...]) -> None:
    """A MatMul of two activations (attention). In output coordinates: A is [..., M, K], B is [..., K, N].

    The contracted channels of both operands are coupled (Q·Kᵀ: head_dim of Q with head_dim of K);
    channels on M (A) and N (B) pass through; on the batch axes (the heads) both operands and the
    output must lose the same positions: a contracted grid whose heads are whole slots carries them
    into the output (the scores' head axis), and there they couple with the heads of the other operand
    ((scores)·V). A batch axis that has channels on one side only must never shrink."""
    ra, rb = len(ashape), len(bshape)
    ro = max(ra, rb)
    a_in, b_in = ctx.layout(ctx.input(0)), ctx.layout(ctx.input(1))
    a_out = [t.shifted({x: x + ro - ra for x in t.axes}) for t in a_in]
    b_out = [t.shifted({x: x + ro - rb for x in t.axes}) for t in b_in]
    ka, kb = ro - 1, ro - 2
    a_k = next((i for i, t in enumerate(a_out) if ka in t.axes), None)
    b_k = next((i for i, t in enumerate(b_out) if kb in t.axes), None)
    _note_attention(ctx, [*a_out, *b_out], ro)
    sided: list[tuple[Track, str]] = []  # output tracks and the operands ("a", "b", "ab") that carry them
    if a_k is not None or b_k is not None:
        heads = _contract(ctx, a_in, b_in, a_k, b_k, a_out, b_out, ro)
        if heads is not None:
            sided.append((heads, "ab"))
    sided += [(t, "a") for t in a_out if ka not in t.axes]
    sided += [(t, "b") for t in b_out if kb not in t.axes]
    extent = {"a": [1] * (ro - ra) + list(ashape), "b": [1] * (ro - rb) + list(bshape)}
    ctx.set_layout(ctx.node.output[0], _dedupe(ctx, _batch_axes(ctx, sided, extent, ro)))


def _contract(ctx: RuleContext, a_in: list[Track], b_in: list[Track], a_k: int | None, b_k: int | None,
              a_out: list[Track], b_out: list[Track], ro: int) -> Track | None:
    """Couple the contracted grids; return the head track the output keeps (or None)."""
    if a_k is None or b_k is None:
        present = [layout[k] for layout, k in ((a_in, a_k), (b_in, b_k)) if k is not None]
        ctx.block(present, "contracted channels meet an operand without prunable channels")
        return None
    ta, tb = a_out[a_k], b_out[b_k]
    a_rest = [x for x in ta.axes if x != ro - 1]
    b_rest = [x for x in tb.axes if x != ro - 2]
    rest = sorted(set(a_rest) | set(b_rest))
    sizes: dict[int, int] = {}
    for t, t_rest in ((ta, a_rest), (tb, b_rest)):
        for pos, x in enumerate(t_rest):
            sizes.setdefault(x, t.ids.shape[pos])
    if (any(x >= ro - 2 for x in rest) or ta.ids.shape[-1] != tb.ids.shape[-1]
            or any(t.ids.shape[pos] != sizes[x] for t, t_rest in ((ta, a_rest), (tb, b_rest))
                   for pos, x in enumerate(t_rest))):
        ctx.block([ta, tb], "contracted channel grids of the two operands do not line up")
        return None
    # A grid without one of the head axes holds the same ids along it (one K shared by every query head).
    wa, wb = (_widened(t.ids, t_rest, rest, sizes) for t, t_rest in ((ta, a_rest), (tb, b_rest)))
    ctx.union(wa, wb, reason="MatMul contraction couples operands")
    ctx.consume(0, a_in[a_k])
    ctx.consume(1, b_in[b_k])
    for t, t_rest, other_rest in ((ta, a_rest, b_rest), (tb, b_rest, a_rest)):
        for pos, x in enumerate(t_rest):
            if x not in other_rest:
                _must_stay(ctx, t, pos, [ta, tb])
    if len(rest) == 1:
        rows = planes(ctx.roots_now(wa), 0)
        if all(len(set(r[r >= 0].tolist())) == 1 for r in rows):  # whole heads: one slot per head
            heads = np.array([r[r >= 0][0] for r in planes(wa, 0)], dtype=np.int64)
            ctx.state.head_ids.update(heads.tolist())
            return Track((rest[0],), heads)
    for pos in range(len(a_rest)):
        _must_stay(ctx, ta, pos, [ta, tb])
    return None


def _widened(ids: np.ndarray, own: list[int], rest: list[int], sizes: dict[int, int]) -> np.ndarray:
    """Ids over the head axes `own` and K, broadcast to the head axes `rest` and K."""
    shaped = ids.reshape([ids.shape[own.index(x)] if x in own else 1 for x in rest] + [ids.shape[-1]])
    return np.broadcast_to(shaped, [sizes[x] for x in rest] + [ids.shape[-1]])


def _batch_axes(ctx: RuleContext, sided: list[tuple[Track, str]], extent: dict[str, list[int]],
                ro: int) -> list[Track]:
    """Couple the head tracks both operands carry on one batch axis; a batch axis with channels on one
    side only, where the other side is not broadcast, must never shrink."""
    out = [t for t, _ in sided]
    for j in range(ro - 2):
        on = [(t, side) for t, side in sided if j in t.axes]
        single = [(t, side) for t, side in on if t.is_single]
        grids = [(t, side) for t, side in on if not t.is_single]
        if len(on) == 2 and len(single) == 1 and len(grids) == 1 and single[0][1] != grids[0][1] \
                and single[0][0].ids.size == grids[0][0].ids.shape[grids[0][0].axes.index(j)]:
            s, (g, _) = single[0][0], grids[0]
            for sid, row in zip(s.ids.tolist(), planes(g.ids, g.axes.index(j)), strict=True):
                ctx.union(np.full(row.shape, sid, dtype=np.int64), row, reason="MatMul batch axis couples heads")
            out = [t for t in out if t is not s]
            continue
        for t, side in on:
            if side != "ab" and not any(other != side for _, other in on) and \
                    extent["b" if side == "a" else "a"][j] > 1:
                _must_stay(ctx, t, t.axes.index(j), [t])
    return out


def _must_stay(ctx: RuleContext, t: Track, pos: int, blocked: list[Track]) -> None:
    ctx.defer(lambda: None if ctx.fixed(t, pos) else ctx.block(
        blocked, "channels on a MatMul batch axis that the other operand cannot follow"))


def _note_attention(ctx: RuleContext, tracks: list[Track], ro: int) -> None:
    """Record the head splits (rules/reshape.py) whose grid is a batch axis here, with the grid
    position of that axis in the split (matched by the ids of its hyperplanes)."""
    state = ctx.state
    for t in tracks:
        batch = [pos for pos, x in enumerate(t.axes) if x < ro - 2]
        if t.is_single or not batch:
            continue
        rows = {frozenset(r[r >= 0].tolist()) for r in planes(t.ids, batch[0])}
        for name in {state.split_of[i] for i in t.ids[t.ids >= 0].tolist() if i in state.split_of}:
            grid = state.splits[name]
            for p in range(grid.ndim):
                if {frozenset(r[r >= 0].tolist()) for r in planes(grid, p)} == rows:
                    state.attention.setdefault(name, p)
                    break


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
