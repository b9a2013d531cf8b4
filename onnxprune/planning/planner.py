"""Choosing the plan: a budget kind, an allocation strategy and a rounding policy, over the scores.

`choose_plan` is the planning stage of the pipeline. It also is the catalog: importing it registers
every strategy (uniform, global, curves) and budget kind (ratio, macs, params, latency). With
sensitivity curves (`PlanRequest.curves`) the curves strategy allocates, whatever `allocation`
says, and the report gets their predicted error.
"""

from __future__ import annotations

from onnxprune.errors import OnnxPruneError
from onnxprune.planning import global_rank, latency_search, uniform  # noqa: F401 - registrations
from onnxprune.planning.budget import Budget, budget_kind
from onnxprune.planning.choice import PlanChoice
from onnxprune.planning.curves_alloc import predicted
from onnxprune.planning.rounding import RoundingPolicy
from onnxprune.planning.strategy import PlanRequest, registered_strategy, strategy_names

# What --allocation offers. "curves": per-group shares from sensitivity curves, from --sensitivity or
# measured in the run (pipeline/stages.py: MeasureCurves).
ALLOCATIONS = ("uniform", "global", "curves")


def choose_plan(req: PlanRequest, budget: Budget, *, allocation: str = "uniform",
                rounding: RoundingPolicy) -> PlanChoice:
    budget.check()
    if allocation not in strategy_names():
        raise OnnxPruneError(f"unknown allocation {allocation!r}; choose one of: {', '.join(ALLOCATIONS)}")
    if req.curves is not None and not budget.is_target:
        raise OnnxPruneError("sensitivity curves allocate a budget: give target_macs, target_params or "
                             "target_latency with them")
    strategy = registered_strategy("curves" if req.curves is not None else allocation)
    choice = budget_kind(budget.kind).choose(req, strategy, rounding, budget.value)
    if req.curves is not None:
        choice.allocation = predicted(req.curves, req.dg, choice.plan, error=req.curves_error)
        choice.sensitivity = req.curves
    return choice
