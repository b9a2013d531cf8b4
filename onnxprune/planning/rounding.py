"""Block rounding: per-group removal counts that keep whole blocks and land the total that was asked.

A ratio asks every prunable group for some slots (a uniform plan: R of each group; a global plan:
what the ranking picked in it). With `--round-to` a group keeps a whole number of blocks (its
`Group.multiple` slots) or all of its slots, and never less than one block. Rounding each group's
kept count *up* loses every group narrower than about three blocks (at 16: a 32-channel group at
R=0.3 keeps 22.4, rounded up to 32), so a model of narrow layers loses nothing. Instead:

1. each group keeps the allowed count nearest to what it was asked to keep (a tie keeps more);
2. whole blocks are then moved one at a time while that brings the total removed *channels*
   closer to the total asked: a block more from the group whose rounding left it furthest below
   its ask (per block), or a block back to the one furthest above, widest group first on ties.
   A block move never leaves a group below its `floor`.

A group narrower than two blocks cannot shrink at all (one block is the fewest it keeps); its share
lands on the wider groups. With exact counts (multiple 1) every group gets exactly its ask.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Quota:
    """What rounding may do with one group."""

    size: int  # slots
    multiple: int = 1  # kept slots are a multiple of this (Group.multiple), or all of them
    width: int = 1  # channels per slot
    floor: int = 1  # fewest slots a block moved onto this group may leave it with

    def kept_options(self) -> list[int]:
        """Kept slot counts allowed, ascending: whole blocks (at least one), and the whole group."""
        m = max(1, self.multiple)
        return [*range(m, self.size, m), self.size]

    def can_shrink(self) -> bool:
        return len(self.kept_options()) > 1

    def nearest(self, desired: float) -> int:
        """Slots removed when the group alone rounds `desired` removed slots (a tie keeps more)."""
        want = self.size - desired
        keep = min(reversed(self.kept_options()), key=lambda k: abs(k - want))
        return self.size - keep


def round_counts(quotas: Mapping[int, Quota], desired: Mapping[int, float], *,
                 total: float | None = None) -> dict[int, int]:
    """Removed slots per group: each group's `desired` rounded to whole blocks, then blocks moved
    between groups until the removed channels are as close as blocks allow to `total` (default:
    the channels `desired` asks for). See the module doc."""
    asked = {g: float(desired.get(g, 0.0)) for g in quotas}
    want = sum(asked[g] * q.width for g, q in quotas.items()) if total is None else float(total)
    counts = {g: q.nearest(asked[g]) for g, q in quotas.items()}
    options = {g: q.kept_options() for g, q in quotas.items()}
    err = sum(counts[g] * q.width for g, q in quotas.items()) - want
    while True:
        best: tuple[float, int, int] | None = None  # (priority, size, -id) of the best move
        move: tuple[int, int] | None = None
        for g, q in quotas.items():
            keep = q.size - counts[g]
            if err < 0:  # too few removed: a block more from g
                k = max((o for o in options[g] if o < keep), default=None)
                if k is None or k < min(q.floor, keep):
                    continue
            else:  # too many removed: a block back to g
                k = min((o for o in options[g] if o > keep), default=None)
                if k is None:
                    continue
            step = (keep - k) * q.width  # channels removed by the move
            if abs(err + step) >= abs(err):
                continue
            left = (asked[g] - counts[g]) * q.width / step  # > 0: the group still asks for this move
            key = (left, q.size, -g)
            if best is None or key > best:
                best, move = key, (g, q.size - k)
        if move is None:
            return counts
        g, n = move
        err += (n - counts[g]) * quotas[g].width
        counts[g] = n
