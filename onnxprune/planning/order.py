"""Removal order inside a group: lowest score first, in blocks that keep every consumer's width a multiple.

`round_to` rounds a group's *kept* count to a multiple of the runtime's block (ORT's NCHWc: 8 or
16 channels). That is not enough when a Split (C2f, CSP, shuffle blocks) cuts the group into pieces
that feed different convolutions: plain lowest-score-first removal can take 3 channels from one
half and 13 from the other, and both consumers then see widths that are not multiples, so ORT
runs them outside NCHWc (with reorders around them).

The pieces of a group are its slots partitioned by which channel-mixing consumers see them (the
analysis's consume edges). When a group has more than one piece, channels leave in blocks: each
piece is sorted by score and cut into blocks of `b` channels, blocks leave lowest total score first,
and each piece's last block leaves only after every other block (a piece is emptied last). `b` is
`round_to`, halved until every piece is a multiple of `b` holding at least two blocks. With one
piece, or `round_to == 1`, the order is the plain stable argsort of the scores.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from onnxprune.graph.dependency import DependencyGraph
from onnxprune.graph.tracks import map_roots

Scores = Mapping[int, np.ndarray]


def group_pieces(dg: DependencyGraph) -> dict[int, list[np.ndarray]]:
    """For every group, its slot positions partitioned by the consume edges that see them."""
    owner: dict[int, tuple[int, int]] = {}  # root -> (group id, slot position)
    for g in dg.groups:
        for i, r in enumerate(g.slots.tolist()):
            owner[int(r)] = (g.id, i)
    signature: dict[int, list[list[int]]] = {g.id: [[] for _ in range(g.size)] for g in dg.groups}
    for e, edge in enumerate(dg.analysis.consume_edges):
        roots = np.unique(map_roots(dg.analysis.roots, edge.track.ids))
        for r in roots[roots >= 0].tolist():
            hit = owner.get(int(r))
            if hit is not None:
                signature[hit[0]][hit[1]].append(e)
    out: dict[int, list[np.ndarray]] = {}
    for g in dg.groups:
        classes: dict[tuple[int, ...], list[int]] = {}
        for i, sig in enumerate(signature[g.id]):
            classes.setdefault(tuple(sig), []).append(i)
        out[g.id] = [np.asarray(v, dtype=np.int64) for v in classes.values()]
    return out


def block_size(piece_sizes: list[int], round_to: int) -> int:
    """The largest b dividing round_to (by halving) with every piece a multiple of b, at least 2b."""
    b = max(1, round_to)
    while b > 1 and any(p % b or p < 2 * b for p in piece_sizes):
        b //= 2
    return b


def piece_block(pieces: list[np.ndarray], round_to: int) -> int:
    """The block a group's pieces leave in; 1 (the plain order) for a group of one piece."""
    return block_size([int(p.size) for p in pieces], round_to) if len(pieces) > 1 else 1


def removal_order(scores: np.ndarray, pieces: list[np.ndarray], round_to: int) -> np.ndarray:
    """Slot positions in removal order (see the module docstring)."""
    s = np.asarray(scores, dtype=np.float64)
    b = piece_block(pieces, round_to)
    if b <= 1:
        return np.argsort(s, kind="stable")
    early: list[tuple[float, int, int, np.ndarray]] = []
    last: list[tuple[float, int, int, np.ndarray]] = []
    for j, piece in enumerate(pieces):
        ranked = piece[np.argsort(s[piece], kind="stable")]
        blocks = [ranked[k:k + b] for k in range(0, ranked.size, b)]
        keyed = [(float(s[blk].sum()), j, k, blk) for k, blk in enumerate(blocks)]
        early.extend(keyed[:-1])
        last.append(keyed[-1])
    # Within a piece block sums never decrease, and ties fall back to (piece, block index), so
    # every prefix of the order takes whole blocks from the low end of each piece.
    early.sort(key=lambda t: t[:3])
    last.sort(key=lambda t: t[:3])
    return np.concatenate([t[3] for t in early + last])


def split_orders(dg: DependencyGraph, scores: Scores, *, round_to: int) -> dict[int, np.ndarray]:
    """`removal_order` of the scored groups whose order differs from a plain argsort (pieces, b > 1)."""
    if round_to <= 1:
        return {}
    pieces, m = group_pieces(dg), _multiples(dg, round_to)
    return {gid: removal_order(s, pieces[gid], m[gid]) for gid, s in scores.items()
            if piece_block(pieces[gid], m[gid]) > 1}


def removal_orders(dg: DependencyGraph, scores: Scores, *, round_to: int) -> dict[int, np.ndarray]:
    """`removal_order` of every scored group."""
    pieces, m = (group_pieces(dg), _multiples(dg, round_to)) if round_to > 1 else ({}, {})
    return {gid: removal_order(s, pieces.get(gid, []), m.get(gid, 1)) for gid, s in scores.items()}


def _multiples(dg: DependencyGraph, round_to: int) -> dict[int, int]:
    return {g.id: g.multiple(round_to) for g in dg.groups}
