"""What planning decided, and what the report needs to say about it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from onnxprune.planning.costs import Scores
from onnxprune.planning.landing import TargetResult
from onnxprune.planning.plan import Plan

if TYPE_CHECKING:
    from onnxprune.measure.curves import SensitivityResult
    from onnxprune.planning.curves_alloc import SensitivityAllocation
    from onnxprune.planning.latency_search import LatencySearch
    from onnxprune.planning.tuning import MultipleRace


@dataclass
class PlanChoice:
    plan: Plan
    scores: Scores
    target: TargetResult | None = None  # a MAC / parameter target: what it reached
    latency: LatencySearch | None = None  # a latency target: every measured step
    allocation: SensitivityAllocation | None = None  # curves chose the ratios: their predicted error
    sensitivity: SensitivityResult | None = None  # those curves
    tried: dict[int, TargetResult] = field(default_factory=dict)  # a target's plan at each multiple tried
    race: MultipleRace | None = None  # the tuning step timed two landed plans (planning/tuning.py)
    race_skipped: str | None = None  # why it did not, although asked to
