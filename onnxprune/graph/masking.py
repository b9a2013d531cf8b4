"""Masks at consumer edges: `Mul(tensor, mask)` spliced in front of the consumer.

Both the oracle (masks as constants, verify.py) and the mask probe used by sensitivity scoring
(masks as graph inputs, scoring/mask_probe.py) build their models this way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import helper

from onnxprune.graph.context import ConsumeEdge
from onnxprune.graph.dependency import DependencyGraph


def mask_shape(dg: DependencyGraph, edge: ConsumeEdge) -> tuple[int, ...]:
    """Shape of a mask for `edge`: the track's extent on its axes, 1 elsewhere (broadcasts)."""
    rank = len(dg.analysis.view.shape(edge.tensor) or ())
    return tuple(edge.track.ids.shape[edge.track.axes.index(a)] if a in edge.track.axes else 1
                 for a in range(rank))


def mask_dtype(dg: DependencyGraph, edge: ConsumeEdge) -> np.dtype:
    return dg.analysis.view.dtypes.get(edge.tensor, np.dtype(np.float32))


def splice_masks(model: onnx.ModelProto, masked: Sequence[tuple[int, ConsumeEdge, str]], *, prefix: str,
                 fills: Mapping[int, str] | None = None) -> None:
    """For each (k, edge, mask name): the edge's consumer reads tensor * mask instead of tensor.

    fills: {k: name} adds `+ fill` after the Mul (what a removed position reads instead of 0).
    `model` must be a copy of the analysed model (same node names). The new nodes go right before
    their consumer, so the node list stays topologically sorted.
    """
    nodes = {n.name: n for n in model.graph.node}
    before: dict[str, list[onnx.NodeProto]] = {}
    for k, edge, mask in masked:
        out = f"__{prefix}_masked_{k}"
        new = [helper.make_node("Mul", [edge.tensor, mask], [out], name=f"__{prefix}_mul_{k}")]
        if fills and k in fills:
            new.append(helper.make_node("Add", [out, fills[k]], [f"{out}_filled"], name=f"__{prefix}_fill_{k}"))
            out = f"{out}_filled"
        before.setdefault(edge.node, []).extend(new)
        nodes[edge.node].input[edge.input_index] = out
    ordered: list[onnx.NodeProto] = []
    for n in model.graph.node:
        ordered.extend(before.get(n.name, []))
        ordered.append(n)
    del model.graph.node[:]
    model.graph.node.extend(ordered)
