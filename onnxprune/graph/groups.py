"""Groups: sets of sources whose channels are coupled, with their slots and blocking reasons."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from onnxprune.graph.context import Analysis, ConstMember
from onnxprune.graph.tracks import UnionFind, map_roots


@dataclass
class Group:
    id: int
    sources: list[str]  # node names
    slots: np.ndarray  # root ids, one per removable channel slot (sorted)
    blocked: list[str] = field(default_factory=list)
    members: list[ConstMember] = field(default_factory=list)
    approximate: list[str] = field(default_factory=list)  # prunable, but outside the exactness claim
    # Channels of one source tensor per slot: 1, or more where coupling makes a slot several channels
    # (the same index in every group of a grouped conv, a whole conv group, a channel-shuffle pair).
    width: int = 1
    # A slot's channels are spread one per part of the tensor (the same index in every conv group or
    # attention head) rather than side by side (a whole conv group): each part keeps `size` slots.
    strided: bool = False
    # The unit a slot is (UNIT_KINDS): a channel, a whole attention head (with GQA: a KV head and the
    # query heads sharing it), one head_dim index of every head (a rotate-half pair with RoPE), or one
    # channel of the hidden width (the residual stream, normalised by LayerNorm / RMSNorm).
    kind: str = "channel"
    # Head slots of grouped-query attention: a KV head with the query heads sharing it (the sources
    # hold different numbers of channels per slot).
    shared_kv: bool = False

    @property
    def size(self) -> int:
        return int(self.slots.size)

    @property
    def channels(self) -> int:
        """Channels of one source tensor: slots × channels per slot."""
        return self.size * self.width

    def multiple(self, round_to: int) -> int:
        """The multiple of *slots* to keep so that the kept *channels* are multiples of round_to
        (at round_to 8: 8 slots at width 1, 2 at width 4, 1 at width 8).

        Strided slots at least round_to per part keep round_to slots, so that every part (conv
        group, attention head) keeps a multiple of round_to channels: ONNX Runtime runs a grouped
        conv in NCHWc only when its channels per group are multiples of the block (and GPU kernels
        want head sizes in multiples of 8). Narrower parts never reach a block; for them the total
        is rounded, for the layers around them."""
        if round_to <= 1:
            return 1
        if self.strided and self.size >= round_to:
            return round_to
        return max(1, round_to // math.gcd(round_to, self.width))

    @property
    def prunable(self) -> bool:
        return not self.blocked and self.size > 1

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "sources": self.sources,
            "channels": self.channels,
            "slots": self.size,
            "prunable": self.prunable,
            "blocked": self.blocked,
            "approximate": self.approximate,
            "channels_per_slot": self.width,
            "strided_slots": self.strided,
            "kind": self.kind,
            "shared_kv": self.shared_kv,
            "members": sorted({f"{m.name}[{','.join(map(str, m.track.axes))}]" for m in self.members}),
        }


def _slot_width(roots: np.ndarray, ids: np.ndarray) -> int:
    """Ids of one source per distinct root it reaches (its channels per slot)."""
    distinct = set(map_roots(roots, ids).tolist()) - {-1}
    return ids.size // max(len(distinct), 1)


def _strided(roots: np.ndarray, ids: np.ndarray) -> bool:
    """Whether some slot of this source holds channels that are not side by side."""
    r = map_roots(roots, ids)
    order = np.argsort(r, kind="stable")
    pos, keys = np.arange(r.size)[order], r[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    counts = np.diff(np.r_[starts, r.size])
    spans = np.maximum.reduceat(pos, starts) - np.minimum.reduceat(pos, starts) + 1
    return bool(np.any((spans != counts) & (keys[starts] >= 0)))


UNIT_KINDS = ("channel", "head", "head_dim", "hidden")


def _unit_roots(analysis: Analysis) -> dict[str, set[int]]:
    """The slots that are attention heads, those that are head_dim indices (analysis.attention), and
    the hidden width: channels a norm normalises (the residual stream; rules/norm.py)."""
    hidden = np.array(sorted(analysis.hidden), dtype=np.int64)
    out: dict[str, set[int]] = {"head": set(), "head_dim": set(),
                                "hidden": set(map_roots(analysis.roots, hidden).tolist()) - {-1}}
    for name in analysis.attention:
        kind = "head" if name in analysis.whole_heads else "head_dim"
        out[kind] |= set(map_roots(analysis.roots, analysis.splits[name]).reshape(-1).tolist()) - {-1}
    for ids in analysis.fused_heads:
        out["head"] |= set(map_roots(analysis.roots, ids).tolist()) - {-1}
    return out


def build_groups(analysis: Analysis) -> list[Group]:
    roots = analysis.roots
    units = _unit_roots(analysis)
    src_uf = UnionFind()
    src_uf.allocate(len(analysis.sources))
    owner: dict[int, int] = {}
    for si, s in enumerate(analysis.sources):
        for r in np.unique(map_roots(roots, s.ids)).tolist():
            if r in owner:
                src_uf.union(owner[r], si)
            else:
                owner[r] = si
    comp: dict[int, list[int]] = defaultdict(list)
    for si in range(len(analysis.sources)):
        comp[src_uf.find(si)].append(si)
    blocked = analysis.blocked_roots()
    approximate = analysis.approximate_roots()
    member_roots = [(m, set(np.unique(map_roots(roots, m.track.ids)).tolist())) for m in analysis.members]
    groups: list[Group] = []
    for gi, members in enumerate(sorted(comp.values(), key=lambda v: v[0])):
        slots = np.unique(np.concatenate([map_roots(roots, analysis.sources[s].ids) for s in members]))
        slots = slots[slots >= 0]
        reasons: list[str] = []
        for r in slots.tolist():
            for reason in blocked.get(int(r), []):
                if reason not in reasons:
                    reasons.append(reason)
        slot_set = set(slots.tolist())
        approx = sorted({a for r in slot_set for a in approximate.get(int(r), [])})
        widths = [_slot_width(roots, analysis.sources[s].ids) for s in members]
        width = max(widths)
        strided = width > 1 and any(_strided(roots, analysis.sources[s].ids) for s in members)
        kind = next((k for k in ("head", "head_dim", "hidden") if units[k] & slot_set), "channel")
        g = Group(gi, [analysis.sources[s].node for s in members], slots, reasons[:8],
                  [m for m, rs in member_roots if rs & slot_set], approx[:8], width, strided, kind,
                  kind == "head" and len(set(widths)) > 1)
        groups.append(g)
    return groups
