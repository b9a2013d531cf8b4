"""Which weights a sparsify run may touch, and why the others are skipped."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from onnxprune.io.external import new_tensor, tensor_array
from onnxprune.io.model_check import all_nodes
from onnxprune.sparsity.layout import WeightSite, weight_sites

OPS = ("Conv", "Gemm", "MatMul")


@dataclass(frozen=True)
class Target:
    """A sparsifiable weight: its site (layout.py), the node, and what the activation stats need."""

    site: WeightSite
    node: onnx.NodeProto
    key: str  # node name, or first output if unnamed (activations.node_key)
    group: int
    input: str
    input_axis: int  # channel axis of the data input holding the reduction index


def _attr_i(node: onnx.NodeProto, name: str, default: int) -> int:
    return next((int(helper.get_attribute_value(a)) for a in node.attribute if a.name == name), default)


def _input_axis(node: onnx.NodeProto) -> int:
    if node.op_type == "MatMul":
        return -1
    if node.op_type == "Gemm":
        return 0 if _attr_i(node, "transA", 0) else 1
    return 1


def reduction_length(site: WeightSite) -> int:
    """Length of one output row: C/g*kh*kw for a Conv, K for Gemm/MatMul."""
    if site.op_type == "Conv":
        return int(np.prod(site.shape[1:], dtype=np.int64))
    return site.shape[site.reduction_axis]


def _reason(site: WeightSite, uses: Counter[str], graph_io: set[str], init: onnx.TensorProto,
            pattern: tuple[int, int] | None, method: str, min_reduction: int) -> str | None:
    if uses[site.initializer] > 1:
        return f"weight shared by {uses[site.initializer]} nodes"
    if site.initializer in graph_io:
        return "weight is also a graph input/output"
    if np.dtype(helper.tensor_dtype_to_np_dtype(init.data_type)).kind != "f":
        return "weight is not floating point"
    if 0 in site.shape:
        return f"weight holds no values (shape {list(site.shape)})"
    if reduction_length(site) < min_reduction:
        return f"rows of {reduction_length(site)} weights, below --min-reduction {min_reduction}"
    if pattern and site.shape[site.reduction_axis] % pattern[1]:
        return f"reduction length {site.shape[site.reduction_axis]} is not a multiple of {pattern[1]}"
    if method == "sparsegpt":
        if site.op_type == "Conv" and len(site.shape) not in (3, 4):
            return "sparsegpt supports 1-D and 2-D convs only"
        if site.op_type != "Conv" and len(site.shape) != 2:
            return f"sparsegpt needs a 2-D weight (rank {len(site.shape)})"
    return None


def select_targets(model: onnx.ModelProto, *, pattern: tuple[int, int] | None,
                   method: str, min_reduction: int = 0) -> tuple[list[Target], list[str]]:
    """Targets in graph order, and one 'skipped ...' line per weight left alone.

    method "sparsegpt" also stands for any Gram-based run (re-fits): 2-D views only.
    """
    inits = {t.name: t for t in model.graph.initializer}
    uses = Counter(name for n in all_nodes(model.graph) for name in n.input if name in inits)
    graph_io = {v.name for v in (*model.graph.input, *model.graph.output)}
    skipped = [f"skipped {n.name or n.output[0]} ({n.op_type}): weight {n.input[1]!r} is not an initializer"
               for n in model.graph.node
               if n.op_type in OPS and len(n.input) > 1 and n.input[1] and n.input[1] not in inits]
    nodes = list(model.graph.node)
    targets: list[Target] = []
    for site in weight_sites(model):
        node = next(n for n in nodes if n.name == site.node and n.op_type == site.op_type
                    and len(n.input) > 1 and n.input[1] == site.initializer)
        key = node.name or node.output[0]
        reason = _reason(site, uses, graph_io, inits[site.initializer], pattern, method, min_reduction)
        if reason:
            skipped.append(f"skipped {key} ({site.op_type}): {reason}")
            continue
        targets.append(Target(site, node, key, _attr_i(node, "group", 1), node.input[0], _input_axis(node)))
    return targets, skipped


def read_weight(model: onnx.ModelProto, name: str) -> np.ndarray:
    t = next(t for t in model.graph.initializer if t.name == name)
    return tensor_array(t)


def write_weight(model: onnx.ModelProto, name: str, value: np.ndarray) -> None:
    for t in model.graph.initializer:
        if t.name == name:
            dtype = helper.tensor_dtype_to_np_dtype(t.data_type)
            t.CopyFrom(new_tensor(model, value.astype(dtype), name))
            return
    raise KeyError(name)
