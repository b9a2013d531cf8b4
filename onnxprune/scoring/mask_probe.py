"""One ONNX Runtime session that can silence any set of channel slots: masks as graph inputs.

Every consume edge that carries a prunable slot gets `Mul(tensor, mask_k)` in front of its
consumer, with `mask_k` a new graph input (1 on kept positions, 0 on removed ones). Masking at
the consume edges is exactly what removing the slots does (see verify.py), so one session and a
few held calibration batches measure the output error of any removal set without rebuilding.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping

import numpy as np
from onnx import helper

from onnxprune import runtime
from onnxprune.graph.engine import DependencyGraph
from onnxprune.graph.masking import mask_dtype, mask_shape, splice_masks
from onnxprune.graph.tracks import map_roots

Feed = Mapping[str, np.ndarray]


class MaskProbe:
    """`error(removed_roots)`: relative output error of the model with those slots masked."""

    def __init__(self, dg: DependencyGraph, feeds: Iterable[Feed]) -> None:
        live: set[int] = set()
        for g in dg.prunable:
            live.update(int(r) for r in g.slots)
        model = copy.deepcopy(dg.model)
        self.masks: list[tuple[str, np.ndarray, tuple[int, ...], np.dtype]] = []  # (input, roots, shape, dtype)
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
        splice_masks(model, masked, prefix="probe")
        self.outputs = [o.name for o in model.graph.output]
        self.session = runtime.session(model, optimize=True)
        self.feeds = [dict(f) for f in feeds]
        self.evaluations = 0
        self.reference = [self._run(f, set()) for f in self.feeds]

    def _mask_feed(self, removed: set[int]) -> dict[str, np.ndarray]:
        arr = np.array(sorted(removed), dtype=np.int64)
        out = {}
        for name, roots, shape, dtype in self.masks:
            keep = ~np.isin(roots, arr) | (roots < 0)
            out[name] = keep.astype(dtype).reshape(shape)
        return out

    def _run(self, feed: Feed, removed: set[int]) -> dict[str, np.ndarray]:
        return runtime.run(self.session, {**feed, **self._mask_feed(removed)}, self.outputs)

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
