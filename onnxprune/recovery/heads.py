"""Which re-fitted layers produce the logits of a final Sigmoid or Softmax, and how their rows are weighted.

A detector decides on `sigmoid(logit) >= threshold`. A least-squares fit of its score layer weighs
every output position alike, and almost every position is background (logits of -8 and below,
where an error of 2 changes nothing), so the few positions that carry an object, where a small
logit error moves a score across the threshold, hardly count. Linearised in probability space the
error is `sigmoid'(y) * (y' - y)`, so for these layers each row (output position) is weighted by
the dense model's largest sigmoid slope over its logit channels:

    w = floor + 4 * max_c sigmoid'(y_c)        (4 * sigmoid'(0) = 1)

`floor` keeps background rows in the fit, so they cannot drift up unpenalised. The same holds for
a segmentation map read at a threshold (PP-OCR det's final Sigmoid).

A final Softmax (a CTC recogniser's [N, T, classes], a classifier's [N, classes]) is read by its
argmax: a row (a position) flips when the gap between its two largest logits closes. The error
that matters is the change of that gap, largest where the gap is small, so these layers weight
each row by the same slope taken at the dense top-2 gap (`MarginWeight`):

    w = floor + 4 * sigmoid'(y_top1 - y_top2)

(for two classes this is the sigmoid's own slope at the logit difference). Confident positions
(a CTC blank at 0.999) hardly count; positions where two characters compete count fully.

A *final* Sigmoid/Softmax is one with no Conv/Gemm/MatMul downstream; its logit channels are found
by channel id (the dependency graph's union-find), through the Concat/Reshape/Split between layer
and head.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from onnxprune.graph.dependency import DependencyGraph
from onnxprune.graph.tracks import map_roots
from onnxprune.recovery.layers import output_track

LINEAR_OPS = frozenset({"Conv", "Gemm", "MatMul", "ConvTranspose"})
DEFAULT_FLOOR = 0.01
HEAD_OPS = ("Sigmoid", "Softmax")


def final_sigmoids(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Sigmoid nodes with a graph output downstream and no Conv/Gemm/MatMul after them."""
    return final_nodes(model, ("Sigmoid",))


def final_nodes(model: onnx.ModelProto, op_types: tuple[str, ...]) -> list[onnx.NodeProto]:
    """Nodes of `op_types` with a graph output downstream and no Conv/Gemm/MatMul after them."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for x in n.input:
            readers.setdefault(x, []).append(n)
    outputs = {o.name for o in model.graph.output}
    out: list[onnx.NodeProto] = []
    for node in model.graph.node:
        if node.op_type not in op_types:
            continue
        seen, stack, reaches, linear = set(), [node.output[0]], False, False
        while stack and not linear:
            t = stack.pop()
            if t in seen:
                continue
            seen.add(t)
            reaches = reaches or t in outputs
            for r in readers.get(t, []):
                linear = linear or r.op_type in LINEAR_OPS
                stack.extend(r.output)
        if reaches and not linear:
            out.append(node)
    return out


def logit_roots(dg: DependencyGraph, op_type: str = "Sigmoid") -> np.ndarray:
    """Union-find roots of every channel id entering a final node of `op_type` (Sigmoid or Softmax)."""
    ids: list[np.ndarray] = []
    for node in final_nodes(dg.model, (op_type,)):
        for track in dg.analysis.layouts.get(node.input[0], []):
            flat = track.ids.ravel()
            ids.append(flat[flat >= 0])
    if not ids:
        return np.zeros(0, dtype=np.int64)
    return np.unique(map_roots(dg.analysis.roots, np.concatenate(ids)))


def logit_mask(dg: DependencyGraph, node: onnx.NodeProto, roots: np.ndarray) -> np.ndarray | None:
    """Over the node's dense output channels: True where the channel's root is in `roots` (`logit_roots`)."""
    found = output_track(dg, node) if roots.size else None
    if found is None or not found[0].is_single:
        return None
    track = found[0]
    mask = np.isin(map_roots(dg.analysis.roots, track.ids), roots) & (track.ids >= 0)
    return mask if mask.any() else None


@dataclass(frozen=True)
class SlopeWeight:
    """Row weights from the dense target rows Y [rows, k]: floor + 4 * max over `columns` of sigmoid'(y)."""

    columns: np.ndarray  # bool [k]: which target columns are logits
    floor: float = DEFAULT_FLOOR

    def __call__(self, y: np.ndarray) -> np.ndarray:
        z = np.asarray(y, dtype=np.float64)[:, self.columns]
        s = 1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))
        return self.floor + 4.0 * (s * (1.0 - s)).max(axis=1)


@dataclass(frozen=True)
class MarginWeight:
    """Row weights from the dense target rows Y [rows, k]: floor + 4 * sigmoid'(top-1 − top-2 over `columns`)."""

    columns: np.ndarray  # bool [k]: which target columns are a final Softmax's logits
    floor: float = DEFAULT_FLOOR

    def __call__(self, y: np.ndarray) -> np.ndarray:
        z = np.asarray(y, dtype=np.float64)[:, self.columns]
        if z.shape[1] < 2:
            return np.full(z.shape[0], self.floor + 1.0)
        top = np.partition(z, z.shape[1] - 2, axis=1)[:, -2:]
        s = 1.0 / (1.0 + np.exp(-np.clip(top[:, 1] - top[:, 0], -60.0, 60.0)))
        return self.floor + 4.0 * s * (1.0 - s)


WEIGHTS: dict[str, type[SlopeWeight] | type[MarginWeight]] = {"Sigmoid": SlopeWeight, "Softmax": MarginWeight}
