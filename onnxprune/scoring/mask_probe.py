"""One ONNX Runtime session that can silence any set of channel slots: masks as graph inputs.

Every consume edge that carries a prunable slot gets `Mul(tensor, mask_k)` in front of its
consumer, with `mask_k` a new graph input (1 on kept positions, 0 on removed ones). Masking at
the consume edges is exactly what removing the slots does (see verify.py), so one session and a
few held calibration batches measure the output error of any removal set without rebuilding.

fill="mean": a removed position reads its mean over the held batches instead of 0 (`Mul` then
`Add(fill_k)`, fill_k = (1 − mask_k)·mean). That is the error left after the cheapest recovery,
folding each removed channel's mean into the consumer's bias, which least-squares reconstruction
always does at least as well; zero-filling charges a channel for its mean, which recovery removes.

overrides: initializers (consumer weights and biases) that each run may replace, listed as graph
inputs; `scoring.refit_probe` feeds re-fitted consumer weights through them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping

import numpy as np
from onnx import helper

from onnxprune.calib.collect import stream_tensors
from onnxprune.errors import OnnxPruneError
from onnxprune.graph.context import ConsumeEdge
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.graph.masking import mask_dtype, mask_shape, splice_masks
from onnxprune.graph.tracks import map_roots
from onnxprune.io import runtime
from onnxprune.io.types import Feed

FILLS = ("zero", "mean")


class MaskProbe:
    """`error(removed_roots)`: relative output error of the model with those slots masked."""

    def __init__(self, dg: DependencyGraph, feeds: Iterable[Feed], *, fill: str = "zero",
                 overrides: Iterable[str] = ()) -> None:
        if fill not in FILLS:
            raise OnnxPruneError(f"fill must be one of {', '.join(FILLS)}, got {fill!r}")
        live: set[int] = set()
        for g in dg.prunable:
            live.update(int(r) for r in g.slots)
        model = copy.deepcopy(dg.model)
        self.masks: list[tuple[str, np.ndarray, tuple[int, ...], np.dtype]] = []  # (input, roots, shape, dtype)
        self.fills: dict[str, tuple[str, np.ndarray]] = {}  # mask input -> (fill input, mean in the mask's shape)
        masked = []
        for k, e in enumerate(dg.analysis.consume_edges):
            roots = map_roots(dg.analysis.roots, e.track.ids)
            if not live & set(np.unique(roots[roots >= 0]).tolist()):
                continue
            name, shape, dtype = f"__probe_mask_{k}", mask_shape(dg, e), mask_dtype(dg, e)
            model.graph.input.append(helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(dtype), list(shape)))
            masked.append((k, e, name))
            self.masks.append((name, roots, shape, dtype))
        self.feeds = [dict(f) for f in feeds]
        fill_names: dict[int, str] = {}
        if fill == "mean":
            means = edge_means(dg, [e for _, e, _ in masked], self.feeds)
            for (k, e, name), (_, _, shape, dtype) in zip(masked, self.masks, strict=True):
                if e.tensor in means:
                    fill_names[k] = f"__probe_fill_{k}"
                    model.graph.input.append(helper.make_tensor_value_info(
                        fill_names[k], helper.np_dtype_to_tensor_dtype(dtype), list(shape)))
                    self.fills[name] = (fill_names[k], means[e.tensor].reshape(shape).astype(dtype))
        splice_masks(model, masked, prefix="probe", fills=fill_names)
        inits = {t.name: t for t in model.graph.initializer}
        for name in dict.fromkeys(overrides):  # initializers listed as inputs: a feed replaces them
            t = inits[name]
            model.graph.input.append(helper.make_tensor_value_info(name, t.data_type, list(t.dims)))
        self.outputs = [o.name for o in model.graph.output]
        self.session = runtime.session(model, optimize=True)
        self.evaluations = 0
        self.reference = [self._run(f, set()) for f in self.feeds]

    def _mask_feed(self, removed: set[int]) -> dict[str, np.ndarray]:
        arr = np.array(sorted(removed), dtype=np.int64)
        out = {}
        for name, roots, shape, dtype in self.masks:
            keep = (~np.isin(roots, arr) | (roots < 0)).reshape(shape)
            out[name] = keep.astype(dtype)
            if name in self.fills:
                fill_name, mean = self.fills[name]
                out[fill_name] = np.where(keep, 0, mean).astype(dtype)
        return out

    def _run(self, feed: Feed, removed: set[int], weights: Mapping[str, np.ndarray] | None = None,
             ) -> dict[str, np.ndarray]:
        """weights: values for initializers named in `overrides` (the others keep theirs)."""
        return runtime.run(self.session, {**feed, **self._mask_feed(removed), **(weights or {})}, self.outputs)

    def error(self, removed: set[int]) -> float:
        """Σ over float outputs of ‖y − y_ref‖ / ‖y_ref‖ over all held batches."""
        self.evaluations += 1
        diff: dict[str, float] = {}
        ref: dict[str, float] = {}
        for feed, want in zip(self.feeds, self.reference, strict=True):
            got = self._run(feed, removed)
            for name, w in want.items():
                if w.dtype.kind != "f":
                    continue
                d = got[name].astype(np.float64) - w
                diff[name] = diff.get(name, 0.0) + float(np.sum(d * d))
                ref[name] = ref.get(name, 0.0) + float(np.sum(w.astype(np.float64) ** 2))
        return float(sum(np.sqrt(diff[n]) / max(np.sqrt(ref[n]), 1e-12) for n in diff))


def edge_means(dg: DependencyGraph, edges: Iterable[ConsumeEdge], feeds: Iterable[Feed]) -> dict[str, np.ndarray]:
    """Per float tensor of `edges`: its mean over the feeds along every axis its mask broadcasts on."""
    shapes: dict[str, tuple[int, ...]] = {}
    for e in edges:
        if dg.analysis.view.dtypes.get(e.tensor, np.dtype(np.float32)).kind == "f":
            shapes.setdefault(e.tensor, mask_shape(dg, e))
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for vals in stream_tensors(dg.model, list(shapes), feeds):
        for name, shape in shapes.items():
            v = np.asarray(vals[name], dtype=np.float64)
            axes = tuple(i for i, d in enumerate(shape) if d == 1)
            sums[name] = sums.get(name, 0.0) + v.sum(axis=axes, keepdims=True)
            counts[name] = counts.get(name, 0) + int(np.prod([v.shape[i] for i in axes]))
    return {n: sums[n] / max(counts[n], 1) for n in sums}
