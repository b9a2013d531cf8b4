"""Bias-free dense layer outputs, the least-squares targets of the kept weights.

For every target layer the dense model gets a copy of its node without the bias (Conv without B,
Gemm without C and with alpha 1) writing `<key>__onnxprune_xw`, so Y = X_dense · W_dense exactly.
`collect_stats(pruned, ..., targets=..., target_model=<this model>)` then gives X_prunedᵀ Y: the
re-fit of a layer reproduces the *dense* layer's output from the *pruned* model's input, so errors
of earlier layers are corrected instead of compounded.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx
from onnx import helper

from onnxprune.sparsity.sites import Target

SUFFIX = "__onnxprune_xw"


def _bias_free(node: onnx.NodeProto, out: str) -> onnx.NodeProto:
    attrs = [a for a in node.attribute if not (node.op_type == "Gemm" and a.name in ("alpha", "beta"))]
    copy = helper.make_node(node.op_type, list(node.input[:2]), [out], name=out, domain=node.domain or None)
    copy.attribute.extend(attrs)
    return copy


def with_bias_free_outputs(dense: onnx.ModelProto, targets: Sequence[Target]) -> tuple[onnx.ModelProto, dict[str, str]]:
    """A copy of `dense` computing X·W (no bias, alpha 1) for each target; returns it and {key: tensor}."""
    model = onnx.ModelProto()
    model.CopyFrom(dense)
    names: dict[str, str] = {}
    taken = {o for n in model.graph.node for o in n.output} | {i.name for i in model.graph.input}
    for t in targets:
        out = f"{t.key}{SUFFIX}"
        while out in taken:
            out += "_"
        taken.add(out)
        model.graph.node.append(_bias_free(t.node, out))
        names[t.key] = out
    return model, names
