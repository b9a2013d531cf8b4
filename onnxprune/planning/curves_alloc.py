"""The curves strategy: per-group ratios from sensitivity curves, allocated under a MAC or parameter budget.

Each group g has levels n = channels removed (0, then every count that leaves a multiple of
`round_to` channels, up to the floor `n_keep(size, MAX_GROUP_RATIO, round_to)` and to the last
measured ratio of its curve). Its cost saving
c_g(n) and error e_g(n) come from its curve (`measure.curves.GroupCurve`, measured with that group
alone pruned), linear between the measured ratios. The total error is taken as additive,
E = Σ_g e_g(n_g), and the budget as Σ_g c_g(n_g) (first order).

Greedy over the marginal error per MAC (or parameter) saved: the lower convex hull of each group's
(c_g(n), e_g(n)) points is split into segments, and all segments of all groups are taken in order
of increasing slope Δe / Δc (a group's hull slopes increase, so its segments come in order). For
convex curves this is the optimal fractional knapsack; on non-convex curves the hull lets a group
jump past a bump when the whole jump is cheaper per MAC than anything else. The segments are
unrolled level by level into one removal *path*; the budget is then landed exactly on that path:
bisection over the path position on the exact `costs.CostModel` estimate, then the applied
model is measured and re-aimed (`landing.land_target`), so the result is within 3 % of the target
like the other strategies. Inside each group the lowest-scored slots
(by the prune criterion) go first.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from onnxprune.errors import OnnxPruneError
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.measure.curves import DEFAULT_METRIC, METRICS, GroupCurve, SensitivityResult
from onnxprune.planning.choice import SensitivityAllocation
from onnxprune.planning.costs import CostModel, Scores
from onnxprune.planning.order import removal_orders
from onnxprune.planning.plan import Plan, enforce_min_channels
from onnxprune.planning.rounding import MAX_GROUP_RATIO, Quota, n_keep
from onnxprune.planning.strategy import PlanRequest, register_strategy


@dataclass(frozen=True)
class Segment:
    slope: float  # Δerror / Δsaving
    group: int
    levels: tuple[int, ...]  # removal counts reached one after the other


def levels(size: int, round_to: int) -> list[int]:
    """Allowed removal counts: 0, then counts that keep a multiple of round_to, down to the floor."""
    floor = n_keep(size, MAX_GROUP_RATIO, round_to)
    return [0, *(size - k for k in reversed(Quota(size, round_to).kept_options()) if floor <= k < size)]


def _saving(curve: GroupCurve, n: float, metric: str) -> float:
    key = "macs_kept" if metric == "macs" else "params_kept"
    xs = [0.0, *(float(p.removed) for p in curve.points)]
    ys = [0.0, *(1.0 - float(getattr(p, key)) for p in curve.points)]
    return float(np.interp(n, xs, ys))


def last_measured(curve: GroupCurve) -> int:
    """The most slots the curve removed at a measured ratio: it says nothing beyond."""
    return max((p.removed for p in curve.points), default=0)


def hull_segments(curve: GroupCurve, *, round_to: int, metric: str, error: str) -> list[Segment]:
    """The lower convex hull of (saving, error) over the group's levels, as segments of rising slope."""
    last = last_measured(curve)
    ns = [n for n in levels(curve.slots, round_to) if n <= last]  # the curve says nothing beyond its last point
    pts = [(_saving(curve, n, metric), curve.error_at(n, error), n) for n in ns]
    hull: list[tuple[float, float, int]] = [pts[0]]
    for p in pts[1:]:
        if p[0] <= hull[-1][0] + 1e-15:  # no extra saving: only worth it on the way to a later point
            continue
        while len(hull) >= 2:
            (x1, y1, _), (x2, y2, _) = hull[-2], hull[-1]
            if (y2 - y1) * (p[0] - x1) >= (p[1] - y1) * (x2 - x1):  # hull[-1] lies on or above the chord
                hull.pop()
            else:
                break
        hull.append(p)
    out: list[Segment] = []
    for (x1, y1, n1), (x2, y2, n2) in zip(hull, hull[1:], strict=False):
        out.append(Segment((y2 - y1) / (x2 - x1), curve.group, tuple(n for n in ns if n1 < n <= n2)))
    return out


def tail_levels(curve: GroupCurve, *, round_to: int) -> list[int]:
    """The group's levels beyond its last measured point, down to the floor: unmeasured."""
    last = last_measured(curve)
    return [n for n in levels(curve.slots, round_to) if n > last]


def removal_path(curves: Mapping[int, GroupCurve], *, round_to: int, metric: str,
                 error: str, multiples: Mapping[int, int] | None = None) -> list[tuple[int, int]]:
    """(group, removal count) steps, cheapest marginal error per saving first. After every measured
    segment, the unmeasured tails (beyond each curve's last ratio) follow one level per group per
    round, the groups cheapest at their last point first: a budget the measured range cannot reach
    still lands, spread like a uniform plan instead of stripping one group bare."""
    if error not in METRICS:
        raise OnnxPruneError(f"unknown sensitivity error {error!r}; choose one of: {', '.join(METRICS)}")
    # multiples: a group's own multiple of slots (Group.multiple), round_to where not given
    rounding = {c.group: (multiples or {}).get(c.group, round_to) for c in curves.values()}
    segments = [s for c in curves.values() for s in hull_segments(
        c, round_to=rounding[c.group], metric=metric, error=error)]
    segments.sort(key=lambda s: (s.slope, s.group, s.levels[0]))
    path = [(s.group, n) for s in segments for n in s.levels]
    tails = {c.group: tail_levels(c, round_to=rounding[c.group]) for c in curves.values()}
    order = sorted((g for g, t in tails.items() if t), key=lambda g: (_last_slope(curves[g], metric, error), g))
    for depth in range(max((len(t) for t in tails.values()), default=0)):
        path += [(g, tails[g][depth]) for g in order if depth < len(tails[g])]
    return path


