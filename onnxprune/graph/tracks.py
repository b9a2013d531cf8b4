"""Channel tracks and the union-find over channel ids.

Every channel produced by a source (a Conv/Gemm/MatMul output channel) gets a global integer id.
A tensor's *layout* is a list of tracks; a track names the tensor axes it spans and holds one id
per position along them (-1 for positions that carry no prunable channel, such as image channels).
Most tracks span one axis; a Reshape that splits a channel axis into (groups, channels) yields a
track over two axes.

Rules couple ids (`union`): a residual Add makes channel k of both operands one slot, a Concat
places ids side by side, a Flatten repeats each id over a spatial block. A *slot* is a union-find
class of ids; removing a slot removes every position that holds one of its ids, everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UNTRACKED = -1


@dataclass(frozen=True)
class Track:
    axes: tuple[int, ...]  # ascending tensor axes
    ids: np.ndarray  # int64, shape == tensor dims at `axes`

    def __post_init__(self) -> None:
        if len(self.axes) != self.ids.ndim:
            raise ValueError(f"track axes {self.axes} do not match ids of rank {self.ids.ndim}")

    @property
    def is_single(self) -> bool:
        return len(self.axes) == 1

    def shifted(self, mapping: dict[int, int]) -> Track:
        """Same ids on other axes (mapping old axis -> new axis); reorders ids to keep axes ascending."""
        new = [mapping[a] for a in self.axes]
        order = np.argsort(new)
        return Track(tuple(int(new[i]) for i in order), np.transpose(self.ids, order))

    def any_tracked(self) -> bool:
        return bool((self.ids >= 0).any())


def planes(ids: np.ndarray, pos: int) -> np.ndarray:
    """The id grid cut into hyperplanes along position `pos`: row i holds every id at index i there."""
    return np.moveaxis(ids, pos, 0).reshape(ids.shape[pos], -1)


def track_at(layout: list[Track], axis: int) -> Track | None:
    for t in layout:
        if axis in t.axes:
            return t
    return None


class UnionFind:
    """Union-find over channel ids, grown as sources allocate ids."""

    def __init__(self) -> None:
        self.parent: list[int] = []

    def allocate(self, n: int) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        return np.arange(start, start + n, dtype=np.int64)

    def find(self, x: int) -> int:
        p = self.parent
        root = x
        while p[root] != root:
            root = p[root]
        while p[x] != root:
            p[x], x = root, p[x]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            if ra < rb:
                self.parent[rb] = ra
            else:
                self.parent[ra] = rb



def root_table(uf: UnionFind) -> np.ndarray:
    """Root of every id, computed once after analysis."""
    return np.array([uf.find(i) for i in range(len(uf.parent))], dtype=np.int64)


def map_roots(table: np.ndarray, ids: np.ndarray) -> np.ndarray:
    if table.size == 0:
        return np.full(ids.shape, UNTRACKED, dtype=np.int64)
    return np.where(ids >= 0, table[np.clip(ids, 0, None)], UNTRACKED)
