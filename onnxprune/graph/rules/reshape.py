"""Layout ops: Reshape/Flatten (block index maps), Transpose, Squeeze/Unsqueeze, Expand, Tile.

Reshape is handled by reshaping the ids themselves: the channel ids are broadcast over the input
tensor, reshaped like the data, and read back on the output axes where they vary. A Flatten into
a Gemm thus maps channel c to the block of features c*HW .. (c+1)*HW-1; a channel-shuffle
reshape to (groups, C/groups) yields a two-axis grid whose inner axis is pruned (the ids of one
inner index are coupled across groups so that every group loses the same channels).

A *split* (one channel axis cut into a grid, e.g. H·D -> (H, D) after a Q/K/V projection) must lose
whole hyperplanes of the grid to stay rectangular, so its ids are coupled along one grid axis:
- the inner one by default: the same index leaves every head (head_dim; a channel shuffle);
- the head axis for the splits `analyse(heads=...)` names as whole heads: every index of head h is
  one slot, which the attention MatMuls couple with the same head of K and V (rules/linear.py).
A Reshape of a grid that is rectangular already (repeat_kv merging KV heads with their copies, a
batch·heads merge) couples nothing more.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from onnxprune.graph.apply import ApplyContext
from onnxprune.graph.context import DimRef, RuleContext, counted
from onnxprune.graph.rules.registry import register
from onnxprune.graph.tracks import Track, planes
from onnxprune.graph.view import node_attr

INTEGER_TYPES = (onnx.TensorProto.INT32, onnx.TensorProto.INT64)

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
    if out.is_single:
        return out
    if t.is_single:
        _split(ctx, out)
    elif ctx.coupled_along(out) is None:
        ctx.union_along(out, len(varying) - 1)
    return out


def _split(ctx: RuleContext, grid: Track) -> None:
    """Couple a new grid (module doc): along its head axis for a whole-heads split, else the inner axis."""
    state, name = ctx.state, ctx.node.name
    state.splits[name] = grid.ids
    for i in grid.ids[grid.ids >= 0].tolist():
        state.split_of[int(i)] = name
    head = state.whole_heads.get(name)
    ctx.union_along(grid, len(grid.axes) - 1 if head is None else head)


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
    dims: list[DimRef | None] | None = None  # computed from Shape reads of channel axes (rules/shape_ops.py)

    def entry(self, index: int) -> DimRef | None:
        return self.dims[index] if self.dims is not None and index < len(self.dims) else None


def _through_casts(ctx: RuleContext, name: str) -> str:
    """The tensor an integer Cast chain starts from (tf2onnx casts a target built in int32)."""
    while not ctx.is_const(name):
        prod = ctx.view.producer.get(name)
        if prod is None or prod[0].op_type != "Cast" or node_attr(prod[0], "to") not in INTEGER_TYPES:
            return name
        name = prod[0].input[0]
    return name


def _target_pieces(ctx: RuleContext, target: str) -> list[TargetPiece] | None:
    if ctx.is_const(target):
        return [TargetPiece(ctx.node.name, 1, 0, ctx.const(target).astype(np.int64).reshape(-1))]
    source = _through_casts(ctx, target)
    prod = ctx.view.producer.get(source)
    if prod is None or prod[0].op_type != "Concat":
        dims = ctx.dims(target)
        return None if dims is None else [TargetPiece(ctx.node.name, 1, 0, None, dims)]
    pieces: list[TargetPiece] = []
    offset = 0
    for i, x in enumerate(prod[0].input):
        shape = ctx.shape(x)
        if shape is None or len(shape) != 1:
            return None
        value = ctx.const(x).astype(np.int64).reshape(-1) if ctx.is_const(x) else None
        pieces.append(TargetPiece(prod[0].name, i, offset, value, ctx.dims(x)))
        offset += shape[0]
    return pieces


def _count(actx: ApplyContext, t: Track, pos: int) -> int:
    return actx.kept_count(t.ids) if t.is_single else int(actx.kept_along(t.ids, pos).sum())


def _line_counts(ctx: RuleContext, t: Track, pos: int, mult: int = 1) -> Counter[frozenset[int]]:
    """The hyperplanes of a grid along `pos` by the classes they hold (each `mult` times): an axis
    keeps one position per hyperplane with a class left."""
    roots = ctx.roots_now(t.ids)
    out: Counter[frozenset[int]] = Counter()
    for row in planes(roots, pos):
        out[frozenset(row[row >= 0].tolist())] += mult
    return out


def _check_read(ctx: RuleContext, t: Track, pos: int, e: DimRef | None, what: str) -> None:
    """After the walk: an entry for channel axis `pos` of `t` that is not a constant must still be
    right once channels leave: the run-time count of the same positions (times a constant), or any
    value when neither axis can shrink."""
    def check() -> None:
        if ctx.fixed(t, pos) and (e is None or all(ctx.fixed(x, p) for x, p in e.axes())):
            return
        count = counted(ctx.state.uf, e) if e is not None and e.exact else None
        if count is not None and _line_counts(ctx, t, pos) == _line_counts(ctx, *count):
            return
        ctx.block([t] if e is None else [t, *(x for x, _ in e.axes())], what)

    ctx.defer(check)


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
        ctx.escape(ctx.dims(ctx.input(1)), "sets the size of another axis")
        return
    in_axes = {a: (t, pos) for t in x_layout for pos, a in enumerate(t.axes)}
    edits: dict[int, tuple[TargetPiece, int, Track, int]] = {}  # out axis -> (piece, index, track, pos)
    channel_axes = {a for t in out for a in t.axes}
    for each in pieces:
        for k in range(len(each.dims or [])):  # a channel count setting the size of an axis without channels
            if each.offset + k not in channel_axes:
                ctx.escape([each.entry(k)], "sets the size of another axis")
    for t in out:
        for pos, a in enumerate(t.axes):
            piece = next((p for p in reversed(pieces) if p.offset <= a), None)
            if piece is None:
                ctx.block(x_layout, "Reshape target entry for a channel axis is computed at run time")
                return
            if piece.value is None:
                e = piece.entry(a - piece.offset)
                _check_read(ctx, t, pos, e, "Reshape target entry for a channel axis is computed at run time"
                            if e is None else "Reshape target entry read at run time (Shape) does not count "
                            "these channels")
                continue
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
                    old_const = actx.const(node.input[index])
                    actx.set_input_const(node, index, value.astype(old_const.dtype).reshape(old_const.shape))

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
    """Channels pass through when the shape keeps their axes (an entry of 1 or their size; a GQA
    repeat_kv expands a new axis next to them). A constant shape is rewritten to the kept counts; a
    shape computed at run time gets 1 at the channel axes (Min with a constant, opset 12+), which is
    the same Expand for any shape the original model accepts: an entry there must be 1 or the size."""
    x_shape, y_shape = ctx.shape(ctx.input(0)), ctx.shape(ctx.node.output[0])
    layout = ctx.in_layout(0)
    target = ctx.input(1)
    if x_shape is None or y_shape is None:
        ctx.block(layout, "Expand of unknown shapes")
        return
    off = len(y_shape) - len(x_shape)
    moved = [t.shifted({a: a + off for a in t.axes}) for t in layout]
    axes = [(a, t, pos) for t in moved for pos, a in enumerate(t.axes)]
    if any(x_shape[a - off] != y_shape[a] for a, _, _ in axes):
        ctx.block(layout, "Expand repeats a channel axis")
        return
    spec_len = (ctx.shape(target) or (0,))[0]
    spec_off = len(y_shape) - spec_len
    dims = ctx.dims(target) or []
    for k, e in enumerate(dims):
        if e is not None and k + spec_off not in {a for a, _, _ in axes}:
            ctx.escape([e], "sets the size of another axis")
    touched = [(a, t, pos) for a, t, pos in axes if a - spec_off >= 0]
    if ctx.is_const(target):
        spec = ctx.const(target).astype(np.int64)
        touched = [(a, t, pos) for a, t, pos in touched if spec[a - spec_off] not in (1, -1)]
        if touched:
            def rewrite(actx: ApplyContext, node: onnx.NodeProto) -> None:
                new = spec.copy()
                for a, t, pos in touched:
                    new[a - spec_off] = _count(actx, t, pos)
                actx.set_input_const(node, 1, new)

            ctx.hook(rewrite)
    elif touched and ctx.opset < 12:
        ctx.block(layout, "Expand with a run-time shape (before opset 12)")
        return
    elif touched:
        ones = np.full(spec_len, np.iinfo(np.int64).max, dtype=np.int64)
        for a, _, _ in touched:
            ones[a - spec_off] = 1

        def unit_entries(actx: ApplyContext, node: onnx.NodeProto) -> None:
            if all(_count(actx, t, pos) == t.ids.shape[pos] for _, t, pos in touched):
                return
            cap = actx.add_const(f"{node.name}_channel_ones", ones)
            out = f"{node.input[1]}__ones_for_{node.name}"
            actx.insert_before(node, helper.make_node("Min", [node.input[1], cap], [out],
                                                      name=f"{node.name}__channel_ones"))
            node.input[1] = out

        ctx.hook(unit_entries)
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
