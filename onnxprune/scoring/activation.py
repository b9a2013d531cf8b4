"""Activation criteria read at the consume edges: mean |a| per channel, and 1 − APoZ.

`activation`: per edge, the mean |a| of each slot's positions, divided by the edge's mean over
slots, summed over edges. `apoz`: the average percentage of zeros of a slot's positions, averaged
over its edges; a channel that is always zero is useless, so the score is 1 − APoZ (meaningful
after a ReLU; without zeros every channel scores ≈ 1 and `activation` is the better choice).
"""

from __future__ import annotations

import numpy as np

from onnxprune.graph.dependency import DependencyGraph
from onnxprune.graph.groups import Group
from onnxprune.scoring.calibrated import CalibratedImportance, normalised_sum
from onnxprune.scoring.edge_stats import group_edges, per_slot
from onnxprune.scoring.importance import register_importance
from onnxprune.scoring.magnitude import WEIGHT_ROLES, Magnitude


class MeanActivation(CalibratedImportance):
    name = "activation"
    producers = False

    def __call__(self, dg: DependencyGraph, group: Group) -> np.ndarray:
        stats = self.edge_stats(dg)
        parts: list[np.ndarray] = []
        for e in group_edges(dg, group):
            st = stats.get(e.tensor, e.track)
            if st is None:
                continue
            c = per_slot(dg, group.slots, e.track.ids, st.mean_abs, how="mean")
            if c is not None:
                parts.append(c)
        total = normalised_sum(parts, group.size)
        return total if total is not None else Magnitude(p=2.0, roles=WEIGHT_ROLES, name="l2")(dg, group)


class NonZeros(CalibratedImportance):
    name = "apoz"
    producers = False

    def __call__(self, dg: DependencyGraph, group: Group) -> np.ndarray:
        stats = self.edge_stats(dg)
        total, counts = np.zeros(group.size), np.zeros(group.size)
        for e in group_edges(dg, group):
            st = stats.get(e.tensor, e.track)
            if st is None:
                continue
            c = per_slot(dg, group.slots, e.track.ids, st.apoz, how="mean")
            n = per_slot(dg, group.slots, e.track.ids, np.ones(e.track.ids.size))
            if c is not None and n is not None:
                total += c
                counts += n > 0
        if not counts.any():
            return Magnitude(p=2.0, roles=WEIGHT_ROLES, name="l2")(dg, group)
        apoz = np.divide(total, counts, out=np.zeros_like(total), where=counts > 0)
        return 1.0 - apoz


@register_importance("activation")
def _activation() -> MeanActivation:
    return MeanActivation()


@register_importance("apoz")
def _apoz() -> NonZeros:
    return NonZeros()
