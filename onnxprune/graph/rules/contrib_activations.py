"""ONNX Runtime's fused activations (com.microsoft): channel by channel, like the standard ones.

Gelu and QuickGelu are unary. FastGelu (optional bias) and BiasGelu add their operands first: they
couple and slice them like a broadcasting Add (a constant per-channel bias is a member sliced with the
channels).
"""

from __future__ import annotations

from onnxprune.graph.context import RuleContext
from onnxprune.graph.rules.elementwise import couple_operands, unary
from onnxprune.graph.rules.registry import CONTRIB, register

register("Gelu", "QuickGelu", domain=CONTRIB)(unary)


@register("FastGelu", "BiasGelu", domain=CONTRIB)
def biased(ctx: RuleContext) -> None:
    ctx.set_layout(ctx.node.output[0], couple_operands(ctx, list(ctx.node.input)))
