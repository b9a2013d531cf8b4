"""Which layers of a pruned model to re-fit, in which waves, and which dense tensor each one targets.

A layer is *direct* when its weight lost input channels (a `weight-in` member whose ids meet the
removed slots), or when it is the next layer after a dropped residual block (`changed`). With `propagate`, every Conv/ConvTranspose/Gemm/MatMul downstream of a direct layer
is re-fitted too: its input differs from the dense model's once anything upstream changed.

Waves: a layer's wave is one more than the highest wave among the re-fitted layers upstream of it,
so all layers of one wave can be fitted on statistics gathered in one calibration pass.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxprune.calib.convtranspose import unsupported_transpose
from onnxprune.graph.apply import ApplyContext
from onnxprune.graph.context import ROLE_WEIGHT_IN
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.graph.tracks import Track, track_at

FIT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
CONV_OPS = ("Conv", "ConvTranspose")  # channels on axis 1 of the output


@dataclass(frozen=True)
class FitLayer:
    node: str  # node name (the same in the dense and the pruned model)
    op_type: str
    output: str  # the fitted tensor (same name in both models): the node's output, or its bias Add's
    direct: bool  # lost input channels (else: re-fitted because its input changed upstream)
    wave: int
    out_keep: np.ndarray | None  # dense output channels that survive (None: all)
    bias_node: str | None = None  # MatMul: the Add of a constant bias that follows it (fitted as its bias)


def _attr_i(node: onnx.NodeProto, name: str, default: int) -> int:
    return next((int(a.i) for a in node.attribute if a.name == name), default)


def direct_nodes(dg: DependencyGraph, removed_roots: set[int]) -> set[str]:
    """Nodes whose constant weight is sliced along its reduction axis by this removal."""
    actx = ApplyContext(dg.model, dg.analysis.roots, removed_roots)
    return {m.node for m in dg.analysis.members
            if m.role == ROLE_WEIGHT_IN and not actx.keep(m.track.ids).all()}


def output_track(dg: DependencyGraph, node: onnx.NodeProto) -> tuple[Track, int] | None:
    """The track over the channel axis of the node's output (axis 1 for convs, last otherwise), and that axis."""
    shape = dg.analysis.view.shape(node.output[0])
    if shape is None:
        return None
    axis = 1 if node.op_type in CONV_OPS else len(shape) - 1
    track = track_at(dg.analysis.layouts.get(node.output[0], []), axis)
    return None if track is None else (track, axis)


def output_keep(dg: DependencyGraph, removed_roots: set[int], node: onnx.NodeProto) -> np.ndarray | None:
    """Keep mask over the channel axis of the node's dense output (None when nothing is removed)."""
    found = output_track(dg, node)
    if found is None:
        return None
    track, axis = found
    actx = ApplyContext(dg.model, dg.analysis.roots, removed_roots)
    keep = actx.keep(track.ids) if track.is_single else actx.kept_along(track.ids, track.axes.index(axis))
    return None if keep.all() else keep


def unsupported(model: onnx.ModelProto, node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> str | None:
    """Why this node cannot be re-fitted (None if it can)."""
    if node.op_type not in FIT_OPS:
        return f"{node.op_type}: no least-squares re-fit for this op (kept as pruned)"
    if len(node.input) < 2 or node.input[1] not in inits:
        return f"{node.op_type}: weight is not an initializer"
    if node.input[0] in inits:
        return f"{node.op_type}: data input is a constant"
    w = inits[node.input[1]]
    if w.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE):
        return f"{node.op_type}: weight is not floating point"
    if node.op_type == "Conv" and len(w.dims) not in (3, 4):
        return "Conv: only 1-D and 2-D convolutions"
    if node.op_type == "ConvTranspose":
        return unsupported_transpose(node, [int(d) for d in w.dims])
    if node.op_type in ("Gemm", "MatMul") and len(w.dims) != 2:
        return f"{node.op_type}: weight is not 2-D"
    if node.op_type == "Gemm" and _attr_float(node, "alpha", 1.0) == 0.0:
        return "Gemm: alpha is 0"
    return None


def _attr_float(node: onnx.NodeProto, name: str, default: float) -> float:
    for a in node.attribute:
        if a.name == name:
            return float(helper.get_attribute_value(a))
    return default


def matmul_bias(model: onnx.ModelProto, node: onnx.NodeProto,
                inits: dict[str, onnx.TensorProto]) -> tuple[onnx.NodeProto, int] | None:
    """The Add(MatMul output, constant [.., N]) that is the only reader of a MatMul: (node, const index)."""
    out = node.output[0]
    readers = [n for n in model.graph.node if out in n.input]
    if node.op_type != "MatMul" or len(readers) != 1 or readers[0].op_type != "Add" or \
            any(o.name == out for o in model.graph.output):
        return None
    add = readers[0]
    other = 1 if add.input[0] == out else 0
    if len(add.input) != 2 or add.input[other] not in inits or add.input[1 - other] != out:
        return None
    dims = [int(d) for d in inits[add.input[other]].dims]
    n = int(inits[node.input[1]].dims[-1])
    if not dims or dims[-1] != n or any(d != 1 for d in dims[:-1]):
        return None
    return add, other


