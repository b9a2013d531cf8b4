"""Allocation strategies: how many slots each group loses, behind one interface.

A strategy answers two questions for a `PlanRequest` (the scored dependency graph):

- `ratio_plan(req, ratio, round_to=...)`: remove `ratio` of the prunable channels;
- `searcher(req, metric, round_to=...)`: a function `aim -> Plan` whose estimated MACs or parameters
  (planning/costs.py) are near `aim`; `PlanRequest.target` lands it on the measured model
  (planning/landing.py), so every strategy meets a target the same way.

Strategies register by name (`register_strategy`); planning/catalog.py imports them all. To add
one: a module with a class implementing `Strategy`, registered, and imported by the catalog.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Protocol

from onnxprune.errors import OnnxPruneError
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.io.progress import ProgressFn
from onnxprune.io.types import Shapes
from onnxprune.measure.bench import LatencyOptions
from onnxprune.planning.costs import CostModel, Scores
from onnxprune.planning.landing import Finish, TargetResult, land_target
from onnxprune.planning.plan import Plan
from onnxprune.planning.registry import Registry

if TYPE_CHECKING:
    from onnxprune.measure.curves import SensitivityResult


@dataclass
class PlanRequest:
    """What every strategy and budget kind plans from."""

    dg: DependencyGraph
    scores: Scores
    criterion: str | None = None
    shapes: Shapes | None = None
    curves: SensitivityResult | None = None  # sensitivity curves (the "curves" strategy)
    curves_error: str = "rel_error"  # which error of the curves the allocation minimises
    latency: LatencyOptions | None = None  # how a latency budget measures
    progress: ProgressFn | None = None
    finish: Finish | None = None  # later stages' change to the model a target counts (dropped blocks)

    @cached_property
    def costs(self) -> CostModel:
        return CostModel(self.dg, shapes=self.shapes)

    def target(self, strategy: Strategy, *, metric: str, value: float, round_to: int) -> TargetResult:
        """The strategy's plan that keeps `value` of the `metric` ("macs"/"params"), within the tolerance."""
        if metric not in ("macs", "params"):
            raise OnnxPruneError(f"a target is on macs or params, got {metric!r}")
        if not 0.0 < value <= 1.0:
            raise OnnxPruneError(f"target {metric} must be a fraction in (0, 1], got {value}")
        total = self.costs.macs if metric == "macs" else self.costs.params
        if total <= 0:
            raise OnnxPruneError(f"the model has no {metric} to reduce")
        result = land_target(self.dg, self.costs, strategy.searcher(self, metric, round_to=round_to),
                             metric=metric, target=value, shapes=self.shapes, finish=self.finish)
        result.plan.criterion = self.criterion
        result.plan.round_to = round_to
        return result


class Strategy(Protocol):
    name: str

    def ratio_plan(self, req: PlanRequest, ratio: float, *, round_to: int) -> Plan: ...

    def searcher(self, req: PlanRequest, metric: str, *, round_to: int) -> Callable[[float], Plan]: ...


STRATEGIES: Registry[Strategy] = Registry("allocation")
register_strategy = STRATEGIES.add
registered_strategy = STRATEGIES.get
strategy_names = STRATEGIES.names
