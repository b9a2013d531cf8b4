"""ONNX Runtime's fused norms (com.microsoft): SkipLayerNormalization, SkipSimplifiedLayerNormalization.

Both add `input + skip (+ bias)` like a residual Add (the operands are coupled, a constant bias is
sliced) and normalise the sum over the hidden axis, which blocks the hidden channels exactly like
LayerNormalization (rules/norm.py), or lets them through as approximate under `--approximate
layernorm` (`rmsnorm` for the simplified one, which keeps its denominator as rules/norm.py says). The optional outputs: `mean` and `inv_std_var` ([.., 1]) carry no channel;
`input_skip_bias_sum` is the sum itself, channel by channel. SimplifiedLayerNormalization is
registered in the default domain (rules/norm.py), where ONNX Runtime defines it.
"""

from __future__ import annotations

from onnxprune.graph.context import ROLE_NORM_SCALE, ROLE_PARAM, RuleContext
from onnxprune.graph.rules.elementwise import couple_operands
from onnxprune.graph.rules.norm import REASONS, fused_rms_hook, norm_kind, normalised
from onnxprune.graph.rules.registry import CONTRIB, register

SUM_OUTPUT = 3  # input_skip_bias_sum


def _skip_norm(ctx: RuleContext, *, gamma: int, beta: int | None, bias: int) -> None:
    shape = ctx.shape(ctx.input(0))
    rank = len(shape) if shape else 0
    kind = norm_kind(ctx.node.op_type)
    for i in (0, 1):  # the norm's reason first: it holds whatever the other operand carries
        for t in ctx.in_layout(i):
            if t.axes == (len(ctx.shape(ctx.input(i)) or ()) - 1,):
                ctx.approximate(t, REASONS[kind], kind=kind)
    total = couple_operands(ctx, [ctx.input(0), ctx.input(1), ctx.input(bias)])
    params = [(ctx.input(gamma), ROLE_NORM_SCALE)] + ([(ctx.input(beta), ROLE_PARAM)] if beta is not None else [])
    ctx.set_layout(ctx.node.output[0], normalised(ctx, total, rank=rank, axis=rank - 1, params=params, kind=kind))
    if kind == "rmsnorm":
        fused_rms_hook(ctx, total, rank=rank, gamma=gamma)
    if len(ctx.node.output) > SUM_OUTPUT:
        ctx.set_layout(ctx.node.output[SUM_OUTPUT], total)


@register("SkipLayerNormalization", domain=CONTRIB)
def skip_layernorm(ctx: RuleContext) -> None:
    """Inputs: input, skip, gamma, beta?, bias?."""
    _skip_norm(ctx, gamma=2, beta=3, bias=4)


@register("SkipSimplifiedLayerNormalization", domain=CONTRIB)
def skip_simplified_layernorm(ctx: RuleContext) -> None:
    """RMSNorm of input + skip (+ bias). Inputs: input, skip, gamma, bias?."""
    _skip_norm(ctx, gamma=2, beta=None, bias=3)
