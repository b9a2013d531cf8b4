"""The global strategy: one ranking of every prunable slot of every group.

Every slot is ranked by its score divided by its group's mean score (scores of different groups and
criteria become comparable), divided by the slot's relative cost when a MAC or parameter budget is
set (cost = the MACs / parameters of the weight rows and columns that hold the slot, relative to the
mean slot cost). The lowest are removed, never leaving a group with fewer than
`n_keep(size, MAX_GROUP_RATIO, multiple)` channels (at least 10 %, at least one, a whole block).
A target is searched by bisection over the number of ranked slots removed, then a fill and block
moves (planning/blocks.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from onnxprune.errors import OnnxPruneError
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.planning.blocks import counts_plan, refine_counts, signed
from onnxprune.planning.costs import CostModel, Scores
from onnxprune.planning.landing import TOLERANCE, bisect
from onnxprune.planning.order import split_orders
from onnxprune.planning.plan import Plan
from onnxprune.planning.rounding import MAX_GROUP_RATIO, n_keep, quotas, round_counts
from onnxprune.planning.strategy import PlanRequest, register_strategy


@dataclass
class GlobalRanking:
    """Every prunable slot in removal order, with the per-group floors."""

    order: list[tuple[int, int]]  # (group id, slot index), lowest key first
    floor: dict[int, int]  # group id -> minimum channels kept
    sizes: dict[int, int]
    round_to: int
    multiples: dict[int, int]  # group id -> slots kept in multiples of this (Group.multiple)
    # Groups a Split cuts into pieces: their removal order in blocks (`order.removal_order`),
    # used instead of the ranking's own order within the group once the count is rounded.
    blocked_orders: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def removable(self) -> int:
        return sum(self.sizes[g] - self.floor[g] for g in self.sizes)

    def select(self, count: int) -> list[tuple[int, int]]:
        """The `count` lowest-ranked slots, skipping those of groups already at their floor."""
        taken: dict[int, int] = dict.fromkeys(self.sizes, 0)
        out: list[tuple[int, int]] = []
        for gid, i in self.order:
            if len(out) >= count:
                break
            if self.sizes[gid] - taken[gid] > self.floor[gid]:
                taken[gid] += 1
                out.append((gid, i))
        return out

    def plan_of(self, selected: list[tuple[int, int]], *, criterion: str | None) -> Plan:
        """Remove `selected`, with each group's kept count rounded up to a multiple of round_to (the
        highest-ranked of its selected slots stay; groups cut into pieces drop in `blocked_orders`).
        For the budget search, whose bisection wants counts that never fall as `selected` grows;
        a ratio is rounded by `rounding.round_counts` (`global_plan`)."""
        taken: dict[int, list[int]] = {}
        for gid, i in selected:
            taken.setdefault(gid, []).append(i)
        plan = Plan(criterion=criterion, round_to=self.round_to)
        for gid, idx in taken.items():
            keep = max(self.sizes[gid] - len(idx), self.floor[gid])
            if self.multiples[gid] > 1:
                keep = min(self.sizes[gid], math.ceil(keep / self.multiples[gid]) * self.multiples[gid])
            n = self.sizes[gid] - keep
            drop = [int(i) for i in self.blocked_orders[gid][:n]] if gid in self.blocked_orders else idx[:n]
            if drop:
                plan.removals[gid] = sorted(drop)
        return plan

    def group_orders(self) -> dict[int, np.ndarray]:
        """Each group's slots in the order this ranking removes them."""
        out: dict[int, list[int]] = {gid: [] for gid in self.sizes}
        for gid, i in self.order:
            out[gid].append(i)
        return {gid: self.blocked_orders.get(gid, np.asarray(idx, dtype=np.int64)) for gid, idx in out.items()}


def global_ranking(dg: DependencyGraph, scores: Scores, *, round_to: int = 1,
                   costs: Mapping[int, np.ndarray] | None = None) -> GlobalRanking:
    """Rank by score / group mean score (÷ cost / mean cost when `costs` are given)."""
    keys: list[tuple[float, int, int]] = []
    mean_cost = 1.0
    if costs:
        allc = np.concatenate([np.asarray(c, dtype=np.float64) for c in costs.values()])
        mean_cost = float(allc.mean()) if allc.size and allc.mean() > 0 else 1.0
    groups = {g.id: g for g in dg.prunable}
    for gid, s in scores.items():
        s = np.asarray(s, dtype=np.float64)
        mu = float(s.mean()) if s.size else 0.0
        norm = s / mu if mu > 0 and np.isfinite(mu) else np.ones_like(s)
        if costs is not None and gid in costs:
            rel = np.maximum(np.asarray(costs[gid], dtype=np.float64) / mean_cost, 1e-6)
            norm = norm / rel
        keys.extend((float(k), gid, i) for i, k in enumerate(norm))
    keys.sort()
    split = split_orders(dg, scores, round_to=round_to)
    multiples = {gid: groups[gid].multiple(round_to) for gid in scores}
    return GlobalRanking([(gid, i) for _, gid, i in keys],
                         {gid: n_keep(groups[gid].size, MAX_GROUP_RATIO, multiples[gid]) for gid in scores},
                         {gid: groups[gid].size for gid in scores}, round_to, multiples, split)


