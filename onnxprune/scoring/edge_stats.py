"""Per-position activation statistics of every tensor a group's channels flow through, in one pass.

For each consume edge (a tensor whose channels enter a Conv/Gemm/MatMul/...) and each producer
output (the tensor a source writes), the positions of the edge's track (one per channel, or a grid
for multi-axis tracks) get running count / sum / sum of squares / sum of |x| / zeros. One ONNX
Runtime session runs over the calibration batches once; every group reuses the result.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from onnxprune.calib.collect import stream_tensors
from onnxprune.calib.stats import ChannelStats
from onnxprune.errors import OnnxPruneError
from onnxprune.graph.context import ROLE_WEIGHT_OUT, ConstMember, ConsumeEdge
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.graph.groups import Group
from onnxprune.graph.tracks import Track, map_roots
from onnxprune.io.types import Feed

Key = tuple[str, tuple[int, ...]]  # (tensor, track axes)


@dataclass
class EdgeStats:
    """`stats[(tensor, axes)]` holds a ChannelStats over the flattened positions of that track."""

    stats: dict[Key, ChannelStats] = field(default_factory=dict)
    samples: int = 0

    def get(self, tensor: str, track: Track) -> ChannelStats | None:
        st = self.stats.get((tensor, track.axes))
        if st is None or st.count == 0 or st.sum is None or st.sum.size != track.ids.size:
            return None
        return st


def producer_output(dg: DependencyGraph, m: ConstMember) -> tuple[str, Track] | None:
    """For a producer weight (role weight-out): its node's output tensor and the track that holds
    exactly the member's ids (depthwise convs included), or None."""
    node = next((n for n in dg.model.graph.node if n.name == m.node), None)
    if node is None:
        return None
    for out in node.output:
        for t in dg.analysis.layouts.get(out, []):
            if t.ids.shape == m.track.ids.shape and np.array_equal(t.ids, m.track.ids):
                return out, t
    return None


def watched_tracks(dg: DependencyGraph, *, producers: bool = True) -> dict[Key, Track]:
    """Tracks of consume edges (and producer outputs) that carry slots of a prunable group."""
    live: set[int] = set()
    for g in dg.prunable:
        live.update(int(r) for r in g.slots)
    out: dict[Key, Track] = {}

    def add(tensor: str, track: Track) -> None:
        roots = map_roots(dg.analysis.roots, track.ids)
        if live & set(np.unique(roots[roots >= 0]).tolist()):
            out.setdefault((tensor, track.axes), track)

    for e in dg.analysis.consume_edges:
        add(e.tensor, e.track)
    if producers:
        for m in dg.analysis.members:
            if m.role == ROLE_WEIGHT_OUT:
                found = producer_output(dg, m)
                if found is not None:
                    add(*found)
    return out


def _positions(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """[rows, positions]: the track's axes moved last and flattened (in the order of track.ids)."""
    k = len(axes)
    moved = np.moveaxis(x, list(axes), list(range(x.ndim - k, x.ndim)))
    size = int(np.prod(moved.shape[x.ndim - k:])) if k else 1
    return moved.reshape(-1, size)


def collect_edge_stats(dg: DependencyGraph, batches: Iterable[Feed], *, producers: bool = True,
                       threads: int = 0) -> EdgeStats:
    """One pass over `batches` gathering per-position statistics of every watched track."""
    tracks = watched_tracks(dg, producers=producers)
    result = EdgeStats({k: ChannelStats(axis=-1) for k in tracks})
    names = sorted({t for t, _ in tracks})
    if not names:
        return result
    batches_seen = 0
    for vals in stream_tensors(dg.model, names, batches, threads=threads):
        for (tensor, axes), st in result.stats.items():
            x = np.asarray(vals[tensor])
            if x.dtype.kind != "f" or x.ndim <= max(axes, default=0):
                continue
            st.update(_positions(x, axes))
        batches_seen += 1
        first = next(iter(vals.values()), None)
        result.samples += int(first.shape[0]) if first is not None and first.ndim else 0
    if batches_seen == 0:
        raise OnnxPruneError("calibration data produced no batches")
    return result


def slot_index(dg: DependencyGraph, slots: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions, slot indices) of the flattened `ids` that hold one of `slots`."""
    roots = map_roots(dg.analysis.roots, ids).reshape(-1)
    index = np.searchsorted(slots, roots)
    clipped = np.clip(index, 0, max(slots.size - 1, 0))
    ok = (roots >= 0) & (index < slots.size) & (slots[clipped] == roots) if slots.size else roots < -1
    return np.nonzero(ok)[0], index[ok]


def per_slot(dg: DependencyGraph, slots: np.ndarray, ids: np.ndarray, values: np.ndarray, *,
             how: str = "sum") -> np.ndarray | None:
    """Reduce per-position `values` (flattened like ids) to one value per slot: sum or mean.

    None when no position of `ids` belongs to `slots`. Slots absent from `ids` get 0.
    """
    pos, idx = slot_index(dg, slots, ids)
    if pos.size == 0:
        return None
    out = np.zeros(slots.size)
    np.add.at(out, idx, np.asarray(values, dtype=np.float64).reshape(-1)[pos])
    if how == "mean":
        counts = np.zeros(slots.size)
        np.add.at(counts, idx, 1.0)
        out = np.divide(out, counts, out=np.zeros_like(out), where=counts > 0)
    return out


def group_edges(dg: DependencyGraph, group: Group) -> list[ConsumeEdge]:
    """The consume edges where some of the group's slots enter a consumer."""
    slots = set(group.slots.tolist())
    out = []
    for e in dg.analysis.consume_edges:
        roots = map_roots(dg.analysis.roots, e.track.ids)
        if slots & set(np.unique(roots[roots >= 0]).tolist()):
            out.append(e)
    return out
