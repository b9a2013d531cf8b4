"""Graph-to-graph transforms (normalise, prune, sparsify, reconstruct, cleanup)."""

from __future__ import annotations

from onnxprune.passes.base import Pass, PassManager, PassResult, plugin_passes, resolve_passes

__all__ = ["Pass", "PassManager", "PassResult", "plugin_passes", "resolve_passes"]