def _last_slope(curve: GroupCurve, metric: str, error: str) -> float:
    """Error per saving at the curve's last measured point (its average cost so far)."""
    last = last_measured(curve)
    saving = _saving(curve, last, metric)
    return curve.error_at(last, error) / saving if saving > 0 else math.inf


def predicted(sens: SensitivityResult, dg: DependencyGraph, plan: Plan, *,
              error: str = DEFAULT_METRIC) -> SensitivityAllocation:
    curves = sens.curves_for(dg)
    counts = {gid: len(idx) for gid, idx in plan.removals.items()}
    return SensitivityAllocation(counts, math.fsum(curves[g].error_at(n, error) for g, n in counts.items()), error)


class PathPlanner:
    """Plans along a removal path: `plan_at(k)` removes the first k steps' slots (`order.removal_order`)."""

    def __init__(self, dg: DependencyGraph, path: list[tuple[int, int]], scores: Scores, *, criterion: str | None,
                 round_to: int) -> None:
        self.dg, self.path, self.criterion, self.round_to = dg, path, criterion, round_to
        self.orders = removal_orders(dg, scores, round_to=round_to)
        self.sources = {g.id: list(g.sources) for g in dg.groups}

    def counts_at(self, k: int) -> dict[int, int]:
        return dict(self.path[:k])

    def plan_at(self, k: int) -> Plan:
        return self.plan_of(self.counts_at(k))

    def plan_of(self, counts: Mapping[int, int]) -> Plan:
        plan = Plan(criterion=self.criterion, round_to=self.round_to)
        for gid, n in counts.items():
            if n > 0:
                plan.removals[gid] = sorted(int(i) for i in self.orders[gid][:n])
                plan.signatures[gid] = self.sources[gid]
        enforce_min_channels(self.dg, plan)
        return plan


def curves_search(dg: DependencyGraph, sens: SensitivityResult, scores: Scores, cm: CostModel, *, metric: str,
                  round_to: int = 1, criterion: str | None = None,
                  error: str = DEFAULT_METRIC) -> Callable[[float], Plan]:
    """`aim -> Plan` along the curves' removal path: the path position whose estimated `metric`
    ("macs"/"params") is nearest `aim` (estimates fall along the path)."""
    curves = sens.curves_for(dg)
    path = removal_path(curves, round_to=round_to, metric=metric, error=error,
                        multiples={g.id: g.multiple(round_to) for g in dg.prunable})
    planner = PathPlanner(dg, path, scores, criterion=criterion, round_to=round_to)
    pick = 0 if metric == "macs" else 1
    total = (cm.macs, cm.params)[pick]

    def cost(counts: Mapping[int, int]) -> float:
        return cm.estimate(planner.plan_of(counts).removed_roots(dg))[pick] / total

    def search(aim: float) -> Plan:
        lo, hi = 0, len(path)  # smallest k whose estimate is <= aim
        while lo < hi:
            mid = (lo + hi) // 2
            if cost(planner.counts_at(mid)) <= aim:
                hi = mid
            else:
                lo = mid + 1
        # the step past the aim, the one before it, or that one filled past a coarse jump; ties: the first
        candidates = [planner.counts_at(lo)] + ([planner.counts_at(lo - 1), fill_past(lo, aim)] if lo > 0 else [])
        return planner.plan_of(min(candidates, key=lambda counts: abs(cost(counts) - aim)))

    def fill_past(lo: int, aim: float) -> dict[int, int]:
        """Where step `lo` jumps past the aim (a narrow group losing a whole block at once), the path
        before it plus every later step of the other groups that stays above the aim."""
        counts, skipped = planner.counts_at(lo - 1), {path[lo - 1][0]}
        for gid, n in path[lo:]:
            if gid in skipped:
                continue
            trial = {**counts, gid: n}
            if cost(trial) >= aim:
                counts = trial
            else:
                skipped.add(gid)  # a group's levels come in order: its later ones save even more
        return counts

    return search


class Curves:
    """Per-group ratios from measured sensitivity curves (`PlanRequest.curves`): a budget only."""

    name = "curves"

    def ratio_plan(self, req: PlanRequest, ratio: float, *, round_to: int) -> Plan:
        raise OnnxPruneError("sensitivity curves allocate a budget: give a MAC, parameter or latency target")

    def searcher(self, req: PlanRequest, metric: str, *, round_to: int) -> Callable[[float], Plan]:
        if req.curves is None:
            raise OnnxPruneError("the curves allocation needs sensitivity curves: --sensitivity S.json, or "
                                 "calibration data for the run to measure them")
        return curves_search(req.dg, req.curves, req.scores, req.costs, metric=metric, round_to=round_to,
                             criterion=req.criterion, error=req.curves_error)


register_strategy(Curves())
