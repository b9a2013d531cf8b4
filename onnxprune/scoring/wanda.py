"""Structured Wanda: weight magnitude times activation norm, over every member of a group.

For each consume edge of the group: Σ_rows,kernel |W_consumer[:, c]| · ‖X_c‖₂, with X the
consumer's input (positions of a Flatten block or a channel grid are summed per slot). For each
producer weight: Σ |W_producer[c, :]| · ‖Y_c‖₂ with Y the producer's output. Each member's
per-slot contributions are divided by their mean, then summed (as in magnitude.py).
"""

from __future__ import annotations

import numpy as np

from onnxprune.graph.context import ROLE_WEIGHT_IN, ROLE_WEIGHT_OUT
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.graph.groups import Group
from onnxprune.scoring.calibrated import CalibratedImportance, normalised_sum
from onnxprune.scoring.edge_stats import group_edges, producer_output
from onnxprune.scoring.importance import register_importance
from onnxprune.scoring.magnitude import WEIGHT_ROLES, Magnitude
from onnxprune.scoring.weights import weight_per_position, weighted_slots


class Wanda(CalibratedImportance):
    name = "wanda"

    def __call__(self, dg: DependencyGraph, group: Group) -> np.ndarray:
        stats = self.edge_stats(dg)
        parts: list[np.ndarray] = []
        for e in group_edges(dg, group):
            st = stats.get(e.tensor, e.track)
            if st is None or st.sumsq is None:
                continue
            for m in group.members:
                if m.role == ROLE_WEIGHT_IN and m.node == e.node:
                    c = weighted_slots(dg, group, m, weight_per_position(dg, m, 1.0), e.track, st.sumsq,
                                       combine="sqrt")
                    if c is not None:
                        parts.append(c)
        for m in group.members:
            if m.role != ROLE_WEIGHT_OUT:
                continue
            found = producer_output(dg, m)
            st = stats.get(*found) if found is not None else None
            if found is None or st is None or st.sumsq is None:
                continue
            c = weighted_slots(dg, group, m, weight_per_position(dg, m, 1.0), found[1], st.sumsq, combine="sqrt")
            if c is not None:
                parts.append(c)
        total = normalised_sum(parts, group.size)
        if total is None:
            return Magnitude(p=1.0, roles=WEIGHT_ROLES, name="l1")(dg, group)
        return total


@register_importance("wanda")
def _wanda() -> Wanda:
    return Wanda()
