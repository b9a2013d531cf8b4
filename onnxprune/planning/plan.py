"""A plan is data: which channel slots of which group to remove. It can be saved, edited, replayed.

The JSON names each group's sources and unit kind ("channel", "head", "head_dim", "hidden":
graph.groups.Group.kind); replaying it on an analysis that cut the group into other units (another
--heads mode) is an error. A plan may also drop whole residual blocks ("depth": planning/depth.py),
recorded by name and approximate."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from onnxprune.errors import OnnxPruneError
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.graph.tracks import map_roots
from onnxprune.io.model_io import write_json
from onnxprune.planning.depth import DepthPlan


@dataclass
class Plan:
    """`removals[group id]` holds indices into that group's slots (not raw ids)."""

    removals: dict[int, list[int]] = field(default_factory=dict)
    ratio: float | None = None
    criterion: str | None = None
    round_to: int = 1
    signatures: dict[int, list[str]] = field(default_factory=dict)  # group id -> source nodes
    kinds: dict[int, str] = field(default_factory=dict)  # group id -> unit kind of its slots
    depth: DepthPlan | None = None  # residual blocks dropped (None: none, or not yet chosen)

    def note_kinds(self, dg: DependencyGraph) -> None:
        """Record the unit kind of every group the plan touches (what `to_json` writes)."""
        by_id = {g.id: g for g in dg.groups}
        self.kinds.update({gid: by_id[gid].kind for gid in self.removals if gid in by_id})

    def removed_roots(self, dg: DependencyGraph) -> set[int]:
        out: set[int] = set()
        by_id = {g.id: g for g in dg.groups}
        for gid, idx in self.removals.items():
            g = by_id.get(gid)
            if g is None:
                raise OnnxPruneError(f"plan names group {gid}, which this model does not have")
            # "hidden" names where a channel lives (plans made before that kind record "channel").
            if gid in self.kinds and self.kinds[gid] != g.kind and {self.kinds[gid], g.kind} != {"channel", "hidden"}:
                raise OnnxPruneError(f"plan group {gid} removes {self.kinds[gid]} units, but this analysis makes "
                                     f"its slots {g.kind} units: replay it with the --heads mode it was made with")
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
            "groups": [{"id": gid, "sources": self.signatures.get(gid, []), "remove": sorted(idx),
                        **({"kind": self.kinds[gid]} if gid in self.kinds else {})}
                       for gid, idx in sorted(self.removals.items())],
            **({"depth": self.depth.to_json()} if self.depth is not None else {}),
        }

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        try:
            data = json.loads(Path(path).read_text())
            removals = {int(g["id"]): [int(i) for i in g["remove"]] for g in data["groups"]}
            sigs = {int(g["id"]): list(g.get("sources", [])) for g in data["groups"]}
            kinds = {int(g["id"]): str(g["kind"]) for g in data["groups"] if "kind" in g}
            depth = DepthPlan.from_json(data["depth"]) if data.get("depth") is not None else None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise OnnxPruneError(f"{path}: not a valid plan file ({exc})") from None
        return cls(removals, data.get("ratio"), data.get("criterion"), int(data.get("round_to", 1)), sigs, kinds,
                   depth)


def removed_channels(dg: DependencyGraph, plan: Plan) -> tuple[int, int]:
    """(channels the plan removes, channels of the prunable groups): slots × channels per slot."""
    width = {g.id: g.width for g in dg.groups}
    return (sum(len(idx) * width[gid] for gid, idx in plan.removals.items() if gid in width),
            sum(g.channels for g in dg.prunable))


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

