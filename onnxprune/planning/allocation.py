"""How many channels each group loses: uniform ratios, a global ranking, and MAC/parameter targets.

* uniform: every prunable group loses the same fraction (`plan.uniform_plan`).
* global: every slot of every prunable group is ranked by its score divided by its group's mean
  score (scores of different groups and criteria become comparable), divided by the slot's
  relative cost when a MAC or parameter budget is set (cost = the MACs / parameters of the weight
  rows and columns that hold the slot, relative to the mean slot cost). The lowest are removed,
  never leaving a group with fewer than `n_keep(size, MAX_GROUP_RATIO, round_to)` channels (at
  least 10 %, at least one, a multiple of round_to where possible).
* a ratio, either way, is rounded to whole blocks of round_to by `rounding.round_counts`: each
  group to its nearest block, the rest spread over the groups that can take it.
* targets: `target_macs` / `target_params` (fractions of the original) are met by bisection —
  over the ratio R for uniform, over the number of globally removed slots for global — on an exact
  per-weight estimate (a MAC op's MACs scale with the kept fraction of its weight), then checked
  with `stats.model_stats` on the applied model and re-aimed (at most `REAIM` times) if the two
  disagree (activation×activation MatMuls are not in the estimate).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from onnxprune.errors import OnnxPruneError
from onnxprune.graph.apply import ApplyContext
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.graph.groups import Group
from onnxprune.measure.model_stats import MAC_OPS, model_stats
from onnxprune.planning.order import removal_orders, split_orders
from onnxprune.planning.plan import MAX_GROUP_RATIO, Plan, enforce_min_channels, n_keep, quotas, uniform_plan
from onnxprune.planning.rounding import round_counts
from onnxprune.scoring.calibrated import Calibration
from onnxprune.scoring.edge_stats import per_slot
from onnxprune.scoring.importance import Importance

ALLOCATIONS = ("uniform", "global")
TOLERANCE = 0.03  # targets: |achieved - target| <= 3 % of the target
REAIM = 3
Shapes = Mapping[str, tuple[int, ...]]
Scores = dict[int, np.ndarray]


def group_scores(dg: DependencyGraph, importance: Importance) -> Scores:
    """One score array per prunable group (scoring runs once; every plan below reuses it)."""
    return {g.id: np.asarray(importance(dg, g), dtype=np.float64) for g in dg.prunable}


# -- costs ------------------------------------------------------------------------------------------


class CostModel:
    """MACs and parameters of the model after removing a set of slots, from the kept fractions of
    its constant members (exact for Conv/ConvTranspose/Gemm/MatMul with a constant weight)."""

    def __init__(self, dg: DependencyGraph, *, shapes: Shapes | None = None) -> None:
        self.dg = dg
        st = model_stats(dg.model, shapes=shapes)
        self.macs, self.params = int(st.macs), int(st.params)
        view = dg.analysis.view
        self.tracks: dict[str, list[np.ndarray]] = {}  # initializer -> id arrays of its distinct tracks
        seen: set[tuple[str, tuple[int, ...]]] = set()
        for m in dg.analysis.members:
            if (m.name, m.track.axes) not in seen and view.is_const(m.name):
                seen.add((m.name, m.track.axes))
                self.tracks.setdefault(m.name, []).append(m.track.ids)
        self.numel = {n: int(np.prod(view.array(n).shape)) for n in self.tracks}
        self.weight_macs: dict[str, int] = {}  # weight initializer -> MACs of the node that reads it
        for node in dg.model.graph.node:
            if node.op_type in MAC_OPS and len(node.input) > 1 and node.input[1] in self.tracks:
                w = node.input[1]
                self.weight_macs[w] = self.weight_macs.get(w, 0) + int(st.node_macs.get(node.name, 0))

    def kept_fraction(self, actx: ApplyContext, name: str) -> float:
        return math.prod(float(actx.keep(ids).mean()) if ids.size else 1.0 for ids in self.tracks[name])

    def estimate(self, removed: set[int]) -> tuple[int, int]:
        """(MACs, params) after removing the slots `removed`."""
        actx = ApplyContext(self.dg.model, self.dg.analysis.roots, removed)
        macs, params = float(self.macs), float(self.params)
        for name in self.tracks:
            lost = 1.0 - self.kept_fraction(actx, name)
            params -= self.numel[name] * lost
            macs -= self.weight_macs.get(name, 0) * lost
        return int(round(macs)), int(round(params))

    def slot_costs(self, g: Group) -> tuple[np.ndarray, np.ndarray]:
        """(MACs, params) that removing each slot of `g` alone saves, to first order."""
        macs, params = np.zeros(g.size), np.zeros(g.size)
        for m in g.members:
            if m.name not in self.tracks:
                continue
            share = per_slot(self.dg, g.slots, m.track.ids, np.ones(m.track.ids.size))
            if share is None:
                continue
            share = share / m.track.ids.size
            params += share * self.numel[m.name]
            macs += share * self.weight_macs.get(m.name, 0)
        return macs, params


# -- global ranking -----------------------------------------------------------------------------------


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


def _signed(dg: DependencyGraph, plan: Plan, *, ratio: float | None) -> Plan:
    by_id = {g.id: g for g in dg.groups}
    plan.signatures = {gid: list(by_id[gid].sources) for gid in plan.removals}
    plan.ratio = ratio
    enforce_min_channels(dg, plan)
    return plan


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
    plan = _counts_plan(dg, ranking.group_orders(), counts, criterion=criterion, round_to=round_to)
    plan.ratio = ratio
    return plan


# -- targets ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TargetResult:
    plan: Plan
    metric: str  # "macs" or "params"
    target: float  # fraction of the original
    achieved: float  # fraction of the original, measured with model_stats on the applied model
    original: int
    completes: int | None = None  # the wider multiple whose plan this one completes (complete_plan)

    @property
    def label(self) -> str:
        """How its channel counts were rounded: "8", or "16 completed with blocks of 8"."""
        rt = self.plan.round_to
        return str(rt) if self.completes is None else f"{self.completes} completed with blocks of {rt}"

    @property
    def ok(self) -> bool:
        return abs(self.achieved - self.target) <= TOLERANCE * self.target

    def describe(self, *, of: str = "the original") -> str:
        """`of`: what the fractions are of (a later step of `prune --steps` starts from a pruned model)."""
        state = "" if self.ok else f" (outside the {TOLERANCE:.0%} tolerance: the per-group floors or round-to stop it)"
        return f"{self.metric}: {self.achieved:.1%} of {of} kept (target {self.target:.1%}){state}"


def _bisect(lo: float, hi: float, value: Callable[[float], float], want: float, *, integer: bool,
            steps: int = 40) -> float:
    """Smallest x in [lo, hi] with value(x) <= want (value non-increasing), or hi."""
    if value(lo) <= want:
        return lo
    for _ in range(steps):
        if (integer and hi - lo <= 1) or (not integer and hi - lo < 1e-4):
            break
        mid = (lo + hi) // 2 if integer else (lo + hi) / 2
        if value(mid) <= want:
            hi = mid
        else:
            lo = mid
    return hi


def target_plan(dg: DependencyGraph, scores: Scores, *, allocation: str = "uniform",
                target_macs: float | None = None, target_params: float | None = None, round_to: int = 1,
                criterion: str | None = None, shapes: Shapes | None = None) -> TargetResult:
    """A plan whose pruned model keeps `target_macs` (or `target_params`) of the original, within 3 %."""
    if (target_macs is None) == (target_params is None):
        raise OnnxPruneError("give exactly one of target_macs and target_params")
    metric = "macs" if target_params is None else "params"
    target = float(target_macs if target_macs is not None else target_params)  # type: ignore[arg-type]
    if not 0.0 < target <= 1.0:
        raise OnnxPruneError(f"target {metric} must be a fraction in (0, 1], got {target}")
    if allocation not in ALLOCATIONS:
        raise OnnxPruneError(f"unknown allocation {allocation!r}; choose one of: {', '.join(ALLOCATIONS)}")
    cm = CostModel(dg, shapes=shapes)
    original = cm.macs if metric == "macs" else cm.params
    if original <= 0:
        raise OnnxPruneError(f"the model has no {metric} to reduce")
    pick = 0 if metric == "macs" else 1
    groups = {g.id: g for g in dg.prunable}
    if allocation == "uniform":
        def search(aim: float) -> Plan:
            return _uniform_search(dg, scores, cm, aim, pick=pick, round_to=round_to, criterion=criterion)
    else:
        costs = {gid: cm.slot_costs(groups[gid])[pick] for gid in scores}
        ranking = global_ranking(dg, scores, round_to=round_to, costs=costs)

        def search(aim: float) -> Plan:
            return _global_search(dg, ranking, cm, aim, pick=pick, criterion=criterion)

    result = land_target(dg, cm, search, metric=metric, target=target, shapes=shapes)
    result.plan.criterion = criterion
    result.plan.round_to = round_to
    return result


def complete_plan(dg: DependencyGraph, scores: Scores, coarse: TargetResult, *, round_to: int,
                  criterion: str | None = None, shapes: Shapes | None = None) -> TargetResult:
    """`coarse` (a plan at a wider multiple that misses its budget: groups of 16 channels can only
    halve or stay) completed with one-block moves at `round_to` until the budget lands
    (`_refine_counts` from `coarse`'s per-group removal counts), so most groups keep the wider
    multiple's counts. Each group loses its slots in its `round_to` removal order."""
    groups = {g.id: g for g in dg.prunable}
    cm = CostModel(dg, shapes=shapes)
    pick = 0 if coarse.metric == "macs" else 1
    orders = removal_orders(dg, scores, round_to=round_to)
    start = {gid: len(coarse.plan.removals.get(gid, ())) for gid in groups}
    sizes = {gid: g.size for gid, g in groups.items()}
    multiples = {gid: g.multiple(round_to) for gid, g in groups.items()}

    def search(aim: float) -> Plan:
        counts = _refine_counts(dg, cm, orders, dict(start), sizes=sizes, aim=aim, pick=pick, round_to=round_to,
                                multiples=multiples, criterion=criterion)
        return _counts_plan(dg, orders, counts, criterion=criterion, round_to=round_to)

    res = land_target(dg, cm, search, metric=coarse.metric, target=coarse.target, shapes=shapes)
    return replace(res, completes=coarse.plan.round_to)  # the plan's criterion and round_to: _counts_plan


def land_target(dg: DependencyGraph, cm: CostModel, search: Callable[[float], Plan], *, metric: str,
                target: float, shapes: Shapes | None = None) -> TargetResult:
    """Run `search(aim)` (a plan whose estimated metric is near `aim`), measure the applied plan with
    `model_stats`, and re-aim (at most REAIM times) until it is within TOLERANCE / 2 of `target`."""
    from onnxprune.passes.prune import ApplyPlan

    pick = 0 if metric == "macs" else 1
    cm_total = (cm.macs, cm.params)
    original = cm_total[pick]

    def estimate(plan: Plan) -> float:
        return cm.estimate(plan.removed_roots(dg))[pick] / cm_total[pick]

    def measure(plan: Plan) -> float:
        removed = plan.removed_roots(dg)
        if not removed:
            return 1.0
        st = model_stats(ApplyPlan(dg, removed)(dg.model).model, shapes=shapes)
        return (st.macs if metric == "macs" else st.params) / original

    aim = target
    best: tuple[float, Plan, float] | None = None
    for _ in range(REAIM + 1):
        plan = search(aim)
        achieved = measure(plan)
        if best is None or abs(achieved - target) < best[0]:
            best = (abs(achieved - target), plan, achieved)
        est = estimate(plan)
        if abs(achieved - target) <= TOLERANCE * target / 2 or est <= 0 or abs(achieved - est) < 1e-9:
            break
        aim = max(1e-6, aim * target / achieved)
    assert best is not None
    return TargetResult(best[1], metric, target, best[2], original)


def _uniform_search(dg: DependencyGraph, scores: Scores, cm: CostModel, aim: float, *, pick: int, round_to: int,
                    criterion: str | None) -> Plan:
    """Bisection over the uniform ratio R, then groups stepped back one at a time from the removal
    count of the bracketing ratio above to the one below (largest groups first), skipping steps
    that overshoot above `aim`, then (if still outside the tolerance) a local search over one-block
    moves (`_closer_by_blocks`); the plan nearest `aim` is returned."""
    groups = {g.id: g for g in dg.prunable}
    total = cm.macs if pick == 0 else cm.params
    multiples = {gid: g.multiple(round_to) for gid, g in groups.items()}

    def counts(r: float) -> dict[int, int]:
        return {gid: g.size - n_keep(g.size, min(r, MAX_GROUP_RATIO), multiples[gid]) for gid, g in groups.items()}

    orders = removal_orders(dg, scores, round_to=round_to)

    def plan_for(c: Mapping[int, int]) -> Plan:
        return _counts_plan(dg, orders, c, criterion=criterion, round_to=round_to)

    def est(c: Mapping[int, int]) -> float:
        return cm.estimate(plan_for(c).removed_roots(dg))[pick] / total

    hi = _bisect(0.0, MAX_GROUP_RATIO, lambda r: est(counts(r)), aim, integer=False)
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
        counts_best = _refine_counts(dg, cm, orders, counts_best, sizes={g: groups[g].size for g in groups}, aim=aim,
                                     pick=pick, round_to=round_to, multiples=multiples, criterion=criterion)
    plan = plan_for(counts_best)
    plan.ratio = hi
    return plan


def _counts_plan(dg: DependencyGraph, orders: Mapping[int, np.ndarray], counts: Mapping[int, int], *,
                 criterion: str | None, round_to: int) -> Plan:
    """Remove the first `counts[g]` slots of each group's removal order."""
    plan = Plan(ratio=None, criterion=criterion, round_to=round_to)
    for gid, n in counts.items():
        if n > 0:
            plan.removals[gid] = sorted(int(i) for i in orders[gid][:n])
    return _signed(dg, plan, ratio=None)


def _as_asked(plan: Plan, counts: Mapping[int, int]) -> bool:
    """True when no group got a slot back from `enforce_min_channels` (a Split piece emptied)."""
    return all(len(plan.removals.get(g, ())) == n for g, n in counts.items() if n > 0)


def _block_moves(size: int, removed: int, multiple: int) -> list[int]:
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


def _closer_by_blocks(counts: dict[int, int], error: Callable[[dict[int, int]], float], *, sizes: Mapping[int, int],
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
        moves = [(g, n) for g in sizes for n in _block_moves(sizes[g], base.get(g, 0), multiples[g])]
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


def _refine_counts(dg: DependencyGraph, cm: CostModel, orders: Mapping[int, np.ndarray], counts: dict[int, int], *,
                   sizes: Mapping[int, int], aim: float, pick: int, round_to: int, multiples: Mapping[int, int],
                   criterion: str | None) -> dict[int, int]:
    """`_closer_by_blocks` on the estimated metric (`pick`: 0 MACs, 1 params) of `_counts_plan`."""
    total = (cm.macs, cm.params)[pick]

    def err(c: dict[int, int]) -> float:
        plan = _counts_plan(dg, orders, c, criterion=criterion, round_to=round_to)
        return abs(cm.estimate(plan.removed_roots(dg))[pick] / total - aim) if _as_asked(plan, c) else math.inf

    return _closer_by_blocks(counts, err, sizes=sizes, multiples=multiples, good=TOLERANCE * aim / 2)


def _global_search(dg: DependencyGraph, ranking: GlobalRanking, cm: CostModel, aim: float, *, pick: int,
                   criterion: str | None, fill: int = 256) -> Plan:
    """Bisection over the number of globally removed slots, then a fill: from the last count above
    `aim`, later-ranked slots are added when they do not overshoot below aim − tolerance/2; at
    round-to > 1, if still outside the tolerance, a local search over one-block moves."""
    total = cm.macs if pick == 0 else cm.params

    def est_of(selected: list[tuple[int, int]]) -> float:
        plan = _signed(dg, ranking.plan_of(selected, criterion=criterion), ratio=None)
        return cm.estimate(plan.removed_roots(dg))[pick] / total

    k = int(_bisect(0.0, float(ranking.removable), lambda x: est_of(ranking.select(int(x))), aim, integer=True))
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
    plan = _signed(dg, ranking.plan_of(best[1], criterion=criterion), ratio=None)
    if best[0] <= TOLERANCE * aim / 2 or ranking.round_to <= 1:
        return plan
    # Whole blocks are too coarse for the fill: a local search over one-block moves, each group
    # losing its slots in the ranking's order.
    orders = ranking.group_orders()
    counts = _refine_counts(dg, cm, orders, {gid: len(idx) for gid, idx in plan.removals.items()},
                            sizes=ranking.sizes, aim=aim, pick=pick, round_to=ranking.round_to,
                            multiples=ranking.multiples, criterion=criterion)
    return _counts_plan(dg, orders, counts, criterion=criterion, round_to=ranking.round_to)


def make_plan(dg: DependencyGraph, *, criterion: str = "l2", ratio: float = 0.3, round_to: int = 1,
              allocation: str = "uniform", target_macs: float | None = None, target_params: float | None = None,
              calibration: Calibration = None, shapes: Shapes | None = None) -> tuple[Plan, TargetResult | None]:
    """Score every prunable group once with `criterion` (data-driven criteria read `calibration`),
    then allocate: a ratio (uniform or global), or a MAC / parameter target."""
    from onnxprune.scoring.calibrated import DataDriven
    from onnxprune.scoring.importance import get_importance

    if allocation not in ALLOCATIONS:
        raise OnnxPruneError(f"unknown allocation {allocation!r}; choose one of: {', '.join(ALLOCATIONS)}")
    if target_macs is not None and target_params is not None:
        raise OnnxPruneError("give at most one of target_macs and target_params")
    importance = get_importance(criterion)
    if isinstance(importance, DataDriven):
        importance.configure(calibration=calibration, shapes=shapes)
    if allocation == "uniform" and target_macs is None and target_params is None:
        return uniform_plan(dg, importance, ratio=ratio, round_to=round_to), None
    scores = group_scores(dg, importance)
    if target_macs is None and target_params is None:
        return global_plan(dg, scores, ratio=ratio, round_to=round_to, criterion=criterion), None
    result = target_plan(dg, scores, allocation=allocation, target_macs=target_macs, target_params=target_params,
                         round_to=round_to, criterion=criterion, shapes=shapes)
    return result.plan, result
