"""Recurrent layers: LSTM/GRU/RNN consume the channels of their input sequence.

The input weights W[dirs, gates*H, I] are sliced along I; the hidden size is kept, so the
outputs carry no prunable channels.
"""

from __future__ import annotations

from onnxprune.graph.context import ROLE_WEIGHT_IN, RuleContext
from onnxprune.graph.rules.registry import register
from onnxprune.graph.tracks import Track


@register("LSTM", "GRU", "RNN")
def recurrent(ctx: RuleContext) -> None:
    shape = ctx.shape(ctx.input(0))
    layout = ctx.in_layout(0)
    w = ctx.input(1)
    if shape is None or len(shape) != 3 or not ctx.is_const(w):
        ctx.block(layout, "recurrent layer with run-time weights or unknown input rank")
        return
    for t in layout:
        if t.axes == (2,):
            ctx.member(w, Track((2,), t.ids), ROLE_WEIGHT_IN)
            ctx.consume(0, t)
        else:
            ctx.block(t, "channels on the sequence or batch axis of a recurrent layer")
