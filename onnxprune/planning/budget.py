"""What a plan must meet: one `Budget` (a kind and a value), and the registry of budget kinds.

Kinds: `ratio` (remove R of the prunable channels), `macs` and `params` (keep this fraction of the
original, within 3 %), `latency` (milliseconds in ONNX Runtime; planning/latency_search.py). A kind
checks its value and chooses a plan with an allocation strategy (planning/strategy.py) under a
rounding policy (planning/rounding.py). To add one: a class implementing `BudgetKind`, registered
with `register_budget`, in a module planning/catalog.py imports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from onnxprune.errors import OnnxPruneError
from onnxprune.planning.choice import PlanChoice
from onnxprune.planning.landing import TargetResult
from onnxprune.planning.registry import Registry
from onnxprune.planning.rounding import RoundingPolicy
from onnxprune.planning.strategy import PlanRequest, Strategy


@dataclass(frozen=True)
class Budget:
    kind: str = "ratio"
    value: float = 0.3

    def check(self) -> None:
        budget_kind(self.kind).check(self.value)

    @property
    def is_target(self) -> bool:
        """A MAC, parameter or latency target (not a plain ratio)."""
        return self.kind != "ratio"

    def describe(self) -> str:
        return budget_kind(self.kind).describe(self.value)

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "value": self.value}


class BudgetKind(Protocol):
    name: str

    def check(self, value: float) -> None: ...

    def describe(self, value: float) -> str: ...

    def choose(self, req: PlanRequest, strategy: Strategy, rounding: RoundingPolicy, value: float) -> PlanChoice: ...


KINDS: Registry[BudgetKind] = Registry("budget kind")
register_budget = KINDS.add
budget_kind = KINDS.get


class RatioBudget:
    name = "ratio"

    def check(self, value: float) -> None:
        if not 0.0 <= value < 1.0:
            raise OnnxPruneError(f"--ratio {value:g} is outside [0, 1)")

    def describe(self, value: float) -> str:
        return f"ratio {value:g} of the prunable channels removed"

    def choose(self, req: PlanRequest, strategy: Strategy, rounding: RoundingPolicy, value: float) -> PlanChoice:
        return PlanChoice(strategy.ratio_plan(req, value, round_to=rounding.value), req.scores)


def landed_target(req: PlanRequest, strategy: Strategy, rounding: RoundingPolicy, *, metric: str,
                  value: float) -> tuple[TargetResult, dict[int, TargetResult]]:
    """The strategy's plan for a MAC/parameter target at the first multiple that lands it (the
    preferred one first; curves plan at the policy's multiple only), and every plan tried."""
    tried: dict[int, TargetResult] = {}
    multiples = (rounding.value,) if strategy.name == "curves" else rounding.multiples
    for rt in multiples:
        tried[rt] = req.target(strategy, metric=metric, value=value, round_to=rt)
        if tried[rt].ok:
            return tried[rt], tried
    return tried[rounding.value], tried


class MetricBudget:
    def __init__(self, name: str) -> None:
        self.name = name  # "macs" or "params"

    def check(self, value: float) -> None:
        if not 0.0 < value <= 1.0:
            raise OnnxPruneError(f"target {self.name} must be a fraction in (0, 1], got {value}")

    def describe(self, value: float) -> str:
        return f"{self.name}: keep {value:.1%} of the original"

    def choose(self, req: PlanRequest, strategy: Strategy, rounding: RoundingPolicy, value: float) -> PlanChoice:
        res, tried = landed_target(req, strategy, rounding, metric=self.name, value=value)
        return PlanChoice(res.plan, req.scores, res, tried=tried)


register_budget(RatioBudget())
register_budget(MetricBudget("macs"))
register_budget(MetricBudget("params"))
