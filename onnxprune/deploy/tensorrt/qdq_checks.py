"""check-trt on Q/DQ models: which layers TensorRT builds in INT8, and Q/DQ placements that stop its fusions.

TensorRT's explicit quantization runs a Conv/Gemm/MatMul in INT8 when both its input and its weight
come through DequantizeLinear. It fuses Conv + bias + BN + activation (+ a residual Add) into one
kernel; Q/DQ in the middle of that chain splits it:
- `qdq-blocks-fusion`: a Q/DQ pair between a Conv/Gemm and the BN or activation after it.
- `qdq-residual-skip`: a residual Add whose Conv branch is INT8 but whose skip input has no Q/DQ:
  the Add cannot run in the Conv's INT8 epilogue.
- `qdq-residual-main`: Q/DQ on the Conv branch of a residual Add too: the Conv writes INT8, the Add
  runs apart.
- `qdq-partial`: a weighted layer with Q/DQ on only one of input and weight: it runs in FP16/FP32.
"""

from __future__ import annotations

import onnx

from onnxprune.deploy.placement import FUSIBLE_EPILOGUE, fusible_conv
from onnxprune.deploy.qdq import QDQ_OPS, WEIGHTED_OPS, Producers, weighted_layers
from onnxprune.deploy.tensorrt.findings import Finding, Severity
from onnxprune.sparsity.layout import WeightSite, reduction_axis

FIX = "quantize with `onnxprune quantize --for tensorrt`"


def has_qdq(model: onnx.ModelProto) -> bool:
    return any(n.op_type in QDQ_OPS for n in model.graph.node)


def qdq_weight_sites(model: onnx.ModelProto) -> list[tuple[WeightSite, onnx.NodeProto]]:
    """Weighted layers whose weight comes through DequantizeLinear, with the initializer that stores it
    (int8, or FP32 behind a QuantizeLinear) and its reduction axis, for the 2:4 check."""
    out = []
    for node, layer in weighted_layers(model):
        w = layer.weight
        if w is None:
            continue
        axis = reduction_axis(node, w.values.ndim)
        if axis is not None:
            out.append((WeightSite(node.name, node.op_type, 1, w.stored, axis, tuple(w.values.shape)), node))
    return out


def int8_layer_names(model: onnx.ModelProto) -> set[str]:
    return {layer.node for _, layer in weighted_layers(model) if layer.int8}


def _finding(severity: Severity, check: str, node: onnx.NodeProto, message: str) -> Finding:
    return Finding(severity, check, node.name, node.op_type, message)


def _epilogue_findings(view: Producers) -> list[Finding]:
    out = []
    for node in view.model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose", "Gemm") or not node.output:
            continue
        for q in view.readers.get(node.output[0], []):
            if q.op_type != "QuantizeLinear":
                continue
            for dq in view.readers.get(q.output[0], []):
                nxt = [r for r in view.readers.get(dq.output[0], []) if r.op_type in FUSIBLE_EPILOGUE]
                if nxt:
                    out.append(_finding(Severity.WARNING, "qdq-blocks-fusion", node,
                                        f"Q/DQ between {node.op_type} and its {nxt[0].op_type} "
                                        f"({nxt[0].name}): TensorRT cannot fuse them; {FIX}"))
    return out


def _residual_findings(view: Producers, int8: set[str]) -> list[Finding]:
    out = []
    for node in view.model.graph.node:
        if node.op_type != "Add" or len(node.input) != 2 or any(x in view.inits for x in node.input):
            continue
        dq = [view.dequantized(x) for x in node.input]
        convs = [fusible_conv(view, x) if d is None else _conv_behind_qdq(view, d) for x, d in zip(node.input, dq,
                                                                                                  strict=True)]
        quantized_convs = [c for c in convs if c is not None and c.name in int8]
        if not quantized_convs:
            continue
        if all(d is None for d in dq):
            out.append(_finding(Severity.WARNING, "qdq-residual-skip", node,
                                f"residual Add after INT8 {quantized_convs[0].name}: its skip input has no Q/DQ, "
                                f"so TensorRT cannot fuse the Add into the Conv; {FIX}"))
        elif all(d is not None for d in dq):
            out.append(_finding(Severity.WARNING, "qdq-residual-main", node,
                                "Q/DQ on both inputs of a residual Add: the Conv branch is written in INT8 and "
                                f"the Add runs apart instead of in the Conv's epilogue; {FIX}"))
    return out


def _conv_behind_qdq(view: Producers, dq: onnx.NodeProto) -> onnx.NodeProto | None:
    q = view.producer(dq.input[0])
    return fusible_conv(view, q.input[0]) if q is not None and q.op_type == "QuantizeLinear" else None


def qdq_findings(model: onnx.ModelProto) -> list[Finding]:
    """Findings about Q/DQ placement; empty for a model without Q/DQ."""
    if not has_qdq(model):
        return []
    view = Producers(model)
    out: list[Finding] = []
    int8: set[str] = set()
    for node, layer in weighted_layers(model, view):
        if layer.int8:
            int8.add(node.name)
        elif layer.activation_quantized or layer.weight is not None:
            half = "input" if layer.activation_quantized else "weight"
            out.append(_finding(Severity.WARNING, "qdq-partial", node,
                                f"only its {half} comes through Q/DQ: TensorRT runs this layer in FP16/FP32"))
    out += _epilogue_findings(view)
    out += _residual_findings(view, int8)
    weighted = sum(1 for n in model.graph.node if n.op_type in WEIGHTED_OPS)
    out.append(Finding(Severity.INFO, "int8-layers", "", "",
                       f"{len(int8)} of {weighted} Conv/Gemm/MatMul layers get INT8 (input and weight through Q/DQ)"))
    return out
