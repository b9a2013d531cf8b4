"""Quantized ONNX Runtime ops (com.microsoft): refused.

Their weights are packed integers with per-block scales: slicing them is not done here, and the
oracle could not prove it. The channels that reach them are blocked, and the channels they produce
are listed as blocked sources, so that `inspect` names the op: prune before quantizing.
"""

from __future__ import annotations

from onnxprune.graph.context import RuleContext
from onnxprune.graph.rules.registry import CONTRIB, register
from onnxprune.graph.tracks import Track

REASON = "quantized op: prune before quantizing"
# Quantized layers that make new channels: op -> the channel axis of their output (-1: the last).
LAYERS = {
    "MatMulNBits": -1, "MatMulBnb4": -1, "MatMulFpQ4": -1, "DynamicQuantizeMatMul": -1, "MatMulIntegerToFloat": -1,
    "QAttention": -1, "QOrderedAttention": -1, "QOrderedMatMul": -1, "QOrderedLongformerAttention": -1,
    "QGemm": -1, "QEmbedLayerNormalization": -1, "GatherBlockQuantized": -1, "QMoE": -1,
    "DynamicQuantizeLSTM": -1, "QLinearConv": 1, "MatMulNBitsMlp": -1, "MatMulNBitsQLoRA": -1, "MatMulNBitsQkv": -1,
    "MatMulBlockQuantizedFp4Weight": -1, "MatMulBlockQuantizedFp8Weight": -1,
}
# Quantized ops that work on channels they are given (block what reaches them).
OTHERS = (
    "QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearSoftmax", "QLinearConcat",
    "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearReduceMean", "QLinearWhere", "QuantizeLinear",
    "DequantizeLinear", "QuantizeWithOrder", "DequantizeWithOrder", "QOrderedGelu", "QOrderedLayerNormalization",
    "DequantizeBFP", "QuantizeBFP", "MatMulInteger16", "MulInteger", "ReduceSumInteger",
)


@register(*LAYERS, domain=CONTRIB, source=True)
def quantized_layer(ctx: RuleContext) -> None:
    ctx.block_inputs(REASON)
    out = ctx.node.output[0]
    shape = ctx.shape(out)
    if not shape:
        return
    axis = LAYERS[ctx.node.op_type] % len(shape)
    ids = ctx.new_source(shape[axis], out)
    ctx.block(ids, REASON)
    ctx.set_layout(out, [Track((axis,), ids)])


@register(*OTHERS, domain=CONTRIB)
def quantized_other(ctx: RuleContext) -> None:
    ctx.block_inputs(REASON)