def next_layers(model: onnx.ModelProto, changed: Collection[str]) -> set[str]:
    """The layers with a constant weight that read a `changed` tensor, directly or through ops
    without weights (the next layers after a dropped block)."""
    inits = {t.name for t in model.graph.initializer}
    reach, out = set(changed), set()
    for node in model.graph.node:
        weighted = node.op_type in FIT_OPS and len(node.input) > 1 and node.input[1] in inits
        if weighted and node.input[0] in reach:
            out.add(node.name)
        elif not weighted and any(x in reach for x in node.input):
            reach.update(node.output)
    return out


def plan_layers(pruned: onnx.ModelProto, dg: DependencyGraph, removed_roots: set[int], *,
                propagate: bool = True, changed: Collection[str] = ()) -> tuple[list[FitLayer], list[str]]:
    """The layers to re-fit (in topological order, with waves) and `node: reason` for those skipped.
    `changed`: tensors of `pruned` whose values differ from the dense model's for another reason
    than removed channels (a dropped block's output): the next layers reading them are direct."""
    direct = direct_nodes(dg, removed_roots) | next_layers(pruned, changed)
    inits = {t.name: t for t in pruned.graph.initializer}
    dense_nodes = {n.name: n for n in dg.model.graph.node}
    level: dict[str, int] = {}  # tensor -> highest wave of a re-fitted layer upstream (absent: none)
    dirty: set[str] = set(changed)  # tensors downstream of a direct layer or a changed tensor
    layers: list[FitLayer] = []
    skipped: list[str] = []
    for node in pruned.graph.node:
        ins = [x for x in node.input if x]
        in_level = max((level[x] for x in ins if x in level), default=-1)
        is_dirty = any(x in dirty for x in ins[:1]) if node.op_type in FIT_OPS else any(x in dirty for x in ins)
        wanted = node.name in direct or (propagate and is_dirty and node.op_type in FIT_OPS
                                         and len(node.input) > 1 and node.input[1] in inits)
        wave = in_level
        if wanted:
            reason = unsupported(pruned, node, inits)
            if reason is None and node.name not in dense_nodes:
                reason = "not in the dense model"
            if reason is None:
                wave = in_level + 1
                bias = matmul_bias(pruned, node, inits)
                layers.append(FitLayer(node.name, node.op_type, bias[0].output[0] if bias else node.output[0],
                                       node.name in direct, wave,
                                       output_keep(dg, removed_roots, dense_nodes[node.name]),
                                       bias[0].name if bias else None))
            else:
                skipped.append(f"{node.name}: {reason}")
        for o in node.output:
            if wave >= 0:
                level[o] = wave
            if wanted or any(x in dirty for x in ins):
                dirty.add(o)
    return layers, skipped


def waves(layers: list[FitLayer]) -> list[list[FitLayer]]:
    out: dict[int, list[FitLayer]] = {}
    for layer in layers:
        out.setdefault(layer.wave, []).append(layer)
    return [out[k] for k in sorted(out)]


def target_model(dense: onnx.ModelProto, layers: list[FitLayer],
                 ranks: dict[str, int]) -> tuple[onnx.ModelProto, dict[str, str]]:
    """The dense model with each layer's kept output channels exposed: ({node: target tensor})."""
    m = onnx.ModelProto()
    m.CopyFrom(dense)
    targets: dict[str, str] = {}
    for i, layer in enumerate(layers):
        if layer.out_keep is None:
            targets[layer.node] = layer.output
            continue
        idx_name, out_name = f"__reconstruct_idx{i}", f"__reconstruct_y{i}"
        axis = 1 if layer.op_type in CONV_OPS else ranks.get(layer.output, 2) - 1
        idx = np.flatnonzero(layer.out_keep).astype(np.int64)
        m.graph.initializer.append(numpy_helper.from_array(idx, idx_name))
        m.graph.node.append(helper.make_node("Gather", [layer.output, idx_name], [out_name], axis=axis,
                                             name=f"__reconstruct_gather{i}"))
        targets[layer.node] = out_name
    return m, targets


def use_counts(model: onnx.ModelProto) -> Counter[str]:
    """How many node inputs and graph outputs read each tensor name."""
    c: Counter[str] = Counter(x for n in model.graph.node for x in n.input if x)
    c.update(o.name for o in model.graph.output)
    return c
