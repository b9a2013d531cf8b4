"""Landing a MAC or parameter target: a search proposes a plan for an aim, the applied model is
measured, and the aim is corrected until the measured fraction is within the tolerance.

Every allocation strategy (planning/strategy.py) lands its targets here: it only supplies
`search(aim) -> Plan`, a plan whose *estimated* metric (planning/costs.py) is near `aim`. When later
stages shrink the model further (dropped residual blocks), `finish` applies that before measuring,
so the budget counts it and the aim moves to make up for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import onnx

from onnxprune.graph.dependency import DependencyGraph
from onnxprune.io.types import Shapes
from onnxprune.measure.model_stats import model_stats
from onnxprune.planning.costs import CostModel
from onnxprune.planning.plan import Plan

TOLERANCE = 0.03  # targets: |achieved - target| <= 3 % of the target
REAIM = 3

Finish = Callable[[onnx.ModelProto], onnx.ModelProto]  # what later stages do to the width-pruned model


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


def bisect(lo: float, hi: float, value: Callable[[float], float], want: float, *, integer: bool,
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


def land_target(dg: DependencyGraph, cm: CostModel, search: Callable[[float], Plan], *, metric: str,
                target: float, shapes: Shapes | None = None, finish: Finish | None = None) -> TargetResult:
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
        if not removed and finish is None:
            return 1.0
        applied = ApplyPlan(dg, removed)(dg.model).model if removed else dg.model
        st = model_stats(finish(applied) if finish is not None else applied, shapes=shapes)
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
