"""FLAP's fluctuation metric: Var(x_c) · ‖W_consumer[:, c]‖², summed over the group's consume edges.

A channel that hardly varies over the calibration data can be replaced by its mean (a bias
compensation, left to reconstruction); what its removal costs is its variance times the energy of
the weights that read it. Positions of a Flatten block or channel grid are summed per slot. Each
edge's contributions are divided by their mean, then summed.
"""

from __future__ import annotations

import numpy as np

from onnxprune.graph.context import ROLE_WEIGHT_IN
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.graph.groups import Group
from onnxprune.scoring.calibrated import CalibratedImportance, normalised_sum
from onnxprune.scoring.edge_stats import group_edges
from onnxprune.scoring.importance import register_importance
from onnxprune.scoring.magnitude import WEIGHT_ROLES, Magnitude
from onnxprune.scoring.weights import weight_per_position, weighted_slots


class Fluctuation(CalibratedImportance):
    name = "flap"
    producers = False

    def __call__(self, dg: DependencyGraph, group: Group) -> np.ndarray:
        stats = self.edge_stats(dg)
        parts: list[np.ndarray] = []
        for e in group_edges(dg, group):
            st = stats.get(e.tensor, e.track)
            if st is None:
                continue
            for m in group.members:
                if m.role == ROLE_WEIGHT_IN and m.node == e.node:
                    c = weighted_slots(dg, group, m, weight_per_position(dg, m, 2.0), e.track, st.var)
                    if c is not None:
                        parts.append(c)
        total = normalised_sum(parts, group.size)
        return total if total is not None else Magnitude(p=2.0, roles=WEIGHT_ROLES, name="l2")(dg, group)


@register_importance("flap")
def _flap() -> Fluctuation:
    return Fluctuation()
