"""What a removal saves: MACs and parameters after removing slots, from the kept fractions of the
constant members (exact for Conv/ConvTranspose/Gemm/MatMul with a constant weight) and of the tracked
axes of MatMuls between two activations (attention's Q·Kᵀ and its product with V, whose MACs grow
with the sequence and fall with every head or head_dim slot removed)."""

from __future__ import annotations

import math

import numpy as np

from onnxprune.graph.apply import ApplyContext
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.graph.groups import Group
from onnxprune.graph.tracks import Track, map_roots, planes, track_at
from onnxprune.io.types import Shapes
from onnxprune.measure.model_stats import MAC_OPS, model_stats
from onnxprune.scoring.edge_stats import per_slot

Scores = dict[int, np.ndarray]  # group id -> one score per slot


class CostModel:
    """MACs and parameters of the model after removing a set of slots, from the kept fractions of
    its constant members (exact for Conv/ConvTranspose/Gemm/MatMul with a constant weight)."""

    def __init__(self, dg: DependencyGraph, *, shapes: Shapes | None = None) -> None:
        self.dg = dg
        st = model_stats(dg.model, shapes=shapes)
        self.macs, self.params = int(st.macs), int(st.params)
        view = dg.analysis.view
        self.tracks: dict[str, list[np.ndarray]] = {}  # initializer -> id arrays of its distinct tracks
        seen: set[tuple[str, tuple[int, ...]]] = set()
        for m in dg.analysis.members:
            if (m.name, m.track.axes) not in seen and view.is_const(m.name):
                seen.add((m.name, m.track.axes))
                self.tracks.setdefault(m.name, []).append(m.track.ids)
        self.numel = {n: int(np.prod(view.shape(n) or ())) for n in self.tracks}  # dims only: no weight is read
        self.weight_macs: dict[str, int] = {}  # weight initializer -> MACs of the node that reads it
        for node in dg.model.graph.node:
            if node.op_type in MAC_OPS and len(node.input) > 1 and node.input[1] in self.tracks:
                w = node.input[1]
                self.weight_macs[w] = self.weight_macs.get(w, 0) + int(st.node_macs.get(node.name, 0))
        # MatMuls of two activations: their MACs, the output's tracks and the reduced axis' track
        self.act_macs: list[tuple[int, list[Track], tuple[Track, int] | None]] = []
        layouts = dg.analysis.layouts
        for node in dg.model.graph.node:
            if node.op_type == "MatMul" and not any(view.is_const(i) for i in node.input[:2]):
                rank = len(view.shape(node.input[0]) or ())
                k = track_at(layouts.get(node.input[0], []), rank - 1) if rank else None
                tracked = [t for t in layouts.get(node.output[0], []) if t.any_tracked()]
                if tracked or k is not None:
                    self.act_macs.append((int(st.node_macs.get(node.name, 0)), tracked,
                                          None if k is None else (k, k.axes.index(rank - 1))))

    def kept_fraction(self, actx: ApplyContext, name: str) -> float:
        return math.prod(float(actx.keep(ids).mean()) if ids.size else 1.0 for ids in self.tracks[name])

    def estimate(self, removed: set[int]) -> tuple[int, int]:
        """(MACs, params) after removing the slots `removed`."""
        actx = ApplyContext(self.dg.model, self.dg.analysis.roots, removed)
        macs, params = float(self.macs), float(self.params)
        for name in self.tracks:
            lost = 1.0 - self.kept_fraction(actx, name)
            params -= self.numel[name] * lost
            macs -= self.weight_macs.get(name, 0) * lost
        for node_macs, tracked, k in self.act_macs:
            kept = math.prod(float(actx.keep(t.ids).mean()) for t in tracked)
            if k is not None:
                kept *= float(actx.kept_along(k[0].ids, k[1]).mean())
            macs -= node_macs * (1.0 - kept)
        return int(round(macs)), int(round(params))

    def slot_costs(self, g: Group) -> tuple[np.ndarray, np.ndarray]:
        """(MACs, params) that removing each slot of `g` alone saves, to first order."""
        macs, params = np.zeros(g.size), np.zeros(g.size)
        for m in g.members:
            if m.name not in self.tracks:
                continue
            share = per_slot(self.dg, g.slots, m.track.ids, np.ones(m.track.ids.size))
            if share is None:
                continue
            share = share / m.track.ids.size
            params += share * self.numel[m.name]
            macs += share * self.weight_macs.get(m.name, 0)
        return macs + self._activation_savings(g), params

    def _activation_savings(self, g: Group) -> np.ndarray:
        """MACs that removing each slot of `g` alone saves in the MatMuls of two activations (as `estimate`)."""
        out = np.zeros(g.size)
        roots = self.dg.analysis.roots
        for node_macs, tracked, k in self.act_macs:
            axes = [(t.ids, None) for t in tracked] + ([(k[0].ids, k[1])] if k is not None else [])
            arrays = [(map_roots(roots, ids), ids < 0, pos) for ids, pos in axes]
            if not any(np.isin(g.slots, r).any() for r, _, _ in arrays):
                continue
            for i, slot in enumerate(g.slots):
                kept = 1.0
                for r, untracked, pos in arrays:
                    alive = (r != slot) | untracked
                    kept *= float(alive.mean() if pos is None else planes(alive, pos).any(axis=1).mean())
                out[i] += node_macs * (1.0 - kept)
        return out
