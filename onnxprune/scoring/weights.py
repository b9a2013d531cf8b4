"""Per-position weight norms of a constant member, and how they line up with an activation track."""

from __future__ import annotations

import numpy as np

from onnxprune.graph.context import ConstMember
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.graph.groups import Group
from onnxprune.graph.tracks import Track
from onnxprune.scoring.edge_stats import per_slot


def weight_per_position(dg: DependencyGraph, m: ConstMember, p: float) -> np.ndarray:
    """sum |w|^p over every axis outside the member's track, flattened like m.track.ids."""
    w = np.abs(dg.analysis.view.array(m.name).astype(np.float64))
    other = tuple(a for a in range(w.ndim) if a not in m.track.axes)
    per_pos = (w**p).sum(axis=other) if other else w**p
    return np.asarray(per_pos).reshape(-1)


def aligned(a: Track, b: Track) -> bool:
    return a.ids.shape == b.ids.shape and bool(np.array_equal(a.ids, b.ids))


def weighted_slots(dg: DependencyGraph, group: Group, m: ConstMember, w_pos: np.ndarray, act: Track,
                   a_pos: np.ndarray, *, combine: str = "product") -> np.ndarray | None:
    """Per slot, sum over positions of w_pos * a_pos when the weight and activation tracks line up
    position by position; otherwise (grouped convs) the slot sums of each side multiplied.

    `a_pos` must be additive over positions (a squared norm or a variance sum); with
    combine="sqrt" it is a squared norm and the result is w * sqrt(a) per position.
    """
    a_eff = np.sqrt(a_pos) if combine == "sqrt" else a_pos
    if aligned(m.track, act):
        return per_slot(dg, group.slots, m.track.ids, w_pos * a_eff)
    ws = per_slot(dg, group.slots, m.track.ids, w_pos)
    xs = per_slot(dg, group.slots, act.ids, a_pos)
    if ws is None or xs is None:
        return None
    return ws * (np.sqrt(xs) if combine == "sqrt" else xs)
