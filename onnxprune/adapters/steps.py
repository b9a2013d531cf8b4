"""onnxprune's deployment steps as onnxprune Passes: structured pruning, sparsity, INT8 quantization.

`SparsifyPass` and `QuantizePass` live with their code; `PrunePass` wraps `onnxprune.api.prune`
(analysis, plan, apply, optional verification and re-fit) so that a PassManager, or another
toolchain through an adapter, can chain prune -> sparsify -> quantize on one calibration source.
"""

from __future__ import annotations

from typing import Any

import onnx

from onnxprune.deploy.quantize import QuantizePass
from onnxprune.passes.base import Pass, PassResult
from onnxprune.passes.sparsify import SparsifyPass

__all__ = ["PrunePass", "QuantizePass", "SparsifyPass"]


class PrunePass(Pass):
    """`onnxprune.api.prune(model, **options)` as a Pass (ratio=, target_macs=, calibration=, verify=, ...)."""

    name = "prune"

    def __init__(self, **options: Any) -> None:
        self.options = options

    def call(self, model: onnx.ModelProto) -> PassResult:
        from onnxprune.api import prune

        result = prune(model, **self.options)
        notes = [f"removed {result.removed_slots} channel slots", *result.notes]
        return PassResult(result.model, result.removed_slots > 0, notes)
