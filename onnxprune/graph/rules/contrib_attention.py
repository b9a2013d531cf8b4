"""ONNX Runtime's fused attention (com.microsoft): Attention, MultiHeadAttention, GroupQueryAttention.

The pruning unit is the whole head: every head attends on its own (its softmax reads only its own
Q·Kᵀ), so removing head h — its Q, K and V channels and its output channels — leaves every other
head's output unchanged, and the head count attributes follow. One slot is one head (one KV group for
GroupQueryAttention: a KV head and the query heads that share it), coupled across Q, K, V and the
output. The default scale 1/sqrt(head_size) does not change. Head_dim pruning (the same channel in
every head) is not offered through these ops.

The oracle proves it at the consumers of the output: the output channels of a removed head are
masked where they enter the next MatMul/Gemm, which equals the head never having been computed.

- Attention: a source. Input hidden channels are consumed (the rows of the packed weight
  [in, Q+K+V], a reduction input the oracle masks); the output [B, S, N·Dv] is new channels, an
  [N, Dv] grid with one slot per head, whose Q, K and V columns of the weight and bias go with it.
- MultiHeadAttention: separate Q, K, V inputs [B, S, N·D] made upstream; head h's channels of the
  three are coupled, and the output channels are the V channels.
- GroupQueryAttention: Q [B, S, N·D] and K, V [B, S, KV·D], or packed QKV (key/value empty); a slot is
  a KV group; num_heads and kv_num_heads are rewritten.

A KV cache (past inputs, present outputs) is a graph input/output the caller allocates with the head
count: removing heads would change its shape, so heads that reach one are blocked with that reason.
So are packed 5-D inputs, the qk outputs and quantized caches.
"""

from __future__ import annotations

import numpy as np
import onnx

from onnxprune.graph.apply import ApplyContext
from onnxprune.graph.context import ROLE_PARAM, ROLE_WEIGHT_IN, ROLE_WEIGHT_OUT, RuleContext
from onnxprune.graph.rules.registry import CONTRIB, register
from onnxprune.graph.tracks import Track, track_at

KV_CACHE = ("a KV cache (past/present) holds the heads: removing one would change the cache shape the caller "
            "allocates")


def whole_rows(ctx: RuleContext, grid: np.ndarray) -> np.ndarray:
    """Couple every id of each row of `grid` (one head or KV group); returns one id per row."""
    ctx.union_along(Track((0, 1), grid), 0)
    ctx.state.fused_heads.append(grid.reshape(-1))
    return grid[:, 0]


def _heads_grid(ctx: RuleContext, name: str, rows: int, what: str) -> np.ndarray | None:
    """The ids of input `name` [B, S, rows·D] as a [rows, D] grid, or None (blocking what cannot be split)."""
    layout = ctx.layout(name)
    shape = ctx.shape(name)
    if shape is None or len(shape) != 3 or shape[2] % rows:
        ctx.block(layout, f"{what} is not [batch, sequence, heads·head_size]")
        return None
    t = track_at(layout, 2)
    others = [u for u in layout if u is not t]
    if others:
        ctx.block(others, f"channels on the batch or sequence axis of the {what}")
    if t is None or not t.is_single:
        if t is not None:
            ctx.block(t, f"multi-axis channel grid reaches the {what}")
        return None
    return t.ids.reshape(rows, -1)


def _head_bias(ctx: RuleContext, index: int, heads: np.ndarray, *, axis: int) -> None:
    """An optional input with one entry per head along `axis` (attention bias, head sink): a constant is
    sliced with the heads, one broadcast over the heads is kept; one computed at run time blocks them."""
    name = ctx.input(index)
    shape = ctx.shape(name) if name else None
    if not name or shape is None or len(shape) <= axis or shape[axis] == 1:
        return
    if shape[axis] != heads.size:
        ctx.block(heads, f"input {name} has {shape[axis]} entries for {heads.size} heads")
    elif not ctx.is_const(name):
        ctx.block(heads, f"input {name} holds one entry per head and is computed at run time")
    else:
        ctx.member(name, Track((axis,), heads), ROLE_PARAM)


