"""Record the pruned model's inferred shapes as value_info, as exporters do for the original.

ApplyPlan drops every intermediate value_info (its channel counts are stale). A runtime then infers
shapes itself, but without ONNX's data propagation: on a model with symbolic input dims (YOLOv8's
`batch, 3, height, width`) ONNX Runtime no longer learns the static sizes that its Shape → Gather →
Slice folding needs, and the pruned graph keeps nodes the original had folded (real YOLOv8n:
309 optimised nodes instead of 302). Shape inference with data propagation restores them.
"""

from __future__ import annotations

import onnx

from onnxprune.io import skeleton
from onnxprune.passes.base import Pass, PassResult


class AnnotateShapes(Pass):
    """Replace the intermediate value_info by ONNX shape inference with data propagation (in place).

    Inference that fails leaves the model as it is (a runtime infers what it can)."""

    name = "annotate-shapes"

    def call(self, model: onnx.ModelProto) -> PassResult:
        try:
            inferred = skeleton.infer(model, data_prop=True)
        except Exception:  # noqa: BLE001 - inference raises several types on odd models
            return PassResult(model, False, ["shape inference failed: value_info left out"])
        io = {v.name for v in (*model.graph.input, *model.graph.output)}
        vis = [v for v in inferred.graph.value_info if v.name not in io and v.type.tensor_type.HasField("shape")]
        del model.graph.value_info[:]
        model.graph.value_info.extend(vis)
        return PassResult(model, bool(vis), [f"{len(vis)} tensor shapes recorded"])
