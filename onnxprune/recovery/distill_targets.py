"""What distillation teaches the pruned model: which weights train, and which tensors of the dense
model (the teacher) it is compared with, each with the loss its kind of output calls for.

- **Probability heads**: a final Sigmoid (no Conv/Gemm/MatMul after it: a detector's scores, a
  segmentation mask) is taught by binary KL on its probabilities, computed from the student's
  logits; a final Softmax / LogSoftmax (a classifier's or a CTC recogniser's per-position
  distribution) by KL over its axis, per position.
- **Outputs** not produced by such a head alone (through Reshape/Transpose/...): mean squared
  error (regression, raw logits, box coordinates).
- **Features**: the outputs of the pruned layers (Conv/ConvTranspose/Gemm/MatMul that lost output
  or input channels), their kept channels against the dense model's same channels (the dense
  tensor gathered as in reconstruction, `recovery.layers.target_model`), mean squared error.

Trainable: the float32 initializers in the weight and bias slots of Conv, ConvTranspose, Gemm,
MatMul (and the constant of the Add after a MatMul), LayerNormalization, BatchNormalization (scale
and shift, not the running statistics) and PRelu. Everything else (shape constants, Resize scales,
GELU's constants) stays fixed.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

import onnx

from onnxprune.errors import OnnxPruneError
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.recovery.heads import final_nodes
from onnxprune.recovery.layers import FIT_OPS, FitLayer, direct_nodes, matmul_bias, output_keep, target_model

HEAD_OPS = ("Sigmoid", "Softmax", "LogSoftmax")
LAYOUT_OPS = frozenset({"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity"})
# Input slots holding weights, per op (a slot that is not a float32 initializer is skipped).
WEIGHT_SLOTS = {"Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (1, 2), "MatMul": (1,),
                "LayerNormalization": (1, 2), "BatchNormalization": (1, 2), "PRelu": (1,)}


@dataclass(frozen=True)
class Term:
    """One loss term: `student` tensor of the pruned model against `teacher` tensor of the dense one.

    kind: "mse"; "bce" (student: a Sigmoid's logits, teacher: its probabilities); "kl" (both:
    Softmax probabilities along `axis`; "logkl": LogSoftmax outputs)."""

    kind: str
    student: str
    teacher: str
    label: str  # for reports: the output or layer name
    axis: int = -1
    feature: bool = False


def trainable(model: onnx.ModelProto) -> list[str]:
    """The initializer names distillation may change (see the module doc), in graph order."""
    inits = {t.name: t for t in model.graph.initializer}
    out: list[str] = []
    for node in model.graph.node:
        slots = WEIGHT_SLOTS.get(node.op_type, ())
        names = [node.input[i] for i in slots if i < len(node.input)]
        if node.op_type == "MatMul":
            bias = matmul_bias(model, node, inits)
            if bias is not None:
                names.append(bias[0].input[bias[1]])
        out += [n for n in names if n in inits and inits[n].data_type == onnx.TensorProto.FLOAT]
    return list(dict.fromkeys(out))


def _softmax_axis(node: onnx.NodeProto, opset: int) -> int:
    axis = next((int(a.i) for a in node.attribute if a.name == "axis"), -1 if opset >= 13 else 1)
    return axis


def head_terms(pruned: onnx.ModelProto, dense_tensors: set[str], opset: int) -> list[Term]:
    out: list[Term] = []
    for node in final_nodes(pruned, HEAD_OPS):
        if node.output[0] not in dense_tensors:
            continue
        if node.op_type == "Sigmoid":
            out.append(Term("bce", node.input[0], node.output[0], node.name or node.output[0]))
        elif opset >= 13 or _softmax_axis(node, opset) in (-1,):
            kind = "kl" if node.op_type == "Softmax" else "logkl"
            out.append(Term(kind, node.output[0], node.output[0], node.name or node.output[0],
                            axis=_softmax_axis(node, opset)))
    return out


def _head_only(model: onnx.ModelProto, output: str, heads: set[str]) -> bool:
    """Whether the graph output is a head's probabilities, only re-laid-out (Reshape, Transpose...)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    name = output
    while name not in heads:
        node = producer.get(name)
        if node is None or node.op_type not in LAYOUT_OPS:
            return False
        name = node.input[0]
    return True


def output_terms(pruned: onnx.ModelProto, heads: Sequence[Term]) -> list[Term]:
    from onnxprune.recovery.fidelity import float_outputs

    covered = {t.teacher for t in heads}
    return [Term("mse", name, name, name) for name in float_outputs(pruned) if not _head_only(pruned, name, covered)]


def feature_layers(pruned: onnx.ModelProto, dg: DependencyGraph, removed_roots: set[int],
                   patterns: Sequence[str] | None) -> list[FitLayer]:
    """The layers whose outputs are compared: by default every Conv/ConvTranspose/Gemm/MatMul that lost
    output or input channels; with `patterns`, the layers of those ops whose names match one."""
    direct = direct_nodes(dg, removed_roots)
    dense_nodes = {n.name: n for n in dg.model.graph.node}
    inits = {t.name: t for t in pruned.graph.initializer}
    out: list[FitLayer] = []
    matched: set[str] = set()
    for node in pruned.graph.node:
        if node.op_type not in FIT_OPS or node.name not in dense_nodes:
            continue
        keep = output_keep(dg, removed_roots, dense_nodes[node.name])
        if patterns is None:
            wanted = node.name in direct or keep is not None
        else:
            hits = [p for p in patterns if fnmatch.fnmatchcase(node.name, p)]
            matched.update(hits)
            wanted = bool(hits)
        if wanted:
            bias = matmul_bias(pruned, node, inits)
            out.append(FitLayer(node.name, node.op_type, bias[0].output[0] if bias else node.output[0],
                                node.name in direct, 0, keep, bias[0].name if bias else None))
    missing = [p for p in patterns or () if p not in matched]
    if missing:
        raise OnnxPruneError(f"distill feature layer pattern(s) {missing} match no Conv/ConvTranspose/Gemm/MatMul "
                             "of the pruned model")
    return out


def feature_terms(dense: onnx.ModelProto, dg: DependencyGraph, layers: Sequence[FitLayer],
                  ) -> tuple[onnx.ModelProto, list[Term]]:
    """The teacher (the dense model with each layer's kept channels exposed) and one term per layer."""
    ranks = {x.output: len(s) for x in layers if (s := dg.analysis.view.shape(x.output)) is not None}
    teacher, targets = target_model(dense, list(layers), ranks)
    return teacher, [Term("mse", x.output, targets[x.node], x.node, feature=True) for x in layers]
