"""Carry out a plan: slice every constant member, run each node's rewrite hook, drop stale shapes."""

from __future__ import annotations

import copy
from collections import defaultdict

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune import skeleton
from onnxprune.graph.apply import ApplyContext
from onnxprune.graph.engine import DependencyGraph
from onnxprune.io import is_large
from onnxprune.passes.base import Pass, PassConditionError, PassResult
from onnxprune.passes.normalize import RemoveUnused


class ApplyPlan(Pass):
    """Remove the channel slots `removed_roots` from the normalised model the analysis was made on."""

    name = "prune"

    def __init__(self, dg: DependencyGraph, removed_roots: set[int]) -> None:
        self.dg = dg
        self.removed = removed_roots

    def requires(self, model: onnx.ModelProto) -> None:
        if len(model.graph.node) != len(self.dg.model.graph.node):
            raise PassConditionError("the plan's analysis was made on another model")

    def call(self, model: onnx.ModelProto) -> PassResult:
        if not self.removed:
            return PassResult(model, False)
        m = copy.deepcopy(model)
        actx = ApplyContext(m, self.dg.analysis.roots, self.removed)
        sliced = self._slice_members(m, actx)
        nodes = {n.name: n for n in m.graph.node}
        for name, hooks in self.dg.analysis.hooks.items():
            for hook in hooks:
                hook(actx, nodes[name])
        keep_io = {o.name for o in m.graph.output} | {i.name for i in m.graph.input}
        vis = [v for v in m.graph.value_info if v.name in keep_io]
        del m.graph.value_info[:]
        m.graph.value_info.extend(vis)
        RemoveUnused().call(m)
        return PassResult(m, True, [f"{len(self.removed)} channel slots removed, {sliced} constants sliced"])

    def _slice_members(self, m: onnx.ModelProto, actx: ApplyContext) -> int:
        masks: dict[str, dict[int, np.ndarray]] = defaultdict(dict)
        for mem in self.dg.analysis.members:
            for pos, axis in enumerate(mem.track.axes):
                keep = actx.keep(mem.track.ids) if mem.track.is_single else actx.kept_along(mem.track.ids, pos)
                prev = masks[mem.name].get(axis)
                masks[mem.name][axis] = keep if prev is None else (prev & keep)
        count = 0
        for t in m.graph.initializer:
            axes = masks.get(t.name)
            if not axes or all(k.all() for k in axes.values()):
                continue
            arr = numpy_helper.to_array(t)
            for axis, keep in axes.items():
                arr = np.compress(keep, arr, axis=axis)
            t.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(arr), t.name))
            count += 1
        return count

    def ensures(self, model: onnx.ModelProto) -> None:
        try:
            if not is_large(model):  # large models are checked from their file when saved
                onnx.checker.check_model(model)
            # Strict shape inference, unless ONNX cannot even infer the original (some function ops).
            skeleton.infer(model, strict=_strict_inference_holds(self.dg.model))
        except Exception as exc:  # noqa: BLE001 - checker and inference raise several types
            raise PassConditionError(f"pruned model is invalid: {str(exc).splitlines()[0]}") from None


def _strict_inference_holds(model: onnx.ModelProto) -> bool:
    try:
        skeleton.infer(model, strict=True)
    except Exception:  # noqa: BLE001
        return False
    return True
