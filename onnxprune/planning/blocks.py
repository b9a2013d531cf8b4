"""Plans from per-group removal counts, and block moves that bring a rounded plan closer to its aim.

With a multiple (planning/rounding.py) a group's kept count moves in whole blocks, so a bisection
over one knob (a ratio, a number of ranked slots) lands in steps. These helpers turn counts into a
plan (each group losing its slots in its removal order, planning/order.py) and search one- and
two-block moves around it; `complete_plan` starts them from a wider multiple's plan.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import replace

import numpy as np

from onnxprune.graph.dependency import DependencyGraph
from onnxprune.io.types import Shapes
from onnxprune.planning.costs import CostModel, Scores
from onnxprune.planning.landing import TOLERANCE, Finish, TargetResult, land_target
from onnxprune.planning.order import removal_orders
from onnxprune.planning.plan import Plan, enforce_min_channels
from onnxprune.planning.rounding import MAX_GROUP_RATIO, n_keep


def signed(dg: DependencyGraph, plan: Plan, *, ratio: float | None) -> Plan:
    by_id = {g.id: g for g in dg.groups}
    plan.signatures = {gid: list(by_id[gid].sources) for gid in plan.removals}
    plan.ratio = ratio
    enforce_min_channels(dg, plan)
    return plan


def counts_plan(dg: DependencyGraph, orders: Mapping[int, np.ndarray], counts: Mapping[int, int], *,
                 criterion: str | None, round_to: int) -> Plan:
    """Remove the first `counts[g]` slots of each group's removal order."""
    plan = Plan(ratio=None, criterion=criterion, round_to=round_to)
    for gid, n in counts.items():
        if n > 0:
            plan.removals[gid] = sorted(int(i) for i in orders[gid][:n])
    return signed(dg, plan, ratio=None)


def as_asked(plan: Plan, counts: Mapping[int, int]) -> bool:
    """True when no group got a slot back from `enforce_min_channels` (a Split piece emptied)."""
    return all(len(plan.removals.get(g, ())) == n for g, n in counts.items() if n > 0)


def block_moves(size: int, removed: int, multiple: int) -> list[int]:
    """Removal counts one block either side of `removed`: kept slot counts stay multiples of the
    group's `multiple` (Group.multiple), and above its floor."""
    keep, out = size - removed, []
    less = keep % multiple or multiple if multiple > 1 else 1
    if keep - less >= n_keep(size, MAX_GROUP_RATIO, multiple):
        out.append(removed + less)
    if removed > 0:
        up = multiple - keep % multiple if multiple > 1 and keep % multiple else multiple
        out.append(max(0, removed - up))
    return out


def closer_by_blocks(counts: dict[int, int], error: Callable[[dict[int, int]], float], *, sizes: Mapping[int, int],
                      multiples: Mapping[int, int], good: float, rounds: int = 4, budget: int = 4000) -> dict[int, int]:
    """Local search when the rounded counts cannot land near the target: each round takes the best
    of every one-block move and every pair of moves on two groups (one block less here, one more
    there), at most `budget` evaluations in all, until the error is `good` or stops falling.
    `error` returns inf for counts it refuses (a plan that would empty a Split piece)."""
    best, e_best = counts, error(counts)
    for _ in range(rounds):
        if e_best <= good or budget <= 0:
            break
        base = best
        moves = [(g, n) for g in sizes for n in block_moves(sizes[g], base.get(g, 0), multiples[g])]
        singles = ({**base, g: n} for g, n in moves)
        pairs = ({**base, g: n, h: m} for i, (g, n) in enumerate(moves) for h, m in moves[i + 1:] if h != g)
        start = e_best
        for trial in itertools.islice(itertools.chain(singles, pairs), budget):
            budget -= 1
            e = error(trial)
            if e < e_best:
                best, e_best = trial, e
        if e_best >= start:
            break
    return best


def refine_counts(dg: DependencyGraph, cm: CostModel, orders: Mapping[int, np.ndarray], counts: dict[int, int], *,
                   sizes: Mapping[int, int], aim: float, pick: int, round_to: int, multiples: Mapping[int, int],
                   criterion: str | None) -> dict[int, int]:
    """`closer_by_blocks` on the estimated metric (`pick`: 0 MACs, 1 params) of `_counts_plan`."""
    total = (cm.macs, cm.params)[pick]

    def err(c: dict[int, int]) -> float:
        plan = counts_plan(dg, orders, c, criterion=criterion, round_to=round_to)
        return abs(cm.estimate(plan.removed_roots(dg))[pick] / total - aim) if as_asked(plan, c) else math.inf

    return closer_by_blocks(counts, err, sizes=sizes, multiples=multiples, good=TOLERANCE * aim / 2)


def complete_plan(dg: DependencyGraph, scores: Scores, coarse: TargetResult, *, round_to: int,
                  criterion: str | None = None, shapes: Shapes | None = None,
                  finish: Finish | None = None) -> TargetResult:
    """`coarse` (a plan at a wider multiple that misses its budget: groups of 16 channels can only
    halve or stay) completed with one-block moves at `round_to` until the budget lands
    (`refine_counts` from `coarse`'s per-group removal counts), so most groups keep the wider
    multiple's counts. Each group loses its slots in its `round_to` removal order."""
    groups = {g.id: g for g in dg.prunable}
    cm = CostModel(dg, shapes=shapes)
    pick = 0 if coarse.metric == "macs" else 1
    orders = removal_orders(dg, scores, round_to=round_to)
    start = {gid: len(coarse.plan.removals.get(gid, ())) for gid in groups}
    sizes = {gid: g.size for gid, g in groups.items()}
    multiples = {gid: g.multiple(round_to) for gid, g in groups.items()}

    def search(aim: float) -> Plan:
        counts = refine_counts(dg, cm, orders, dict(start), sizes=sizes, aim=aim, pick=pick, round_to=round_to,
                                multiples=multiples, criterion=criterion)
        return counts_plan(dg, orders, counts, criterion=criterion, round_to=round_to)

    res = land_target(dg, cm, search, metric=coarse.metric, target=coarse.target, shapes=shapes, finish=finish)
    return replace(res, completes=coarse.plan.round_to)  # the plan's criterion and round_to: _counts_plan
