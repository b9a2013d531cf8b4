"""A plan is data: which channel slots of which group to remove. It can be saved, edited, replayed."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from onnxprune.errors import OnnxPruneError
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.graph.tracks import map_roots
from onnxprune.io.model_io import write_json
from onnxprune.planning.order import group_pieces, removal_order
from onnxprune.planning.rounding import Quota, round_counts
from onnxprune.scoring.importance import Importance

MAX_GROUP_RATIO = 0.9  # a group keeps at least 10 % of its channels (global ranking, budgets, block moves)


@dataclass
class Plan:
    """`removals[group id]` holds indices into that group's slots (not raw ids)."""

    removals: dict[int, list[int]] = field(default_factory=dict)
    ratio: float | None = None
    criterion: str | None = None
    round_to: int = 1
    signatures: dict[int, list[str]] = field(default_factory=dict)  # group id -> source nodes

    def removed_roots(self, dg: DependencyGraph) -> set[int]:
        out: set[int] = set()
        by_id = {g.id: g for g in dg.groups}
        for gid, idx in self.removals.items():
            g = by_id.get(gid)
            if g is None:
                raise OnnxPruneError(f"plan names group {gid}, which this model does not have")
            if gid in self.signatures and self.signatures[gid] != g.sources:
                raise OnnxPruneError(f"plan group {gid} was made for another model (sources differ)")
            if not g.prunable and idx:
                raise OnnxPruneError(f"plan removes channels of group {gid}, which is blocked: {g.blocked[:1]}")
            if any(i < 0 or i >= g.size for i in idx):
                raise OnnxPruneError(f"plan group {gid}: slot index out of range 0..{g.size - 1}")
            out.update(int(g.slots[i]) for i in idx)
        return out

    def to_json(self) -> dict[str, object]:
        return {
            "ratio": self.ratio,
            "criterion": self.criterion,
            "round_to": self.round_to,
            "groups": [{"id": gid, "sources": self.signatures.get(gid, []), "remove": sorted(idx)}
                       for gid, idx in sorted(self.removals.items())],
        }

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        try:
            data = json.loads(Path(path).read_text())
            removals = {int(g["id"]): [int(i) for i in g["remove"]] for g in data["groups"]}
            sigs = {int(g["id"]): list(g.get("sources", [])) for g in data["groups"]}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise OnnxPruneError(f"{path}: not a valid plan file ({exc})") from None
        return cls(removals, data.get("ratio"), data.get("criterion"), int(data.get("round_to", 1)), sigs)


def removed_channels(dg: DependencyGraph, plan: Plan) -> tuple[int, int]:
    """(channels the plan removes, channels of the prunable groups): slots × channels per slot."""
    width = {g.id: g.width for g in dg.groups}
    return (sum(len(idx) * width[gid] for gid, idx in plan.removals.items() if gid in width),
            sum(g.channels for g in dg.prunable))


def n_keep(size: int, ratio: float, round_to: int) -> int:
    """Channels to keep at most `ratio` removed: at least one, rounded *up* to a multiple of round_to
    when that is possible. A floor (the fewest a group keeps); ratios are rounded by `rounding`."""
    keep = size - math.floor(size * ratio + 1e-9)
    if round_to > 1:
        keep = math.ceil(keep / round_to) * round_to
    return max(1, min(size, keep))


def quotas(dg: DependencyGraph, round_to: int) -> dict[int, Quota]:
    """Each prunable group's rounding `Quota` at `round_to` (block moves stop at MAX_GROUP_RATIO)."""
    out: dict[int, Quota] = {}
    for g in dg.prunable:
        m = g.multiple(round_to)
        out[g.id] = Quota(g.size, m, g.width, n_keep(g.size, MAX_GROUP_RATIO, m))
    return out


def ratio_counts(dg: DependencyGraph, ratio: float, round_to: int) -> dict[int, int]:
    """Slots each prunable group loses for `ratio` of all prunable channels (`rounding.round_counts`):
    R of every group, exact at round_to 1; rounded to blocks and spread over the groups otherwise."""
    q = quotas(dg, round_to)
    return round_counts(q, {gid: qq.size - n_keep(qq.size, ratio, 1) for gid, qq in q.items()})


def too_narrow(dg: DependencyGraph, round_to: int) -> str | None:
    """Why no prunable group can lose a whole block of `round_to` channels, or None when one can."""
    if round_to <= 1 or any(q.can_shrink() for q in quotas(dg, round_to).values()):
        return None
    widest = max((g.channels for g in dg.prunable), default=0)
    return (f"every prunable group is narrower than 2 blocks of {round_to} channels (the widest has {widest}), "
            f"and a group keeps at least one block; try {finer_round_to(round_to)}")


def finer_round_to(round_to: int) -> str:
    """The options to suggest when blocks of `round_to` are too wide: "--round-to 8 or 1"."""
    return "--round-to " + " or ".join(str(n) for n in dict.fromkeys((max(1, round_to // 2), 1)))


def uniform_plan(dg: DependencyGraph, importance: Importance, *, ratio: float, round_to: int = 1) -> Plan:
    """Remove `ratio` of every prunable group, the lowest-scored slots first (`order.removal_order`),
    in whole blocks at round_to > 1 (`ratio_counts`)."""
    if not 0.0 <= ratio < 1.0:
        raise OnnxPruneError(f"ratio must be in [0, 1), got {ratio}")
    plan = Plan(ratio=ratio, criterion=getattr(importance, "name", None), round_to=round_to)
    pieces = group_pieces(dg) if round_to > 1 else {}
    counts = ratio_counts(dg, ratio, round_to)
    for g in dg.prunable:
        if counts[g.id] <= 0:
            continue
        scores = np.asarray(importance(dg, g), dtype=np.float64)
        order = removal_order(scores, pieces.get(g.id, []), g.multiple(round_to))
        plan.removals[g.id] = sorted(int(i) for i in order[: counts[g.id]])
        plan.signatures[g.id] = list(g.sources)
    enforce_min_channels(dg, plan)
    return plan


def enforce_min_channels(dg: DependencyGraph, plan: Plan) -> None:
    """Every tensor keeps at least one position on each channel axis (Split pieces, Concat inputs)."""
    removed = plan.removed_roots(dg)
    if not removed:
        return
    by_id = {g.id: g for g in dg.groups}
    slot_index = {int(r): (gid, i) for gid in plan.removals for i, r in enumerate(by_id[gid].slots)}
    for layout in dg.analysis.layouts.values():
        for t in layout:
            roots = map_roots(dg.analysis.roots, t.ids)
            if (roots < 0).any():
                continue
            for axis_pos in range(roots.ndim):
                lines = np.moveaxis(roots, axis_pos, 0).reshape(roots.shape[axis_pos], -1)
                # An index along this axis disappears only when every id on its line is removed
                # (the coupled outer axes of a grid never lose a line).
                if all(set(line.tolist()) <= removed for line in lines):
                    # Give back one slot: the first removed root on this axis.
                    r = int(next(x for x in lines[0].tolist() if x in removed))
                    gid, i = slot_index[r]
                    plan.removals[gid].remove(i)
                    removed.discard(r)

