"""`obs`: structured Optimal Brain Surgeon over every re-fittable consumer of a group.

A channel is cheap when the layers that read it can do without it *after a least-squares re-fit*,
which is what `reconstruct` then does. For each consume edge of the group whose node can be
re-fitted (Conv, ConvTranspose, Gemm, MatMul with a constant weight: `recovery.layers.unsupported`),
the dense model's input Gram of that node is gathered on the calibration data (one pass over every
such node, im2col for convs), and `scoring.surgeon` scores the group's slots by a greedy removal in
`rounds` rounds: each round removes the slots whose removal, re-fitted, raises the summed relative
output error of those layers least. With rounds=1 the scores are the independent OBS costs.

Consumers that cannot be re-fitted (an attention Mul, a Resize feeding a graph output), or whose
Gram has more than MAX_COLUMNS columns, add no cost; a group with no such consumer left falls back
to l2 magnitude. Grams are held as float64 H⁻¹ for
every scored layer (d² · 8 bytes each, d = C/g · kh · kw).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import onnx

from onnxprune.calib.collect import DEFAULT_MAX_ROWS, collect_stats
from onnxprune.calib.layer_grams import node_key
from onnxprune.calib.stats import GramStats
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.graph.groups import Group
from onnxprune.graph.tracks import map_roots
from onnxprune.io.types import FeedFactory
from onnxprune.recovery.layer_weights import LayerWeights, read_layer
from onnxprune.recovery.layers import FIT_OPS, matmul_bias, unsupported
from onnxprune.scoring.calibrated import CalibratedImportance
from onnxprune.scoring.edge_stats import group_edges
from onnxprune.scoring.importance import register_importance
from onnxprune.scoring.magnitude import WEIGHT_ROLES, Magnitude
from onnxprune.scoring.surgeon import LayerSurgeon, damped_inverse, greedy_scores

DEFAULT_ROUNDS = 16
DEFAULT_DAMP = 1e-3  # as reconstruction's
GRAM_CHUNK_BYTES = 1 << 30  # Grams gathered at once in one calibration pass
MAX_COLUMNS = 8192  # larger consumer layers add no cost (an 8192-column H⁻¹ is 512 MB, its inverse O(d³))


def centred(g: GramStats, *, bias: bool) -> np.ndarray:
    """XᵀX, or with a bias column its Schur complement XᵀX − Σx Σxᵀ / n (the bias absorbs the means)."""
    h = g.hessian
    if bias and g.xsum is not None and g.rows > 0:
        h = h - np.outer(g.xsum, g.xsum) / g.rows
    return np.asarray((h + h.T) / 2.0)


def output_energy(w: np.ndarray, h: np.ndarray) -> float:
    """tr(W H Wᵀ) through one matrix product (a three-operand einsum here runs without BLAS: 100x slower)."""
    return float(np.sum((w @ h) * w))


def input_columns(node: onnx.NodeProto, weight_shape: tuple[int, ...]) -> tuple[int, int]:
    """(input channels C, Gram columns per channel) of a fit layer: kernel taps for convs, else 1."""
    if node.op_type == "Conv":
        group = next((int(a.i) for a in node.attribute if a.name == "group"), 1)
        return weight_shape[1] * group, int(np.prod(weight_shape[2:]))
    if node.op_type == "ConvTranspose":
        return weight_shape[0], int(np.prod(weight_shape[2:]))
    if node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute):
        return weight_shape[1], 1
    return weight_shape[0], 1


def layer_columns(node: onnx.NodeProto, weight_shape: tuple[int, ...]) -> tuple[int, int]:
    """(conv groups, columns of one group's input Gram) of a fit layer: C/g · kh · kw, or the input features."""
    channels, per = input_columns(node, weight_shape)
    group = next((int(a.i) for a in node.attribute if a.name == "group"), 1) if "Conv" in node.op_type else 1
    return max(group, 1), channels // max(group, 1) * per


def gram_columns(dg: DependencyGraph, node: onnx.NodeProto) -> int:
    """Columns of one (conv group's) input Gram of a fit layer."""
    return layer_columns(node, tuple(dg.analysis.view.array(node.input[1]).shape))[1]


def read_fit_layer(model: onnx.ModelProto, node: onnx.NodeProto, inits: dict[str, onnx.TensorProto],
                   ) -> tuple[LayerWeights, tuple[onnx.NodeProto, int] | None]:
    """A fit layer's effective weights, and for a MatMul the bias Add it is fitted with (if any)."""
    bias = matmul_bias(model, node, inits) if node.op_type == "MatMul" else None
    return read_layer(model, node, bias), bias


def gram_bytes(model: onnx.ModelProto, *, max_columns: int = MAX_COLUMNS) -> int:
    """The memory obs would hold on `model`: a float64 Gram and its H⁻¹ per (conv group of a) layer with
    a constant weight (an initializer or a Constant node) and at most `max_columns` columns. An upper
    bound, read from the graph alone: the analysis may leave some of these layers out."""
    shapes = {t.name: tuple(t.dims) for t in model.graph.initializer}
    shapes.update({n.output[0]: tuple(a.t.dims) for n in model.graph.node if n.op_type == "Constant"
                   for a in n.attribute if a.name == "value"})
    total = 0
    for node in model.graph.node:
        shape = shapes.get(node.input[1]) if node.op_type in FIT_OPS and len(node.input) > 1 else None
        if shape is None or len(shape) < 2:
            continue
        group, d = layer_columns(node, shape)
        if d <= max_columns:
            total += 2 * 8 * group * d * d
    return total


def fit_nodes(dg: DependencyGraph, *, max_columns: int = MAX_COLUMNS) -> dict[str, onnx.NodeProto]:
    """Consumer nodes of prunable groups that can be re-fitted, by name; layers whose Gram has more than
    `max_columns` columns are left out (VGG's first classifier Gemm reads 25088 features: a 5 GB H⁻¹)."""
    inits = {t.name: t for t in dg.model.graph.initializer}
    nodes = {n.name: n for n in dg.model.graph.node}
    out: dict[str, onnx.NodeProto] = {}
    for e in dg.analysis.consume_edges:
        node = nodes.get(e.node)
        if node is not None and e.input_index == 0 and unsupported(dg.model, node, inits) is None \
                and gram_columns(dg, node) <= max_columns:
            out[e.node] = node
    return out


def collect_grams(dg: DependencyGraph, nodes: Iterable[onnx.NodeProto], batches: FeedFactory, *,
                  max_rows: int | None = DEFAULT_MAX_ROWS) -> dict[str, GramStats | list[GramStats]]:
    """Input Grams of `nodes` on the dense model, one pass over `batches()` per GRAM_CHUNK_BYTES of Grams."""
    todo = list(nodes)
    out: dict[str, GramStats | list[GramStats]] = {}
    chunk: list[str] = []
    used = 0
    for i, node in enumerate(todo):
        group, d = layer_columns(node, tuple(dg.analysis.view.array(node.input[1]).shape))
        chunk.append(node_key(node))
        used += 8 * group * d * d
        if used >= GRAM_CHUNK_BYTES or i == len(todo) - 1:
            st = collect_stats(dg.model, batches(), grams=chunk, max_rows=max_rows, seed=0)
            out.update({k: lg.groups for k, lg in st.grams.items()})
            chunk, used = [], 0
    return out


@dataclass
class ConsumerSurgeon:
    """One (conv group of a) consumer layer of a group: its surgeon, and what rebuilds the layer.

    layer: the node's effective weights as read (the surgeon starts from `layer.weights[index]`);
    mean: the mean Gram column (Σx / rows) when the layer has a bias, which then absorbs the mean
    shift of a re-fit (b' = b + (W − W')·mean); bias_add: a MatMul's bias Add (recovery.layers.matmul_bias).
    """

    node: onnx.NodeProto
    index: int
    surgeon: LayerSurgeon
    layer: LayerWeights
    mean: np.ndarray | None
    bias_add: tuple[onnx.NodeProto, int] | None


def consumer_surgeons(dg: DependencyGraph, group: Group, grams: Mapping[str, GramStats | list[GramStats]],
                      fit_nodes: Mapping[str, onnx.NodeProto], *, damp: float) -> list[ConsumerSurgeon]:
    """Fresh surgeons for every re-fittable consume edge of `group` (see the module doc)."""
    inits = {t.name: t for t in dg.model.graph.initializer}
    out: list[ConsumerSurgeon] = []
    for e in group_edges(dg, group):
        node = fit_nodes.get(e.node)
        gs = grams.get(node_key(node)) if node is not None else None
        if node is None or not isinstance(gs, list):
            continue
        lw, bias = read_fit_layer(dg.model, node, inits)
        channels, per = input_columns(node, tuple(dg.analysis.view.array(node.input[1]).shape))
        ids = e.track.ids.reshape(-1) if e.track.is_single else None
        if ids is None or ids.size != channels or len(gs) != len(lw.weights):
            continue
        roots = np.repeat(map_roots(dg.analysis.roots, ids), per)
        index = np.searchsorted(group.slots, roots)
        clipped = np.clip(index, 0, group.size - 1)
        slots = np.where((roots >= 0) & (group.slots[clipped] == roots), clipped, -1)
        d = lw.weights[0].shape[1]
        if any(g.xtx is None or g.xtx.shape != (d, d) for g in gs):
            continue
        hs = [centred(g, bias=lw.has_bias) for g in gs]
        # one energy for the whole layer: a depthwise conv's groups are compared with each other
        energy = sum(output_energy(wg, h) for wg, h in zip(lw.weights, hs, strict=True))
        for gi, (h, wg, g) in enumerate(zip(hs, lw.weights, gs, strict=True)):
            col_slots = slots[gi * d:(gi + 1) * d]
            if (col_slots >= 0).any():
                mean = g.xsum / g.rows if lw.has_bias and g.xsum is not None and g.rows > 0 else None
                out.append(ConsumerSurgeon(node, gi, LayerSurgeon(wg, damped_inverse(h, damp), col_slots, energy),
                                           lw, mean, bias))
    return out


class SurgeonImportance(CalibratedImportance):
    name = "obs"
    producers = False

    def __init__(self, *, rounds: int = DEFAULT_ROUNDS, damp: float = DEFAULT_DAMP,
                 max_rows: int | None = DEFAULT_MAX_ROWS, max_columns: int = MAX_COLUMNS) -> None:
        super().__init__()
        self.rounds, self.damp, self.max_rows, self.max_columns = rounds, damp, max_rows, max_columns

    def fit_nodes(self, dg: DependencyGraph) -> dict[str, onnx.NodeProto]:
        return self.cached(dg, "fit_nodes", lambda: fit_nodes(dg, max_columns=self.max_columns))

    def grams(self, dg: DependencyGraph) -> dict[str, GramStats | list[GramStats]]:
        return self.cached(dg, "grams", lambda: collect_grams(dg, self.fit_nodes(dg).values(),
                                                              lambda: self.batches(dg), max_rows=self.max_rows))

    def surgeons(self, dg: DependencyGraph, group: Group) -> list[LayerSurgeon]:
        return [c.surgeon for c in consumer_surgeons(dg, group, self.grams(dg), self.fit_nodes(dg), damp=self.damp)]

    def __call__(self, dg: DependencyGraph, group: Group) -> np.ndarray:
        surgeons = self.surgeons(dg, group)
        if not surgeons:
            return Magnitude(p=2.0, roles=WEIGHT_ROLES, name="l2")(dg, group)
        return greedy_scores(surgeons, group.size, rounds=self.rounds)


@register_importance("obs")
def _obs() -> SurgeonImportance:
    return SurgeonImportance()
