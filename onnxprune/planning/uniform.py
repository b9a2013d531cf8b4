"""The uniform strategy: every prunable group loses the same fraction of its channels.

A ratio removes R of each group, the lowest-scored slots first (planning/order.py), in whole blocks
at a multiple > 1 (planning/rounding.py: `ratio_counts`). A MAC or parameter target is searched over
R by bisection, then refined group by group and by block moves (planning/blocks.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial

from onnxprune.errors import OnnxPruneError
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.planning.blocks import counts_plan, refine_counts
from onnxprune.planning.costs import CostModel, Scores
from onnxprune.planning.landing import TOLERANCE, bisect
from onnxprune.planning.order import group_pieces, removal_order, removal_orders
from onnxprune.planning.plan import Plan, enforce_min_channels
from onnxprune.planning.rounding import MAX_GROUP_RATIO, n_keep, ratio_counts
from onnxprune.planning.strategy import PlanRequest, register_strategy


def uniform_plan(dg: DependencyGraph, scores: Scores, *, ratio: float, round_to: int = 1,
                 criterion: str | None = None) -> Plan:
    """Remove `ratio` of every prunable group, the lowest-scored slots first (`order.removal_order`),
    in whole blocks at round_to > 1 (`rounding.ratio_counts`)."""
    if not 0.0 <= ratio < 1.0:
        raise OnnxPruneError(f"ratio must be in [0, 1), got {ratio}")
    plan = Plan(ratio=ratio, criterion=criterion, round_to=round_to)
    pieces = group_pieces(dg) if round_to > 1 else {}
    counts = ratio_counts(dg, ratio, round_to)
    for g in dg.prunable:
        if counts[g.id] <= 0:
            continue
        order = removal_order(scores[g.id], pieces.get(g.id, []), g.multiple(round_to))
        plan.removals[g.id] = sorted(int(i) for i in order[: counts[g.id]])
        plan.signatures[g.id] = list(g.sources)
    enforce_min_channels(dg, plan)
    return plan


def uniform_search(dg: DependencyGraph, scores: Scores, cm: CostModel, aim: float, *, pick: int, round_to: int,
                    criterion: str | None) -> Plan:
    """Bisection over the uniform ratio R, then groups stepped back one at a time from the removal
    count of the bracketing ratio above to the one below (largest groups first), skipping steps
    that overshoot above `aim`, then (if still outside the tolerance) a local search over one-block
    moves (`closer_by_blocks`); the plan nearest `aim` is returned."""
    groups = {g.id: g for g in dg.prunable}
    total = cm.macs if pick == 0 else cm.params
    multiples = {gid: g.multiple(round_to) for gid, g in groups.items()}

    def counts(r: float) -> dict[int, int]:
        return {gid: g.size - n_keep(g.size, min(r, MAX_GROUP_RATIO), multiples[gid]) for gid, g in groups.items()}

    orders = removal_orders(dg, scores, round_to=round_to)

    def plan_for(c: Mapping[int, int]) -> Plan:
        return counts_plan(dg, orders, c, criterion=criterion, round_to=round_to)

    def est(c: Mapping[int, int]) -> float:
        return cm.estimate(plan_for(c).removed_roots(dg))[pick] / total

    hi = bisect(0.0, MAX_GROUP_RATIO, lambda r: est(counts(r)), aim, integer=False)
    c_hi = counts(hi)
    c_lo = counts(max(0.0, hi - 1e-4)) if hi > 0 else c_hi
    # Rounded counts move in steps: at R = hi every group may take its step at once (a 16-channel
    # group at round-to 8 goes 16 -> 8), which can land far below aim. Groups are stepped back one
    # at a time (largest first); a step that would overshoot above aim + tolerance/2 is skipped, so
    # a group whose step is too large (a residual stream) does not block the smaller ones after it.
    cur = dict(c_hi)
    best = (abs(est(cur) - aim), cur)
    by_size = sorted(groups, key=lambda g: -groups[g].size)
    for gid in (g for g in by_size if c_hi[g] != c_lo[g]):
        trial = {**cur, gid: c_lo[gid]}
        e = est(trial)
        if e <= aim * (1 + TOLERANCE / 2):
            cur = trial
        if abs(e - aim) < best[0]:
            best = (abs(e - aim), trial)
    counts_best = best[1]
    if best[0] > TOLERANCE * aim / 2:
        counts_best = refine_counts(dg, cm, orders, counts_best, sizes={g: groups[g].size for g in groups}, aim=aim,
                                     pick=pick, round_to=round_to, multiples=multiples, criterion=criterion)
    plan = plan_for(counts_best)
    plan.ratio = hi
    return plan


class Uniform:
    name = "uniform"

    def ratio_plan(self, req: PlanRequest, ratio: float, *, round_to: int) -> Plan:
        return uniform_plan(req.dg, req.scores, ratio=ratio, round_to=round_to, criterion=req.criterion)

    def searcher(self, req: PlanRequest, metric: str, *, round_to: int) -> Callable[[float], Plan]:
        return partial(uniform_search, req.dg, req.scores, req.costs, pick=0 if metric == "macs" else 1,
                       round_to=round_to, criterion=req.criterion)


register_strategy(Uniform())
