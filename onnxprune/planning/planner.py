"""Choosing the plan: score once, then a ratio, a MAC/parameter target, sensitivity curves or a latency budget.

`choose_plan` is what `api.prune` calls when no plan is given. It keeps what the report needs:
the per-group scores, the target reached, the latency search and the curves' predicted error.

* `ratio` (no target): uniform or global allocation (`onnxprune.planning.allocation`).
* `target_macs` / `target_params`: `allocation.target_plan`, or with `sensitivity` curves the
  per-group allocation of `onnxprune.planning.curves_budget`.
* `target_latency` (ms): `onnxprune.planning.latency_search` searches the MAC target, planning each step
  as above (so curves, when given, decide the per-group ratios at every step).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from onnxprune.errors import OnnxPruneError
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.graph.groups import Group
from onnxprune.io.progress import ProgressFn, report
from onnxprune.measure.curves import SensitivityResult
from onnxprune.planning.allocation import (
    ALLOCATIONS,
    Scores,
    TargetResult,
    complete_plan,
    global_plan,
    target_plan,
)
from onnxprune.planning.curves_budget import SensitivityAllocation, predicted, sensitivity_plan
from onnxprune.planning.latency_search import LatencyOptions, LatencySearch, latency_search
from onnxprune.planning.multiple_race import MultipleRace, race, same_channels, timeable
from onnxprune.planning.plan import Plan, uniform_plan
from onnxprune.scoring.calibrated import Calibration

Shapes = Mapping[str, tuple[int, ...]]


@dataclass
class PlanChoice:
    plan: Plan
    scores: Scores
    target: TargetResult | None = None
    latency: LatencySearch | None = None
    allocation: SensitivityAllocation | None = None  # set when sensitivity curves chose the ratios
    sensitivity: SensitivityResult | None = None  # those curves
    race: MultipleRace | None = None  # both multiples landed the budget and were timed (multiple_race)
    race_skipped: str | None = None  # why they were not timed although asked to


@dataclass(frozen=True)
class Budget:
    """What the plan must meet. At most one of the targets; none means `ratio`."""

    ratio: float = 0.3
    target_macs: float | None = None
    target_params: float | None = None
    target_latency: float | None = None  # milliseconds
    latency: LatencyOptions | None = None
    sensitivity: SensitivityResult | None = None
    sensitivity_error: str = "rel_error"

    def check(self) -> None:
        given = [n for n, v in (("target_macs", self.target_macs), ("target_params", self.target_params),
                                ("target_latency", self.target_latency)) if v is not None]
        if len(given) > 1:
            raise OnnxPruneError(f"give at most one of {', '.join(given)}")
        if self.sensitivity is not None and not given:
            raise OnnxPruneError("sensitivity curves allocate a budget: give target_macs, target_params or "
                                 "target_latency with them")


class _Fixed:
    """An Importance that returns precomputed scores (so a uniform plan reuses them)."""

    def __init__(self, name: str, scores: Scores) -> None:
        self.name, self.scores = name, scores

    def __call__(self, dg: DependencyGraph, group: Group) -> np.ndarray:
        return self.scores[group.id]


def score_groups(dg: DependencyGraph, criterion: str, *, calibration: Calibration = None,
                 shapes: Shapes | None = None, progress: ProgressFn | None = None) -> Scores:
    """One score array per prunable group (data-driven criteria read `calibration`)."""
    from onnxprune.scoring.calibrated import DataDriven
    from onnxprune.scoring.importance import get_importance

    importance = get_importance(criterion)
    if isinstance(importance, DataDriven):
        importance.configure(calibration=calibration, shapes=shapes)
    tick = report(progress)
    groups = dg.prunable
    tick("scoring", 0, len(groups))
    out: Scores = {}
    for i, g in enumerate(groups):
        out[g.id] = np.asarray(importance(dg, g), dtype=np.float64)
        tick("scoring", i + 1, len(groups))
    return out


def choose_plan(dg: DependencyGraph, *, criterion: str = "l2", budget: Budget | None = None, round_to: int = 1,
                allocation: str = "uniform", calibration: Calibration = None, shapes: Shapes | None = None,
                progress: ProgressFn | None = None, prefer_round_to: int | None = None,
                time_multiples: LatencyOptions | None = None) -> PlanChoice:
    """prefer_round_to: a MAC/param/latency budget without curves is planned with this multiple
    first, and with `round_to` only when that one cannot land within 3 % (runtime_profile.ChannelMultiple).
    time_multiples: for a MAC/param budget, time two landed plans with these options and keep the
    faster (onnxprune.planning.multiple_race): the preferred multiple's against round_to's where both land;
    where only round_to lands, round_to's against the preferred plan completed with blocks of
    round_to (allocation.complete_plan). None keeps the preferred (else round_to's) plan untimed."""
    b = budget or Budget()
    b.check()
    if allocation not in ALLOCATIONS:
        raise OnnxPruneError(f"unknown allocation {allocation!r}; choose one of: {', '.join(ALLOCATIONS)}")
    scores = score_groups(dg, criterion, calibration=calibration, shapes=shapes, progress=progress)

    tried: dict[int, TargetResult] = {}  # plan_for's plans by multiple

    def plan_for(metric: str, f: float) -> TargetResult:
        if b.sensitivity is not None:
            return sensitivity_plan(dg, b.sensitivity, scores, metric=metric, target=f, round_to=round_to,
                                    criterion=criterion, error=b.sensitivity_error, shapes=shapes)
        for rt in dict.fromkeys((prefer_round_to or round_to, round_to)):  # the preferred multiple, then round_to
            tried[rt] = plan_at(metric, f, rt)
            if tried[rt].ok:
                return tried[rt]
        return tried[round_to]

    def plan_at(metric: str, f: float, rt: int) -> TargetResult:
        return target_plan(dg, scores, allocation=allocation, round_to=rt, criterion=criterion, shapes=shapes,
                           target_macs=f if metric == "macs" else None,
                           target_params=f if metric == "params" else None)

    def rival(metric: str, f: float, res: TargetResult) -> tuple[TargetResult | None, str | None]:
        """The landed plan to time against `res`, or why there is none: plain round_to where the
        preferred multiple landed; where it did not, its plan completed with blocks of round_to."""
        why = timeable(dg.model, shapes, time_multiples)
        if why is not None:
            return None, why
        assert prefer_round_to is not None
        if res.plan.round_to == prefer_round_to:
            other = plan_at(metric, f, round_to)
        else:
            other = complete_plan(dg, scores, tried[prefer_round_to], round_to=round_to, criterion=criterion,
                                  shapes=shapes)
        if not other.ok:
            return None, f"{other.label} does not land the budget"
        if same_channels(dg, res, other):
            return None, f"{other.label} removes the same channels as {res.label}"
        return other, None

    if b.target_latency is not None:
        search = latency_search(dg, lambda f: plan_for("macs", f), b.target_latency, options=b.latency,
                                shapes=shapes, progress=progress)
        plan = search.chosen.plan if search.chosen is not None else Plan(criterion=criterion, round_to=round_to)
        choice = PlanChoice(plan, scores, search.chosen, latency=search)
    elif b.target_macs is not None or b.target_params is not None:
        metric = "macs" if b.target_macs is not None else "params"
        f = float(b.target_macs if b.target_macs is not None else b.target_params)  # type: ignore[arg-type]
        res = plan_for(metric, f)
        choice = PlanChoice(res.plan, scores, res)
        racing = time_multiples is not None and b.sensitivity is None and prefer_round_to not in (None, round_to)
        if racing and res.ok:
            other, choice.race_skipped = rival(metric, f, res)
            if other is not None:
                res, choice.race = race(dg, res, other, options=time_multiples, shapes=shapes)
                choice.plan, choice.target = res.plan, res
    elif allocation == "uniform":
        choice = PlanChoice(uniform_plan(dg, _Fixed(criterion, scores), ratio=b.ratio, round_to=round_to), scores)
    else:
        choice = PlanChoice(global_plan(dg, scores, ratio=b.ratio, round_to=round_to, criterion=criterion), scores)
    if b.sensitivity is not None:
        choice.allocation = predicted(b.sensitivity, dg, choice.plan, error=b.sensitivity_error)
        choice.sensitivity = b.sensitivity
    return choice
