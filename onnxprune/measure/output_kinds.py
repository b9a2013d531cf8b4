"""What the task reads from each graph output, detected from the graph.

- "threshold": a final Sigmoid read at a threshold: a detector's class scores (YOLOv8's
  [1, 4 + C, anchors]: only the sigmoid channels of axis 1, found by channel id through the Concat)
  or a segmentation probability map (PP-OCR det's [N, 1, H, W]).
- "sequence": a final Softmax over classes with a position axis before it ([N, T, C], CTC recognition):
  the task reads the argmax at every position.
- "classifier": a final Softmax over [N, C], or logits [N, C] of a final Gemm/MatMul: the task reads the argmax.
- "regression": anything else (boxes, embeddings, features): every value counts.

A *final* Sigmoid/Softmax has no Conv/Gemm/MatMul after it (`recovery.heads.final_nodes`) and reaches
the output through ops that keep its values (Concat, Reshape, Transpose, ...). The error each kind
calls for is in `measure.task_error`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from onnxprune.graph.dependency import DependencyGraph
from onnxprune.graph.tracks import map_roots, track_at
from onnxprune.recovery.heads import final_nodes

KINDS = ("threshold", "sequence", "classifier", "regression")
# Ops between a final Sigmoid/Softmax and the output that keep its values (elementwise Mul/Add would not).
KEEP_VALUES = frozenset({"Concat", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Split",
                         "Slice", "Gather", "Cast"})
LOGIT_OPS = frozenset({"Gemm", "MatMul"})


@dataclass(frozen=True)
class OutputKind:
    output: str
    kind: str  # one of KINDS
    reason: str
    channels: np.ndarray | None = None  # threshold: bool over axis 1, True where a sigmoid probability (None: all)
    probabilities: bool = False  # sequence / classifier: softmax probabilities (else logits)
    axis: int = -1  # sequence / classifier: the class axis

    def describe(self) -> str:
        return f"{self.output}: {self.kind} ({self.reason})"


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in model.graph.node for o in n.output}


def _source(name: str, producers: dict[str, onnx.NodeProto], finals: set[str]) -> onnx.NodeProto | None:
    """The final Sigmoid/Softmax whose values reach tensor `name` unchanged (first input of each op), if any."""
    node = producers.get(name)
    while node is not None:
        if node.name in finals:
            return node
        if node.op_type not in KEEP_VALUES:
            return None
        node = producers.get(node.input[0])
    return None


def _reached(name: str, producers: dict[str, onnx.NodeProto], finals: set[str]) -> list[onnx.NodeProto]:
    """The final Sigmoid/Softmax nodes whose values reach tensor `name` through value-keeping ops (any input)."""
    found: list[onnx.NodeProto] = []
    seen: set[str] = set()
    stack = [name]
    while stack:
        node = producers.get(stack.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.name in finals:
            found.append(node)
        elif node.op_type in KEEP_VALUES:
            stack.extend(x for x in node.input if x)
    return found


def _rank(dg: DependencyGraph, name: str) -> int | None:
    shape = dg.analysis.view.shape(name)
    return None if shape is None else len(shape)


def _sigmoid_channels(dg: DependencyGraph, output: str, sigmoids: list[onnx.NodeProto]) -> np.ndarray | None:
    """Over axis 1 of `output`: True where the channel id is one of a final Sigmoid's (None: not traced)."""
    track = track_at(dg.analysis.layouts.get(output, []), 1)
    if track is None or not track.is_single:
        return None
    ids: list[np.ndarray] = []
    for node in sigmoids:
        for t in dg.analysis.layouts.get(node.output[0], []):
            flat = t.ids.ravel()
            ids.append(flat[flat >= 0])
    if not ids:
        return None
    roots = np.unique(map_roots(dg.analysis.roots, np.concatenate(ids)))
    mask = np.isin(map_roots(dg.analysis.roots, track.ids), roots) & (track.ids >= 0)
    return mask if mask.any() else None


def _softmax_axis(node: onnx.NodeProto, rank: int) -> int:
    axis = next((int(a.i) for a in node.attribute if a.name == "axis"), -1)
    return axis % rank


def output_kind(dg: DependencyGraph, output: str) -> OutputKind:
    """The kind of one graph output of `dg.model` (see the module doc)."""
    model = dg.model
    producers = _producers(model)
    sigmoids = final_nodes(model, ("Sigmoid",))
    softmaxes = final_nodes(model, ("Softmax",))
    rank = _rank(dg, output)
    src = _source(output, producers, {n.name for n in sigmoids + softmaxes})
    if src is not None and src.op_type == "Softmax" and rank in (2, 3):
        axis = _softmax_axis(src, rank)
        if axis == rank - 1:
            kind = "sequence" if rank == 3 else "classifier"
            what = "over classes at every position" if rank == 3 else "over classes"
            return OutputKind(output, kind, f"final Softmax {src.name} {what}", probabilities=True, axis=axis)
    if src is not None and src.op_type == "Sigmoid":
        return OutputKind(output, "threshold", f"final Sigmoid {src.name}")
    reached = _reached(output, producers, {n.name for n in sigmoids})
    if reached and rank is not None and rank >= 2:
        channels = _sigmoid_channels(dg, output, reached)
        if channels is not None:
            return OutputKind(output, "threshold", f"{int(channels.sum())} of {channels.size} channels from final "
                              f"Sigmoid {', '.join(n.name for n in reached[:2])}", channels=channels)
    node = producers.get(output)
    if node is not None and node.op_type == "Add":  # the bias of a MatMul
        node = producers.get(node.input[0])
    shape = dg.analysis.view.shape(output)
    if node is not None and node.op_type in LOGIT_OPS and shape is not None and len(shape) == 2 and shape[1] != 1:
        return OutputKind(output, "classifier", f"logits [N, C] of final {node.op_type} {node.name}", axis=1)
    return OutputKind(output, "regression", "no final Sigmoid or Softmax, not [N, C] logits")


def output_kinds(dg: DependencyGraph) -> dict[str, OutputKind]:
    """Every graph output's kind, by name."""
    return {o.name: output_kind(dg, o.name) for o in dg.model.graph.output}
