"""onnxprune passes as onnx-ir passes (`onnx_ir.passes.FunctionalPass`), for an `onnx_ir.passes.PassManager`
beside onnx-ir's own passes and onnxscript's optimizer.

    import onnx_ir as ir
    from onnxprune.adapters.onnx_ir import OnnxIrPass, prune_pass, quantize_pass
    manager = ir.passes.PassManager([ir.passes.common.RemoveUnusedNodesPass(),
                                     prune_pass(target_macs=0.7, calibration="calib.npz"),
                                     quantize_pass(calibration="calib.npz", target="tensorrt")])
    result = manager(ir.load("model.onnx"))

The model crosses over as an ONNX proto (onnx-ir's serde): onnxprune's passes work on protos, and the
input ir.Model is left as it was (a functional pass). Needs the `onnx-ir` extra.
"""

from __future__ import annotations

from typing import Any

import onnx_ir as ir

from onnxprune.adapters.steps import PrunePass, QuantizePass, SparsifyPass
from onnxprune.passes.base import Pass


class OnnxIrPass(ir.passes.FunctionalPass):  # type: ignore[misc]
    """Any onnxprune Pass as an onnx-ir functional pass; its notes are kept in `self.notes`."""

    def __init__(self, inner: Pass) -> None:
        super().__init__()
        self.inner = inner
        self.notes: list[str] = []

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        result = self.inner(ir.serde.serialize_model(model))
        self.notes = list(result.notes)
        return ir.passes.PassResult(ir.serde.deserialize_model(result.model), result.modified)


def prune_pass(**options: Any) -> OnnxIrPass:
    """Structured pruning (`onnxprune.api.prune` options)."""
    return OnnxIrPass(PrunePass(**options))


def sparsify_pass(**options: Any) -> OnnxIrPass:
    """Unstructured or N:M sparsity (`SparsifyPass` options)."""
    return OnnxIrPass(SparsifyPass(**options))


def quantize_pass(**options: Any) -> OnnxIrPass:
    """Static INT8 with Q/DQ nodes (`QuantizePass` options)."""
    return OnnxIrPass(QuantizePass(**options))
