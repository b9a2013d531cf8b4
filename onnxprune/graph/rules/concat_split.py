"""Index mapping ops: Concat (offsets), Split and Slice (ranges), Gather (index lists), and the
embedding lookup: Gather of rows of a constant table by run-time ids is a source of hidden channels."""

from __future__ import annotations

import numpy as np
import onnx

from onnxprune.graph.apply import ApplyContext
from onnxprune.graph.context import ROLE_PARAM, ROLE_WEIGHT_OUT, ApplyHook, RuleContext, untracked
from onnxprune.graph.rules.registry import register
from onnxprune.graph.tracks import Track, track_at


def _axis(ctx: RuleContext, name: str, default: int = 0) -> int:
    shape = ctx.shape(ctx.input(0)) or ctx.shape(ctx.node.output[0])
    rank = len(shape) if shape else 0
    a = ctx.int_attr("axis", default)
    return a + rank if a < 0 else a


@register("Concat")
def concat(ctx: RuleContext) -> None:
    """Ids side by side along the axis. Channel grids (attention heads) concatenate along one of their
    axes when every operand carries a grid on the same axes (RoPE's rotate_half: -x[..., D/2:] next to
    x[..., :D/2]); the result couples nothing more unless it is not rectangular."""
    shape = ctx.shape(ctx.node.output[0])
    if shape is None:
        ctx.block_inputs("Concat with unknown output shape")
        return
    axis = ctx.int_attr("axis", 1) % len(shape)
    pieces: list[np.ndarray] = []
    others: dict[tuple[int, ...], Track] = {}
    on_axis = [track_at(ctx.layout(x), axis) for x in ctx.node.input]
    grid = _concat_grids(ctx, on_axis, axis)
    for x, t in zip(ctx.node.input, on_axis, strict=True):
        xs = ctx.shape(x)
        if xs is None:
            ctx.block_inputs("Concat operand of unknown shape")
            return
        if t is not None and not t.is_single and grid is None:
            ctx.block(t, "multi-axis channel grid concatenated")
            t = None
        pieces.append(t.ids if t is not None and t.is_single else untracked(xs[axis]))
        for u in ctx.layout(x):
            if axis in u.axes:
                continue
            if u.axes in others:
                ctx.union(others[u.axes].ids, u.ids, reason="Concat couples the other axes")
            else:
                others[u.axes] = u
    for x in ctx.node.input:
        for u in others.values():
            if not any(v.axes == u.axes for v in ctx.layout(x)) and not _follows(ctx, x, u):
                ctx.block(u, f"Concat operand {x} carries no prunable channels where the others do")
    main = grid if grid is not None else Track((axis,), np.concatenate(pieces))
    ctx.set_layout(ctx.node.output[0], [main, *list(others.values())])


def _follows(ctx: RuleContext, x: str, u: Track) -> bool:
    """Whether operand x, which carries no channels on u's axes, can lose the same positions: a constant
    is sliced; so is a constant broadcast by Expand (ViT's class token) when the Expand's shape keeps
    1 (or -1) there or is computed at run time (where 1 or the size is the only valid entry)."""
    if ctx.is_const(x):
        ctx.member(x, u, ROLE_PARAM)
        return True
    node = ctx.view.producer.get(x, (None,))[0]
    if node is None or node.op_type != "Expand" or not ctx.is_const(node.input[0]):
        return False
    cs, xs = ctx.shape(node.input[0]) or (), ctx.shape(x) or ()
    off = len(xs) - len(cs)
    if not xs or any(a < off or cs[a - off] != xs[a] for a in u.axes):
        return False
    if ctx.is_const(node.input[1]):
        spec = ctx.const(node.input[1]).astype(np.int64).reshape(-1)
        soff = len(xs) - spec.size
        if any(a >= soff and int(spec[a - soff]) not in (1, -1) for a in u.axes):
            return False
    RuleContext(ctx.state, node).member(node.input[0], Track(tuple(a - off for a in u.axes), u.ids), ROLE_PARAM)
    return True


