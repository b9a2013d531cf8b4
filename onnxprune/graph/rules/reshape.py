"""Layout ops: Reshape/Flatten (block index maps), Transpose, Squeeze/Unsqueeze, Expand, Tile.

Reshape is handled by reshaping the ids themselves: the channel ids are broadcast over the input
tensor, reshaped like the data, and read back on the output axes where they vary. A Flatten into
a Gemm thus maps channel c to the block of features c*HW .. (c+1)*HW-1; a channel-shuffle
reshape to (groups, C/groups) yields a two-axis grid whose inner axis is pruned (the ids of one
inner index are coupled across groups so that every group loses the same channels).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from onnxprune.graph.analysis import RuleContext
from onnxprune.graph.apply import ApplyContext
from onnxprune.graph.rules.registry import register
from onnxprune.graph.tracks import Track

MAX_RESHAPE_ELEMENTS = 50_000_000


def _map_track(ctx: RuleContext, t: Track, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> Track | None:
    expanded = t.ids.reshape([in_shape[a] if a in t.axes else 1 for a in range(len(in_shape))])
    full = np.broadcast_to(expanded, in_shape).reshape(out_shape)
    varying = [k for k in range(len(out_shape)) if out_shape[k] > 1 and not _constant_along(full, k)]
    if not varying:
        ctx.block(t, "Reshape collapses the channel axis")
        return None
    index = tuple(slice(None) if k in varying else 0 for k in range(len(out_shape)))
    reduced = full[index]
    if not np.array_equal(np.broadcast_to(reduced.reshape([out_shape[k] if k in varying else 1
                                                           for k in range(len(out_shape))]), out_shape), full):
        ctx.block(t, "Reshape interleaves channels with other axes")
        return None
    out = Track(tuple(varying), np.ascontiguousarray(reduced))
    if not out.is_single:
        # Prune the innermost axis of the grid; couple the ids across the outer axes.
        ctx.union_along(out, len(varying) - 1)
    return out


def _constant_along(a: np.ndarray, axis: int) -> bool:
    first = np.take(a, [0], axis=axis)
    return bool((a == first).all())


def _reshape_layout(ctx: RuleContext) -> list[Track] | None:
    x, y = ctx.input(0), ctx.node.output[0]
    in_shape, out_shape = ctx.shape(x), ctx.shape(y)
    layout = ctx.layout(x)
    if in_shape is None or out_shape is None:
        ctx.block(layout, "Reshape with unknown shapes")
        return None
    if int(np.prod(in_shape)) > MAX_RESHAPE_ELEMENTS:
        ctx.block(layout, "Reshape of a tensor too large to map")
        return None
    out: list[Track] = []
    for t in layout:
        m = _map_track(ctx, t, in_shape, out_shape)
        if m is None:
            continue
        if any(set(m.axes) & set(u.axes) for u in out):
            ctx.block([m, *out], "Reshape merges two channel tracks")
            return None
        out.append(m)
    return out


@register("Flatten")
def flatten(ctx: RuleContext) -> None:
    out = _reshape_layout(ctx)
    if out is not None:
        ctx.set_layout(ctx.node.output[0], out)


@dataclass(frozen=True)
class TargetPiece:
    """A run of entries of a Reshape target: constant (rewritable) or computed at run time."""

    node: str  # the node whose input holds the constant (the Reshape, or a Concat building the target)
    input_index: int
    offset: int  # first target entry covered
    value: np.ndarray | None  # None when computed at run time


def _target_pieces(ctx: RuleContext, target: str) -> list[TargetPiece] | None:
    if ctx.is_const(target):
        return [TargetPiece(ctx.node.name, 1, 0, ctx.const(target).astype(np.int64).reshape(-1))]
    prod = ctx.view.producer.get(target)
    if prod is None or prod[0].op_type != "Concat":
        return None
    pieces: list[TargetPiece] = []
    offset = 0
    for i, x in enumerate(prod[0].input):
        shape = ctx.shape(x)
        if shape is None or len(shape) != 1:
            return None
        value = ctx.const(x).astype(np.int64).reshape(-1) if ctx.is_const(x) else None
        pieces.append(TargetPiece(prod[0].name, i, offset, value))
        offset += shape[0]
    return pieces


def _count(actx: ApplyContext, t: Track, pos: int) -> int:
    return actx.kept_count(t.ids) if t.is_single else int(actx.kept_along(t.ids, pos).sum())


@register("Reshape")
def reshape(ctx: RuleContext) -> None:
    out = _reshape_layout(ctx)
    if out is None:
        return
    x_layout = ctx.layout(ctx.input(0))
    if ctx.opset < 5:
        ctx.block(x_layout, "Reshape-1 with a shape attribute")
        return
    pieces = _target_pieces(ctx, ctx.input(1))
    if pieces is None:
        ctx.block(x_layout, "Reshape target computed at run time")
        return
    in_axes = {a: (t, pos) for t in x_layout for pos, a in enumerate(t.axes)}
    edits: dict[int, tuple[TargetPiece, int, Track, int]] = {}  # out axis -> (piece, index, track, pos)
    for t in out:
        for pos, a in enumerate(t.axes):
            piece = next((p for p in reversed(pieces) if p.offset <= a), None)
            if piece is None or piece.value is None:
                ctx.block(x_layout, "Reshape target entry for a channel axis is computed at run time")
                return
            edits[a] = (piece, a - piece.offset, t, pos)

    for node_name in dict.fromkeys(p.node for p, *_ in edits.values()):  # in order: hook order names initializers
        def rewrite(actx: ApplyContext, node: onnx.NodeProto, node_name: str = node_name) -> None:
            new_values: dict[tuple[int, int], int] = {}
            for a, (piece, idx, t, pos) in edits.items():
                if piece.node != node_name or piece.value is None:
                    continue
                n = _count(actx, t, pos)
                old = int(piece.value[idx])
                if old == -1:
                    continue
                if old == 0 and a in in_axes and _count(actx, *in_axes[a]) == n:
                    continue
                new_values[(piece.input_index, idx)] = n
            for index in {i for i, _ in new_values}:
                piece = next(p for p in pieces if p.node == node_name and p.input_index == index)
                assert piece.value is not None
                value = piece.value.copy()
                for (i, k), n in new_values.items():
                    if i == index:
                        value[k] = n
                if not np.array_equal(value, piece.value):
                    actx.set_input_const(node, index, value.reshape(actx.const(node.input[index]).shape))

        ctx.hook(rewrite, node=node_name)
    ctx.set_layout(ctx.node.output[0], out)


@register("Transpose")
def transpose(ctx: RuleContext) -> None:
    shape = ctx.shape(ctx.input(0))
    layout = ctx.in_layout(0)
    if shape is None:
        ctx.block(layout, "Transpose of unknown rank")
        return
    perm = ctx.ints_attr("perm") or list(reversed(range(len(shape))))
    inverse = {p: i for i, p in enumerate(perm)}
    ctx.set_layout(ctx.node.output[0], [t.shifted(inverse) for t in layout])


def _axes_param(ctx: RuleContext, since_input: int) -> list[int] | None:
    if ctx.opset >= since_input:
        name = ctx.input(1)
        if not name:
            return None
        return [int(v) for v in ctx.const(name)] if ctx.is_const(name) else []
    return ctx.ints_attr("axes")


@register("Squeeze")
def squeeze(ctx: RuleContext) -> None:
    shape = ctx.shape(ctx.input(0))
    layout = ctx.in_layout(0)
    if shape is None:
        ctx.block(layout, "Squeeze of unknown rank")
        return
    axes = _axes_param(ctx, 13)
    if axes == []:
        ctx.block(layout, "Squeeze axes computed at run time")
        return
    rank = len(shape)
    dropped = {a % rank for a in axes} if axes is not None else {i for i, d in enumerate(shape) if d == 1}
    mapping = {}
    k = 0
    for i in range(rank):
        if i not in dropped:
            mapping[i] = k
            k += 1
    out = []
    for t in layout:
        if set(t.axes) & dropped:
            ctx.block(t, "Squeeze removes a channel axis")
        else:
            out.append(t.shifted(mapping))
    ctx.set_layout(ctx.node.output[0], out)


@register("Unsqueeze")
def unsqueeze(ctx: RuleContext) -> None:
    shape = ctx.shape(ctx.input(0))
    layout = ctx.in_layout(0)
    axes = _axes_param(ctx, 13)
    if shape is None or not axes:
        ctx.block(layout, "Unsqueeze with unknown axes or rank")
        return
    out_rank = len(shape) + len(axes)
    inserted = {a % out_rank for a in axes}
    kept_positions = [i for i in range(out_rank) if i not in inserted]
    mapping = dict(enumerate(kept_positions))
    ctx.set_layout(ctx.node.output[0], [t.shifted(mapping) for t in layout])


@register("Expand")
def expand(ctx: RuleContext) -> None:
    x_shape, y_shape = ctx.shape(ctx.input(0)), ctx.shape(ctx.node.output[0])
    layout = ctx.in_layout(0)
    target = ctx.input(1)
    if x_shape is None or y_shape is None or not ctx.is_const(target):
        ctx.block(layout, "Expand with a run-time shape")
        return
    off = len(y_shape) - len(x_shape)
    spec = ctx.const(target).astype(np.int64)
    spec_off = len(y_shape) - len(spec)
    moved = [t.shifted({a: a + off for a in t.axes}) for t in layout]
    touched = [(a, t) for t in moved for a in t.axes if a - spec_off >= 0 and spec[a - spec_off] not in (1, -1)]
    if any(not t.is_single for _, t in touched):
        ctx.block(layout, "Expand over a multi-axis channel grid")
        return
    if touched:
        def rewrite(actx: ApplyContext, node: onnx.NodeProto) -> None:
            new = spec.copy()
            for a, t in touched:
                new[a - spec_off] = actx.kept_count(t.ids)
            actx.set_input_const(node, 1, new)

        ctx.hook(rewrite)
    ctx.set_layout(ctx.node.output[0], moved)


@register("Tile")
def tile(ctx: RuleContext) -> None:
    layout = ctx.in_layout(0)
    reps = ctx.input(1)
    if not ctx.is_const(reps):
        ctx.block(layout, "Tile repeats computed at run time")
        return
    r = ctx.const(reps)
    passed = []
    for t in layout:
        if any(r[a] != 1 for a in t.axes):
            ctx.block(t, "Tile repeats a channel axis")
        else:
            passed.append(t)
    ctx.set_layout(ctx.node.output[0], passed)
