"""Weight-magnitude criteria aggregated over every member of a group.

For each constant member (producer weights along their output channels, consumer weights along
their reduction axis, norm scales), a slot's contribution is the sum of |w|^p over the positions
that carry its ids. Each member's contributions are divided by their mean so that large and
small layers weigh alike, then summed over members.
"""

from __future__ import annotations

import numpy as np

from onnxprune.graph.context import ROLE_NORM_SCALE, ROLE_WEIGHT_IN, ROLE_WEIGHT_OUT, ConstMember
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.graph.groups import Group
from onnxprune.graph.tracks import map_roots
from onnxprune.scoring.importance import register_importance

WEIGHT_ROLES = (ROLE_WEIGHT_OUT, ROLE_WEIGHT_IN, ROLE_NORM_SCALE)


def member_contributions(dg: DependencyGraph, m: ConstMember, slots: np.ndarray, p: float) -> np.ndarray | None:
    w = np.abs(dg.analysis.view.array(m.name).astype(np.float64))
    other = tuple(a for a in range(w.ndim) if a not in m.track.axes)
    per_pos = (w**p).sum(axis=other) if other else w**p
    roots = map_roots(dg.analysis.roots, m.track.ids)
    valid = roots >= 0
    if not valid.any():
        return None
    index = np.searchsorted(slots, roots[valid])
    ok = (index < slots.size) & (slots[np.clip(index, 0, slots.size - 1)] == roots[valid])
    out = np.zeros(slots.size)
    np.add.at(out, index[ok], per_pos[valid][ok])
    return out


class Magnitude:
    def __init__(self, *, p: float, roles: tuple[str, ...], name: str) -> None:
        self.p = p
        self.roles = roles
        self.name = name

    def __call__(self, dg: DependencyGraph, group: Group) -> np.ndarray:
        total = np.zeros(group.size)
        used = 0
        for m in group.members:
            if m.role not in self.roles:
                continue
            c = member_contributions(dg, m, group.slots, self.p)
            if c is None or c.mean() <= 0:
                continue
            total += c / c.mean()
            used += 1
        if used == 0 and self.roles != WEIGHT_ROLES:
            return Magnitude(p=2.0, roles=WEIGHT_ROLES, name="l2")(dg, group)
        return total


@register_importance("l1")
def _l1() -> Magnitude:
    return Magnitude(p=1.0, roles=WEIGHT_ROLES, name="l1")


@register_importance("l2")
def _l2() -> Magnitude:
    return Magnitude(p=2.0, roles=WEIGHT_ROLES, name="l2")


@register_importance("bn-scale")
def _bn() -> Magnitude:
    """|gamma| of the BatchNorm/InstanceNorm layers in the group (falls back to l2 without one)."""
    return Magnitude(p=1.0, roles=(ROLE_NORM_SCALE,), name="bn-scale")


@register_importance("random")
def _random() -> RandomImportance:
    return RandomImportance()


class RandomImportance:
    """Uniform random scores: a baseline, and the source of random plans for the oracle."""

    name = "random"

    def __init__(self, *, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, dg: DependencyGraph, group: Group) -> np.ndarray:
        return self.rng.random(group.size)