def _concat_grids(ctx: RuleContext, on_axis: list[Track | None], axis: int) -> Track | None:
    """The concatenated grid when every operand has one on the same axes, of the same extents off `axis`."""
    grids = [t for t in on_axis if t is not None and not t.is_single]
    if not grids:
        return None
    first = grids[0]
    pos = first.axes.index(axis)
    rest = [d for k, d in enumerate(first.ids.shape) if k != pos]
    if any(t is None or t.axes != first.axes or [d for k, d in enumerate(t.ids.shape) if k != pos] != rest
           for t in on_axis):
        return None
    out = Track(first.axes, np.concatenate([t.ids for t in on_axis if t is not None], axis=pos))
    if ctx.coupled_along(out) is None:
        ctx.union_along(out, len(out.axes) - 1)
    return out


def _split_sizes(ctx: RuleContext, dim: int) -> list[int] | None:
    n = len(ctx.node.output)
    if ctx.opset < 13:
        sizes = ctx.ints_attr("split")
    elif ctx.input(1):
        sizes = [int(v) for v in ctx.const(ctx.input(1))] if ctx.is_const(ctx.input(1)) else None
        if sizes is None:
            return None
    else:
        sizes = None
    if sizes is None:
        if dim % n == 0:
            return [dim // n] * n
        step = -(-dim // n)  # opset 18 num_outputs: last chunk smaller
        return [min(step, dim - i * step) for i in range(n)]
    return sizes


@register("Split")
def split(ctx: RuleContext) -> None:
    shape = ctx.shape(ctx.input(0))
    if shape is None:
        ctx.block_inputs("Split of unknown shape")
        return
    axis = ctx.int_attr("axis", 0) % len(shape)
    layout = ctx.in_layout(0)
    t = track_at(layout, axis)
    rest = [u for u in layout if u is not t]
    if t is None:
        for out in ctx.node.output:
            ctx.set_layout(out, rest)
        return
    sizes = _split_sizes(ctx, shape[axis])
    if sizes is None or sum(sizes) != shape[axis]:
        ctx.block(t, "Split sizes computed at run time")
        return
    pos = t.axes.index(axis)
    bounds = np.cumsum([0, *sizes])
    parts = [np.take(t.ids, range(bounds[i], bounds[i + 1]), axis=pos) for i in range(len(sizes))]
    for out, ids in zip(ctx.node.output, parts, strict=True):
        ctx.set_layout(out, [Track(t.axes, ids), *rest])

    def rewrite(actx: ApplyContext, node: onnx.NodeProto) -> None:
        new = [_kept(actx, p, pos) for p in parts]
        if actx.model_opset < 13:
            actx.set_attr(node, "split", new)
        else:
            actx.drop_attr(node, "num_outputs")
            actx.set_input_const(node, 1, np.array(new, dtype=np.int64))

    ctx.hook(rewrite)


def _norm_bound(v: int, dim: int) -> int:
    if v < 0:
        v += dim
    return max(0, min(v, dim))


@register("Slice")
def slice_(ctx: RuleContext) -> None:
    shape = ctx.shape(ctx.input(0))
    layout = ctx.in_layout(0)
    if shape is None:
        ctx.block(layout, "Slice of unknown shape")
        return
    params = _slice_params(ctx, len(shape))
    if params is None:
        ctx.block(layout, "Slice bounds computed at run time")
        return
    starts, ends, axes, steps = params
    out_layout: list[Track] = []
    sliced: list[tuple[int, int, int, np.ndarray, int]] = []  # (index in params, start, end, ids, grid pos)
    for t in layout:
        hit = [i for i, a in enumerate(axes) if a in t.axes]
        if not hit:
            out_layout.append(t)
            continue
        i = hit[0]
        if len(hit) > 1 or steps[i] != 1:
            ctx.block(t, "strided Slice over channels" if steps[i] != 1 else "Slice of a channel grid along two axes")
            continue
        pos = t.axes.index(axes[i])
        dim = shape[axes[i]]
        s, e = _norm_bound(starts[i], dim), _norm_bound(ends[i], dim)
        out_layout.append(Track(t.axes, np.take(t.ids, range(s, e), axis=pos)))
        sliced.append((i, s, e, t.ids, pos))
    ctx.set_layout(ctx.node.output[0], out_layout)

    if sliced:
        ctx.hook(_slice_rewriter(sliced, starts, ends, axes, steps))


def _slice_params(ctx: RuleContext, rank: int) -> tuple[list[int], list[int], list[int], list[int]] | None:
    if ctx.opset < 10:
        starts, ends = ctx.ints_attr("starts"), ctx.ints_attr("ends")
        axes = ctx.ints_attr("axes")
        if starts is None or ends is None:
            return None
        axes = axes if axes is not None else list(range(len(starts)))
        return starts, ends, [a % rank for a in axes], [1] * len(starts)
    names = [ctx.input(i) for i in range(1, 5)]
    if any(n and not ctx.is_const(n) for n in names):
        return None
    starts = [int(v) for v in ctx.const(names[0])]
    ends = [int(v) for v in ctx.const(names[1])]
    axes = [int(v) % rank for v in ctx.const(names[2])] if names[2] else list(range(len(starts)))
    steps = [int(v) for v in ctx.const(names[3])] if names[3] else [1] * len(starts)
    return starts, ends, axes, steps


def _kept(actx: ApplyContext, ids: np.ndarray, pos: int) -> int:
    return actx.kept_count(ids) if ids.ndim == 1 else int(actx.kept_along(ids, pos).sum())


def _slice_rewriter(sliced: list[tuple[int, int, int, np.ndarray, int]], starts: list[int], ends: list[int],
                    axes: list[int], steps: list[int]) -> ApplyHook:
    def rewrite(actx: ApplyContext, node: onnx.NodeProto) -> None:
        new_starts, new_ends = list(starts), list(ends)
        for i, s, e, ids, pos in sliced:
            keep = actx.keep(ids) if ids.ndim == 1 else actx.kept_along(ids, pos)
            new_starts[i] = int(keep[:s].sum())
            new_ends[i] = int(keep[:e].sum())
        if actx.model_opset < 10:
            actx.set_attr(node, "starts", new_starts)
            actx.set_attr(node, "ends", new_ends)
        else:
            actx.set_input_const(node, 1, np.array(new_starts, dtype=np.int64))
            actx.set_input_const(node, 2, np.array(new_ends, dtype=np.int64))

    return rewrite


@register("Gather", source=True)
def gather(ctx: RuleContext) -> None:
    shape = ctx.shape(ctx.input(0))
    layout = ctx.in_layout(0)
    idx_name = ctx.input(1)
    if embedding(ctx):
        return
    if shape is None or not ctx.is_const(idx_name):
        ctx.block(layout, "Gather with run-time indices")
        return
    axis = ctx.int_attr("axis", 0) % len(shape)
    idx = ctx.const(idx_name).astype(np.int64)
    idx = np.where(idx < 0, idx + shape[axis], idx)
    shift = idx.ndim - 1
    out_layout: list[Track] = []
    for t in layout:
        if axis not in t.axes:
            out_layout.append(t.shifted({a: (a if a < axis else a + shift) for a in t.axes}))
            continue
        if not t.is_single or idx.ndim != 1:
            ctx.block(t, "Gather picks single channels (or a grid) out of the channel axis")
            continue
        src_ids = t.ids
        out_ids = src_ids[idx]
        out_layout.append(Track((axis,), out_ids))

        def rewrite(actx: ApplyContext, node: onnx.NodeProto, src_ids: np.ndarray = src_ids) -> None:
            keep_src = actx.keep(src_ids)
            new_pos = np.cumsum(keep_src) - 1
            kept = idx[keep_src[idx]]
            actx.set_input_const(node, 1, new_pos[kept].astype(np.int64))

        ctx.hook(rewrite)
    ctx.set_layout(ctx.node.output[0], out_layout)


def embedding(ctx: RuleContext) -> bool:
    """Rows of a constant table [rows, hidden] picked by run-time ids (token, position, segment ids):
    the table's columns are new channels (the hidden width), on the output's last axis; the table is
    sliced along them. A table analysis.py found to be a per-head bias (its columns meet attention
    heads, T5's relative position bias) stays a plain constant read: each layer's heads cut it."""
    table, idx = ctx.input(0), ctx.input(1)
    shape, out_shape = ctx.shape(table), ctx.shape(ctx.node.output[0])
    if not ctx.is_const(table) or ctx.is_const(idx) or shape is None or len(shape) != 2 or out_shape is None \
            or ctx.int_attr("axis", 0) % 2 != 0 or ctx.node.name in ctx.state.bias_tables:
        return False
    if ctx.in_layout(1):
        ctx.block(ctx.in_layout(1), "Gather ids carry channels")
    ids = ctx.new_source(shape[1], ctx.node.output[0])
    ctx.state.tables[ctx.node.name] = ids
    ctx.member(table, Track((1,), ids), ROLE_WEIGHT_OUT)
    ctx.set_layout(ctx.node.output[0], [Track((len(out_shape) - 1,), ids)])
    return True
