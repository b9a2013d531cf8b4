"""ONNX Runtime's RotaryEmbedding (com.microsoft): rotates pairs of channels within each head, by position.

Whole heads pass through unchanged (every head is rotated alike; cos/sin caches are per position),
so the rule couples the channels of each head into one slot and rewrites `num_heads` when it is set.
Head_dim channels (the same channel in every head) would have to go in rotate-half pairs together
with the caches' columns: not done, so a head_dim grid that reaches the op is blocked with the reason.

Input: [B, S, N·D] (N from `num_heads`, else D = 2 · cos_cache columns) or [B, N, S, D].
"""

from __future__ import annotations

import numpy as np

from onnxprune.graph.context import RuleContext
from onnxprune.graph.rules.contrib_attention import count_hook, whole_rows
from onnxprune.graph.rules.registry import CONTRIB, register
from onnxprune.graph.tracks import Track

HEAD_DIM = ("head_dim channels (the same channel of every head) reach RotaryEmbedding, which rotates pairs "
            "of them: only whole heads can pass")


def _head_grid(ctx: RuleContext, t: Track, shape: tuple[int, ...], cos_columns: int) -> np.ndarray | None:
    """The track's ids as [heads, channels of a head], or None where it is not a head layout."""
    if len(shape) == 3 and t.axes == (2,):
        heads = ctx.int_attr("num_heads", 0) or shape[2] // max(2 * cos_columns, 1)
        return t.ids.reshape(heads, -1) if heads > 0 and shape[2] % heads == 0 else None
    if len(shape) == 4 and t.axes == (1, 3):
        return t.ids
    if len(shape) == 4 and t.axes == (1,):
        return t.ids[:, None]
    return None


def _heads_share_slots(ctx: RuleContext, grid: np.ndarray) -> bool:
    """Whether some slot already spans two heads (head_dim coupling made upstream)."""
    owner: dict[int, int] = {}
    for h, row in enumerate(grid):
        for r in {ctx.state.uf.find(int(i)) for i in row if i >= 0}:
            if owner.setdefault(r, h) != h:
                return True
    return False


@register("RotaryEmbedding", domain=CONTRIB)
def rotary_embedding(ctx: RuleContext) -> None:
    x = ctx.input(0)
    shape, cos = ctx.shape(x), ctx.shape(ctx.input(2))
    passed: list[Track] = []
    for t in ctx.layout(x):
        grid = _head_grid(ctx, t, shape, cos[1]) if shape is not None and cos is not None and len(cos) == 2 else None
        if grid is None:
            ctx.block(t, HEAD_DIM if shape is not None and len(shape) - 1 in t.axes
                      else "channels on the batch or sequence axis of RotaryEmbedding")
            continue
        if _heads_share_slots(ctx, grid):
            ctx.block(t, HEAD_DIM)
            continue
        head = whole_rows(ctx, grid)
        if ctx.int_attr("num_heads", 0):
            count_hook(ctx, {"num_heads": (head, 1)})
        passed.append(t)
    ctx.set_layout(ctx.node.output[0], passed)