def count_hook(ctx: RuleContext, counts: dict[str, tuple[np.ndarray, int]],
               sizes: tuple[str, list[np.ndarray]] | None = None) -> None:
    """At apply time: each attribute of `counts` becomes the kept rows of its id array times a factor;
    `sizes` (attribute, per-part id arrays) becomes the kept count of each part."""

    def rewrite(actx: ApplyContext, node: onnx.NodeProto) -> None:
        for attr, (ids, times) in counts.items():
            actx.set_attr(node, attr, actx.kept_count(ids) * times)
        if sizes is not None:
            actx.set_attr(node, sizes[0], [actx.kept_count(ids) for ids in sizes[1]])

    ctx.hook(rewrite)


def _used(ctx: RuleContext, *outputs: int) -> list[str]:
    """Those of the optional outputs that something reads (a node, or the caller as a graph output)."""
    names = [ctx.node.output[i] for i in outputs if i < len(ctx.node.output) and ctx.node.output[i]]
    return [n for n in names if n in ctx.view.graph_outputs or ctx.view.consumers.get(n)]


@register("Attention", domain=CONTRIB, source=True)
def attention(ctx: RuleContext) -> None:
    """Inputs: input, weights [in, Q+K+V], bias?, mask_index?, past?, attention_bias?, past_sequence_length?"""
    x, w, b = ctx.input(0), ctx.input(1), ctx.input(2)
    layout = ctx.layout(x)
    heads = ctx.int_attr("num_heads", 0)
    wshape = ctx.shape(w)
    if not ctx.is_const(w) or (b and not ctx.is_const(b)) or wshape is None or len(wshape) != 2:
        ctx.block(layout, "Attention weights computed at run time")
        return
    if heads <= 0:
        ctx.block(layout, f"Attention with num_heads {heads}")
        return
    sizes = ctx.ints_attr("qkv_hidden_sizes") or [wshape[1] // 3] * 3
    if len(sizes) != 3 or sizes[0] != sizes[1] or sum(sizes) != wshape[1] or any(s % heads for s in sizes):
        ctx.block(layout, f"Attention qkv_hidden_sizes {sizes} do not split weights {list(wshape)} into heads")
        return
    out = ctx.node.output[0]
    grid = ctx.new_source(sizes[2], out).reshape(heads, -1)
    head = whole_rows(ctx, grid)
    qk = np.repeat(head, sizes[0] // heads)
    columns = np.concatenate([qk, qk, grid.reshape(-1)])
    ctx.member(w, Track((1,), columns), ROLE_WEIGHT_OUT)
    if b:
        ctx.member(b, Track((0,), columns), ROLE_PARAM)
    for t in layout:
        if t.axes == (2,):
            ctx.member(w, Track((0,), t.ids), ROLE_WEIGHT_IN)
            ctx.consume(0, t)
        else:
            ctx.block(t, "channels on the batch or sequence axis of the Attention input")
    if ctx.input(4) or _used(ctx, 1):
        ctx.block(head, KV_CACHE)
    _head_bias(ctx, 5, head, axis=1)
    written = ctx.ints_attr("qkv_hidden_sizes") is not None
    count_hook(ctx, {"num_heads": (head, 1)},
               ("qkv_hidden_sizes", [np.repeat(head, s // heads) for s in sizes]) if written else None)
    ctx.set_layout(out, [Track((2,), grid.reshape(-1))])


@register("MultiHeadAttention", domain=CONTRIB)
def multi_head_attention(ctx: RuleContext) -> None:
    """Inputs: query, key?, value?, bias?, key_padding_mask?, attention_bias?, past_key?, past_value?, ..."""
    heads = ctx.int_attr("num_heads", 0)
    q, k, v = ctx.input(0), ctx.input(1), ctx.input(2)
    everything = [t for i in range(len(ctx.node.input)) for t in ctx.in_layout(i)]
    if heads <= 0:
        ctx.block(everything, f"MultiHeadAttention with num_heads {heads}")
        return
    if not k or not v:
        ctx.block(everything, "MultiHeadAttention with packed QKV or KV inputs")
        return
    grids = [_heads_grid(ctx, name, heads, what) for name, what in ((q, "query"), (k, "key"), (v, "value"))]
    if any(g is None for g in grids):
        ctx.block(everything, "MultiHeadAttention: a head's query, key and value channels go together, and one "
                              "of them carries no prunable channels")
        return
    qg, kg, vg = (g for g in grids if g is not None)
    head = whole_rows(ctx, qg)
    for g in (kg, vg):
        ctx.union(head, whole_rows(ctx, g), reason="a head's query, key and value go together")
    bias = ctx.input(3)
    if bias:
        if ctx.is_const(bias):
            ctx.member(bias, Track((0,), np.concatenate([qg.reshape(-1), kg.reshape(-1), vg.reshape(-1)])), ROLE_PARAM)
        else:
            ctx.block(head, "MultiHeadAttention bias computed at run time")
    if ctx.input(6) or ctx.input(7) or _used(ctx, 1, 2):
        ctx.block(head, KV_CACHE)
    if _used(ctx, 3):
        ctx.block(head, "the qk output holds every head")
    _head_bias(ctx, 5, head, axis=1)
    count_hook(ctx, {"num_heads": (head, 1)})
    ctx.set_layout(ctx.node.output[0], [Track((2,), vg.reshape(-1))])


@register("GroupQueryAttention", domain=CONTRIB)
def group_query_attention(ctx: RuleContext) -> None:
    """Inputs: query, key?, value?, past_key?, past_value?, seqlens_k, total_sequence_length, cos_cache?,
    sin_cache?, position_ids?, attention_bias?, head_sink?, k_scale?, v_scale?, q_norm_weight?, ..."""
    heads, kv_heads = ctx.int_attr("num_heads", 0), ctx.int_attr("kv_num_heads", 0)
    q, k, v = ctx.input(0), ctx.input(1), ctx.input(2)
    everything = [t for i in range(len(ctx.node.input)) for t in ctx.in_layout(i)]
    if heads <= 0 or kv_heads <= 0 or heads % kv_heads:
        ctx.block(everything, f"GroupQueryAttention with num_heads {heads}, kv_num_heads {kv_heads}")
        return
    per_group = heads // kv_heads
    if not k and not v:  # packed: [Q heads | K heads | V heads] along the hidden axis
        packed = _heads_grid(ctx, q, heads + 2 * kv_heads, "packed query/key/value")
        if packed is None:
            return
        qg = packed[:heads].reshape(kv_heads, -1)
        kg, vg = packed[heads:heads + kv_heads], packed[heads + kv_heads:]
    elif k and v:
        grids = [_heads_grid(ctx, name, rows, what)
                 for name, rows, what in ((q, kv_heads, "query"), (k, kv_heads, "key"), (v, kv_heads, "value"))]
        if any(g is None for g in grids):
            ctx.block(everything, "GroupQueryAttention: a KV group's query, key and value channels go together, "
                                  "and one of them carries no prunable channels")
            return
        qg, kg, vg = (g for g in grids if g is not None)
    else:
        ctx.block(everything, "GroupQueryAttention with only one of key and value")
        return
    group = whole_rows(ctx, qg)
    for g in (kg, vg):
        ctx.union(group, whole_rows(ctx, g), reason="a KV group's query, key and value go together")
    if ctx.input(3) or ctx.input(4) or _used(ctx, 1, 2):
        ctx.block(group, KV_CACHE)
    if ctx.input(12) or ctx.input(13):
        ctx.block(group, "quantized KV cache")
    if _used(ctx, 3):
        ctx.block(group, "the output_qk output holds every head")
    query_heads = np.repeat(group, per_group)
    _head_bias(ctx, 10, query_heads, axis=1)
    _head_bias(ctx, 11, query_heads, axis=0)
    count_hook(ctx, {"num_heads": (group, per_group), "kv_num_heads": (group, 1)})
    ctx.set_layout(ctx.node.output[0], [Track((2,), qg.reshape(-1))])
