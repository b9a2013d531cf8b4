"""Measured sensitivity: the relative output error when a group's slots are silenced.

Slots are ordered by their l2 magnitude score and split into at most `max_evals` contiguous chunks
(one slot per chunk for groups of up to `max_evals` slots); each chunk is masked at every consume
edge of its slots (`MaskProbe`: one ORT session, masks as graph inputs) and the relative error of
the graph outputs over the held calibration samples is that chunk's score. Within a chunk the l2
score breaks ties (scaled to 1e-6 of the chunk error). Cost: ≤ `max_evals` forward passes over
≤ `samples` samples per prunable group, plus one reference pass.
"""

from __future__ import annotations

import numpy as np

from onnxprune.graph.dependency import DependencyGraph
from onnxprune.graph.groups import Group
from onnxprune.scoring.calibrated import CalibratedImportance
from onnxprune.scoring.importance import register_importance
from onnxprune.scoring.magnitude import WEIGHT_ROLES, Magnitude
from onnxprune.scoring.mask_probe import MaskProbe

MAX_EVALS = 32  # forward passes per group
MAX_SAMPLES = 64  # calibration samples held for the evaluations


class Sensitivity(CalibratedImportance):
    name = "sensitivity"

    def __init__(self, *, max_evals: int = MAX_EVALS, samples: int = MAX_SAMPLES) -> None:
        super().__init__()
        self.max_evals = max_evals
        self.samples = samples

    def probe(self, dg: DependencyGraph) -> MaskProbe:
        return self.cached(dg, "probe", lambda: MaskProbe(dg, self.source(dg).first(self.samples)))

    def __call__(self, dg: DependencyGraph, group: Group) -> np.ndarray:
        probe = self.probe(dg)
        l2 = Magnitude(p=2.0, roles=WEIGHT_ROLES, name="l2")(dg, group)
        order = np.argsort(l2, kind="stable")
        scores = np.zeros(group.size)
        tie = l2 / max(float(l2.max()), 1e-12)
        for chunk in np.array_split(order, min(group.size, max(1, self.max_evals))):
            err = probe.error({int(group.slots[i]) for i in chunk})
            scores[chunk] = err * (1.0 + 1e-6 * tie[chunk]) + 1e-12 * tie[chunk]
        return scores


@register_importance("sensitivity")
def _sensitivity() -> Sensitivity:
    return Sensitivity()
