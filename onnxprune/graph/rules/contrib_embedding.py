"""ONNX Runtime's EmbedLayerNormalization (com.microsoft): word + position (+ segment) embeddings, then
LayerNorm over the hidden axis.

The hidden channels are new (a source): the embedding tables [rows, hidden] are its weights, sliced
along their columns. The LayerNorm blocks them like LayerNormalization (rules/norm.py), or lets them
through as approximate under `--approximate layernorm` (gamma and beta sliced). `embedding_sum`
(output 2, the sum before the norm) carries the same channels exactly; `mask_index` carries none.
The ids the op looks up are valid inputs by onnxprune.io.input_values.
"""

from __future__ import annotations

from onnxprune.graph.context import ROLE_NORM_SCALE, ROLE_PARAM, ROLE_WEIGHT_OUT, RuleContext
from onnxprune.graph.rules.norm import normalised
from onnxprune.graph.rules.registry import CONTRIB, register
from onnxprune.graph.tracks import Track

TABLES = (2, 3, 4)  # word, position, segment embedding
GAMMA, BETA = 5, 6
SUM_OUTPUT = 2


@register("EmbedLayerNormalization", domain=CONTRIB, source=True)
def embed_layernorm(ctx: RuleContext) -> None:
    tables = [ctx.input(i) for i in TABLES if ctx.input(i)]
    params = [ctx.input(i) for i in (GAMMA, BETA) if ctx.input(i)]
    shape = ctx.shape(ctx.node.output[0])
    if not all(ctx.is_const(x) for x in tables + params) or shape is None or len(shape) != 3:
        return  # run-time tables: no channel this op could remove
    out = ctx.node.output[0]
    track = Track((2,), ctx.new_source(shape[2], out))
    for name in tables:
        ctx.member(name, Track((1,), track.ids), ROLE_WEIGHT_OUT)
    layout = normalised(ctx, [track], rank=3, axis=2,
                        params=[(ctx.input(GAMMA), ROLE_NORM_SCALE), (ctx.input(BETA), ROLE_PARAM)])
    ctx.set_layout(out, layout)
    if len(ctx.node.output) > SUM_OUTPUT:
        ctx.set_layout(ctx.node.output[SUM_OUTPUT], [track])
