"""Rounding kept channel counts to runtime multiples: the policy (which multiple, and why) and the
block rounding that keeps what was asked.

**The multiple.** `rounding_policy(round_to, target=...)`: an explicit `--round-to N` wins; "auto"
means, for `--for tensorrt`, TensorRT's FP16 multiple, and for ONNX Runtime the NCHWc block of the
CPU (planning/cpu_profile.py: 16 with AVX-512F, 8 with AVX2+FMA, 1 otherwise). On AVX2, a MAC,
parameter or latency budget tries the wider multiple 16 first (`prefer`): there, multiples of 16
ran faster than 8 at the same MACs on most models (benchmarks/README.md), because they leave the
narrow layers alone; where both land, an optional tuning step times the two (planning/tuning.py).

**Block rounding.** A ratio asks every prunable group for some slots (a uniform plan: R of each
group; a global plan: what the ranking picked in it). With a multiple a group keeps a whole number
of blocks (its `Group.multiple` slots) or all of its slots, and never less than one block. Rounding
each group's kept count *up* loses every group narrower than about three blocks (at 16: a
32-channel group at R=0.3 keeps 22.4, rounded up to 32), so a model of narrow layers loses nothing.
Instead:

1. each group keeps the allowed count nearest to what it was asked to keep (a tie keeps more);
2. whole blocks are then moved one at a time while that brings the total removed *channels*
   closer to the total asked: a block more from the group whose rounding left it furthest below
   its ask (per block), or a block back to the one furthest above, widest group first on ties.
   A block move never leaves a group below its `floor`.

A group narrower than two blocks cannot shrink at all (one block is the fewest it keeps); its share
lands on the wider groups. With exact counts (multiple 1) every group gets exactly its ask.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from onnxprune.errors import OnnxPruneError
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.planning.cpu_profile import AVX2_BLOCK, AVX512_BLOCK, ort_cpu_profile

AUTO: Literal["auto"] = "auto"
TARGETS = ("ort", "tensorrt")
RoundTo = int | Literal["auto"]
MAX_GROUP_RATIO = 0.9  # a group keeps at least 10 % of its channels (global ranking, budgets, block moves)


@dataclass(frozen=True)
class RoundingPolicy:
    """The multiple kept channel counts are rounded to (`value`), and why.

    `prefer`: a wider multiple that a MAC / parameter / latency budget tries first, keeping it when
    the budget lands within 3 % with it; `value` otherwise, and always for a plain ratio.
    """

    value: int
    reason: str
    prefer: int | None = None

    @property
    def multiples(self) -> tuple[int, ...]:
        """The multiples a budget tries, in order: the preferred one first."""
        return tuple(dict.fromkeys((self.prefer or self.value, self.value)))

    def why(self, *, used: int | None = None, budget: bool = False, timed: bool = False) -> str:
        """The reason, with what `prefer` did when a plan was made with `used` (`budget`: a
        MAC/param/latency budget was given; `timed`: both multiples landed it and were timed)."""
        if self.prefer is None or not budget:
            return self.reason
        lands = (self.value if used is None else used) == self.prefer
        return f"{self.reason}; {self.prefer} tried first for a budget, " + (
            "and it lands" if lands else f"it lands, but {used} ran faster" if timed else "but it cannot land it")

    def describe(self, *, used: int | None = None, budget: bool = False, timed: bool = False) -> str:
        n = self.value if used is None else used
        return f"channel counts rounded to multiples of {n}: {self.why(used=used, budget=budget, timed=timed)}"

    def to_json(self) -> dict[str, object]:
        return {"value": self.value, "reason": self.reason, "prefer": self.prefer}


def parse_round_to(value: str | int) -> RoundTo:
    """`--round-to` text: a positive integer or "auto"."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise OnnxPruneError(f"--round-to {value!r}: give a positive integer or 'auto'") from None
    if n < 1:
        raise OnnxPruneError(f"--round-to {n} must be at least 1")
    return n


def rounding_policy(round_to: RoundTo | str | None, *, target: str = "ort", flags: Iterable[str] | None = None,
                    cpuinfo: Path | None = None, prefer: int | None = None) -> RoundingPolicy:
    """`--round-to` (None: not given) for a `--for` target (see the module doc). `prefer` overrides
    the wider multiple a budget tries first."""
    if target not in TARGETS:
        raise OnnxPruneError(f"--for {target!r}: choose one of {', '.join(TARGETS)}")
    if prefer is not None and prefer < 1:
        raise OnnxPruneError(f"prefer_round_to must be at least 1, got {prefer}")
    if round_to is not None and parse_round_to(round_to) != AUTO:
        n = int(parse_round_to(round_to))
        return RoundingPolicy(n, f"--round-to {n}" + (" (exact counts)" if n == 1 else ""), prefer)
    if target == "tensorrt":
        from onnxprune.deploy.tensorrt.profile import tensorrt_profile

        return RoundingPolicy(tensorrt_profile().round_to, "--for tensorrt (FP16 tensor cores)", prefer)
    profile = ort_cpu_profile(flags=flags, cpuinfo=cpuinfo)
    auto_prefer = AVX512_BLOCK if profile.block == AVX2_BLOCK else None
    return RoundingPolicy(profile.block, f"auto, {profile.describe()}", prefer if prefer is not None else auto_prefer)


def resolve_round_to(round_to: RoundTo | str, *, flags: Iterable[str] | None = None,
                     cpuinfo: Path | None = None) -> int:
    """An explicit multiple as it is; "auto": the NCHWc block of this CPU (or of `flags`)."""
    return rounding_policy(round_to, flags=flags, cpuinfo=cpuinfo).value


def n_keep(size: int, ratio: float, round_to: int) -> int:
    """Channels to keep at most `ratio` removed: at least one, rounded *up* to a multiple of round_to
    when that is possible. A floor (the fewest a group keeps); ratios are rounded by `round_counts`."""
    keep = size - math.floor(size * ratio + 1e-9)
    if round_to > 1:
        keep = math.ceil(keep / round_to) * round_to
    return max(1, min(size, keep))




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


def quotas(dg: DependencyGraph, round_to: int) -> dict[int, Quota]:
    """Each prunable group's rounding `Quota` at `round_to` (block moves stop at MAX_GROUP_RATIO)."""
    out: dict[int, Quota] = {}
    for g in dg.prunable:
        m = g.multiple(round_to)
        out[g.id] = Quota(g.size, m, g.width, n_keep(g.size, MAX_GROUP_RATIO, m))
    return out


def ratio_counts(dg: DependencyGraph, ratio: float, round_to: int) -> dict[int, int]:
    """Slots each prunable group loses for `ratio` of all prunable channels (`round_counts`):
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
