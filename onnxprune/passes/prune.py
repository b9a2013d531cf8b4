"""Carry out a plan: slice every constant member, run each node's rewrite hook, drop stale shapes."""

from __future__ import annotations

import copy
from collections import defaultdict

import numpy as np
import onnx

from onnxprune.graph.apply import ApplyContext
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.io import skeleton
from onnxprune.io.external import new_tensor
from onnxprune.io.model_io import check_model, is_large
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
        """Slice every constant member for the nodes that read it; returns how many constants changed.

        A constant read by several nodes (an export that deduplicates a zero bias, tied weights) is
        sliced in place only when every reader wants the same slice; otherwise each distinct slice
        becomes its own copy for the nodes that want it, and readers that are not members (or keep
        everything) go on reading the original, so pruning one consumer never changes another."""
        wanted = self._reader_masks(actx)
        view = self.dg.analysis.view
        nodes = {n.name: n for n in m.graph.node}
        count = 0
        for name, per_node in wanted.items():
            readers = {n.name for n, _ in view.consumers.get(name, [])}
            shared = readers - set(per_node) or name in view.captured or name in view.graph_outputs
            distinct = {_mask_key(k): k for k in per_node.values()}
            cuts = {key: axes for key, axes in distinct.items() if not all(k.all() for k in axes.values())}
            if not cuts:
                continue
            sliced = {key: _sliced(actx.const(name), axes) for key, axes in cuts.items()}
            if not shared and len(distinct) == 1:
                t = next(t for t in m.graph.initializer if t.name == name)
                t.CopyFrom(new_tensor(m, next(iter(sliced.values())), name))
            else:
                copies = {key: actx.add_const(name, value) for key, value in sliced.items()}
                for node_name, axes in per_node.items():
                    copy_name = copies.get(_mask_key(axes))
                    node = nodes[node_name]
                    for i, x in enumerate(node.input):
                        if x == name and copy_name is not None:
                            node.input[i] = copy_name
            count += len(cuts)
        return count

    def _reader_masks(self, actx: ApplyContext) -> dict[str, dict[str, dict[int, np.ndarray]]]:
        """constant -> reading node -> axis -> keep mask (a node's members of one constant intersected)."""
        masks: dict[str, dict[str, dict[int, np.ndarray]]] = defaultdict(lambda: defaultdict(dict))
        for mem in self.dg.analysis.members:
            axes = masks[mem.name][mem.node]
            for pos, axis in enumerate(mem.track.axes):
                keep = actx.keep(mem.track.ids) if mem.track.is_single else actx.kept_along(mem.track.ids, pos)
                prev = axes.get(axis)
                axes[axis] = keep if prev is None else (prev & keep)
        return masks

    def ensures(self, model: onnx.ModelProto) -> None:
        try:
            if not is_large(model):  # large models are checked from their file when saved
                check_model(model)
            # Strict shape inference, unless ONNX cannot even infer the original (some function ops).
            skeleton.infer(model, strict=_strict_inference_holds(self.dg.model))
        except Exception as exc:  # noqa: BLE001 - checker and inference raise several types
            raise PassConditionError(f"pruned model is invalid: {str(exc).splitlines()[0]}") from None


def _mask_key(axes: dict[int, np.ndarray]) -> tuple[tuple[int, int, bytes], ...]:
    return tuple((axis, keep.size, np.packbits(keep).tobytes()) for axis, keep in sorted(axes.items()))


def _sliced(value: np.ndarray, axes: dict[int, np.ndarray]) -> np.ndarray:
    for axis, keep in axes.items():
        value = np.compress(keep, value, axis=axis)
    return value


def _strict_inference_holds(model: onnx.ModelProto) -> bool:
    try:
        skeleton.infer(model, strict=True)
    except Exception:  # noqa: BLE001
        return False
    return True