def global_plan(dg: DependencyGraph, scores: Scores, *, ratio: float, round_to: int = 1,
                criterion: str | None = None) -> Plan:
    """Remove `ratio` of all prunable channels, lowest normalised score first (per-group floors apply)."""
    if not 0.0 <= ratio < 1.0:
        raise OnnxPruneError(f"ratio must be in [0, 1), got {ratio}")
    ranking = global_ranking(dg, scores, round_to=round_to)
    total = sum(ranking.sizes.values())
    picked: dict[int, float] = {}
    for gid, _ in ranking.select(math.floor(total * ratio + 1e-9)):
        picked[gid] = picked.get(gid, 0.0) + 1.0
    counts = round_counts(quotas(dg, round_to), picked)  # whole blocks, as near the ranking's total as they go
    plan = counts_plan(dg, ranking.group_orders(), counts, criterion=criterion, round_to=round_to)
    plan.ratio = ratio
    return plan


def global_search(dg: DependencyGraph, ranking: GlobalRanking, cm: CostModel, aim: float, *, pick: int,
                   criterion: str | None, fill: int = 256) -> Plan:
    """Bisection over the number of globally removed slots, then a fill: from the last count above
    `aim`, later-ranked slots are added when they do not overshoot below aim − tolerance/2; at
    round-to > 1, if still outside the tolerance, a local search over one-block moves."""
    total = cm.macs if pick == 0 else cm.params

    def est_of(selected: list[tuple[int, int]]) -> float:
        plan = signed(dg, ranking.plan_of(selected, criterion=criterion), ratio=None)
        return cm.estimate(plan.removed_roots(dg))[pick] / total

    k = int(bisect(0.0, float(ranking.removable), lambda x: est_of(ranking.select(int(x))), aim, integer=True))
    chosen = ranking.select(k)
    best = (abs(est_of(chosen) - aim), chosen)
    if k > 0:
        base = ranking.select(k - 1)
        e = est_of(base)
        floor_left = {gid: ranking.sizes[gid] - ranking.floor[gid] for gid in ranking.sizes}
        for gid, _ in base:
            floor_left[gid] -= 1
        have = set(base)
        tried = 0
        for slot in ranking.order:
            if abs(e - aim) <= TOLERANCE * aim / 2 or tried >= fill:
                break
            if slot in have or floor_left[slot[0]] <= 0:
                continue
            tried += 1
            e_new = est_of([*base, slot])
            if e_new >= aim * (1 - TOLERANCE / 2):
                base, e = [*base, slot], e_new
                have.add(slot)
                floor_left[slot[0]] -= 1
        if abs(e - aim) < best[0]:
            best = (abs(e - aim), base)
    plan = signed(dg, ranking.plan_of(best[1], criterion=criterion), ratio=None)
    if best[0] <= TOLERANCE * aim / 2 or ranking.round_to <= 1:
        return plan
    # Whole blocks are too coarse for the fill: a local search over one-block moves, each group
    # losing its slots in the ranking's order.
    orders = ranking.group_orders()
    counts = refine_counts(dg, cm, orders, {gid: len(idx) for gid, idx in plan.removals.items()},
                            sizes=ranking.sizes, aim=aim, pick=pick, round_to=ranking.round_to,
                            multiples=ranking.multiples, criterion=criterion)
    return counts_plan(dg, orders, counts, criterion=criterion, round_to=ranking.round_to)


class Global:
    name = "global"

    def ratio_plan(self, req: PlanRequest, ratio: float, *, round_to: int) -> Plan:
        return global_plan(req.dg, req.scores, ratio=ratio, round_to=round_to, criterion=req.criterion)

    def searcher(self, req: PlanRequest, metric: str, *, round_to: int) -> Callable[[float], Plan]:
        pick = 0 if metric == "macs" else 1
        groups = {g.id: g for g in req.dg.prunable}
        costs = {gid: req.costs.slot_costs(groups[gid])[pick] for gid in req.scores}
        ranking = global_ranking(req.dg, req.scores, round_to=round_to, costs=costs)
        return partial(global_search, req.dg, ranking, req.costs, pick=pick, criterion=req.criterion)


register_strategy(Global())
