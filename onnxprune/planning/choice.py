"""What planning decided, and what the report needs to say about it."""

from __future__ import annotations

from dataclasses import dataclass, field

from onnxprune.measure.bench import LatencyOptions
from onnxprune.measure.curves import SensitivityResult
from onnxprune.planning.costs import Scores
from onnxprune.planning.landing import TOLERANCE, TargetResult
from onnxprune.planning.plan import Plan

MARGIN = 0.05  # the tuning step switches multiples only for a plan more than this much faster


@dataclass(frozen=True)
class LatencyStep:
    macs_target: float
    macs_kept: float  # measured (model_stats) fraction of the dense MACs
    ms: float  # dense_ms / speedup
    speedup: float = 0.0  # median of the per-pair dense / pruned ratios (interleaved runs)


@dataclass
class LatencySearch:
    target_ms: float
    dense_ms: float
    options: LatencyOptions
    steps: list[LatencyStep] = field(default_factory=list)
    chosen: TargetResult | None = None  # None: the dense model already meets the target
    achieved_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.achieved_ms <= self.target_ms * (1 + TOLERANCE)

    @property
    def within(self) -> bool:
        """Within 3 % of the target (faster counts only when there was nothing slower to choose)."""
        return abs(self.achieved_ms - self.target_ms) <= TOLERANCE * self.target_ms

    def describe(self) -> str:
        opts = f"batch {self.options.batch}, threads {self.options.threads or 'default'}"
        if self.chosen is None:
            return (f"latency: the dense model already runs in {self.dense_ms:.3f} ms <= target "
                    f"{self.target_ms:.3f} ms ({opts}); nothing pruned")
        head = (f"latency: {self.achieved_ms:.3f} ms (target {self.target_ms:.3f} ms, dense {self.dense_ms:.3f} ms, "
                f"{opts}) at {self.chosen.achieved:.1%} of the MACs after {len(self.steps)} measurements")
        if self.within:
            return head
        if self.ok:
            return head + (" — faster than needed: the next larger MAC budget measured above the target "
                           "(latency moves in steps, or the machine is noisy)")
        return head + (" — target missed: even the smallest MAC budget tried is slower (fixed overhead "
                       "dominates, or ORT's kernels for these channel counts are slower: keep --round-to auto, "
                       "or try 8 or 16)")

    def to_json(self) -> dict[str, object]:
        return {"target_ms": self.target_ms, "dense_ms": self.dense_ms, "achieved_ms": self.achieved_ms,
                "ok": self.ok, "within_tolerance": self.within,
                "macs_kept": None if self.chosen is None else self.chosen.achieved,
                "options": {"batch": self.options.batch, "threads": self.options.threads,
                            "warmup": self.options.warmup, "repeat": self.options.repeat},
                "steps": [{"macs_target": s.macs_target, "macs_kept": s.macs_kept, "ms": s.ms, "speedup": s.speedup}
                          for s in self.steps]}


@dataclass(frozen=True)
class MultipleRace:
    preferred: str  # TargetResult.label of each plan: "16", "8", "16 completed with blocks of 8"
    other: str
    ratio: float  # median over pairs of t(preferred) / t(other): above 1, the other plan ran faster
    chosen: str
    options: LatencyOptions
    completion: bool = False  # the preferred multiple missed: round_to's plan against its completed plan

    def describe(self) -> str:
        how = (f"timed the two plans that land the budget, rounded to {self.preferred} and to {self.other} "
               f"(interleaved in ONNX Runtime, batch {self.options.batch}, threads {self.options.threads or 'default'})")
        if self.chosen == self.preferred:
            return f"{how}: {self.preferred} ran {1 / self.ratio:.2f}x the speed of {self.other}; kept {self.preferred}"
        return (f"{how}: {self.other} ran {self.ratio:.2f}x the speed of {self.preferred} (more than {MARGIN:.0%} "
                f"faster); kept {self.other}")

    def to_json(self) -> dict[str, object]:
        return {"preferred": self.preferred, "other": self.other, "ratio": self.ratio, "chosen": self.chosen,
                "batch": self.options.batch, "threads": self.options.threads, "repeat": self.options.repeat}


@dataclass
class SensitivityAllocation:
    """Removal counts of a plan and the error the curves predict for them (additive)."""

    counts: dict[int, int]
    predicted_error: float
    error: str

    def to_json(self) -> dict[str, object]:
        return {"counts": {str(k): v for k, v in sorted(self.counts.items())},
                "predicted_error": self.predicted_error, "error": self.error}




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
