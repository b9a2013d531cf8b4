"""What a prune run returns: the pruned model and every figure about it, serialised by `to_json`.

The CLI only formats this (a table, a few lines, the `--report` file); the Python API returns it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import onnx

from onnxprune.graph.dependency import DependencyGraph
from onnxprune.io.model_io import save_model
from onnxprune.measure.bench import LatencyOptions, interleaved_latency
from onnxprune.measure.model_stats import ModelStats, model_stats
from onnxprune.measure.validate import ValidationReport
from onnxprune.passes.reconstruct import ReconstructResult
from onnxprune.pipeline.decisions import group_decisions
from onnxprune.pipeline.depth import DepthResult
from onnxprune.planning.choice import PlanChoice
from onnxprune.planning.landing import TargetResult
from onnxprune.planning.plan import Plan, removed_channels
from onnxprune.planning.recipe import Recipe
from onnxprune.recovery.distill import DistillResult
from onnxprune.verify import VerifyResult

if TYPE_CHECKING:
    from onnxprune.config import PruneConfig


@dataclass
class PruneResult:
    model: onnx.ModelProto  # the pruned (and re-fitted) model
    dg: DependencyGraph  # the analysis the plan refers to (with steps: of the last step's input)
    plan: Plan
    removed_slots: int
    config: PruneConfig
    dense: onnx.ModelProto  # the normalised original (with steps: before step 1)
    verify: VerifyResult | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    target: TargetResult | None = None  # set when a MAC / parameter budget chose the plan
    reconstruction: ReconstructResult | None = None  # set when the layers were re-fitted
    choice: PlanChoice | None = None  # scores, latency search, curves' prediction (None: a replayed plan)
    steps: StepsResult | None = None  # set when the run went in steps or checked thresholds
    latency_ms: tuple[float, float] | None = None  # (dense, pruned), measured interleaved
    depth: DepthResult | None = None  # residual blocks dropped (approximate: the oracle covers the width part)
    # Approximate groups removed: the pruned model against the dense one on calibration samples.
    fidelity: ValidationReport | None = None
    distillation: DistillResult | None = None  # set when the weights were distilled (--distill)
    recipe: Recipe | None = None  # what filled the knobs the caller left unset (None: a replayed plan)

    @property
    def channels(self) -> tuple[int, int]:
        """(channels removed, prunable channels) of the model this result pruned (the last step's)."""
        return removed_channels(self.dg, self.plan)

    @cached_property
    def stats(self) -> tuple[ModelStats, ModelStats]:
        """(dense, pruned) parameters, MACs and size at the configured input shapes."""
        shapes = self.config.analysis.shapes
        return model_stats(self.dense, shapes=shapes), model_stats(self.model, shapes=shapes)

    @property
    def stepped(self) -> bool:
        return self.steps is not None and len(self.steps.steps) > 1

    def measure_latency(self, options: LatencyOptions) -> tuple[float, float]:
        """(dense, pruned) median milliseconds in ONNX Runtime, timed interleaved."""
        ab = interleaved_latency(self.dense, self.model, batch=options.batch, threads=options.threads,
                                 repeat=options.repeat, shapes=self.config.analysis.shapes, feed=options.feed)
        return ab.a.median_ms, ab.b.median_ms

    def verify_line(self) -> str | None:
        """The oracle's verdict, saying which part it covers when blocks were dropped too."""
        if self.verify is None:
            return None if self.depth is None else "verify: not run (no channels removed; dropped blocks are " \
                                                   "approximate, measured on the calibration data instead)"
        scope = "" if self.depth is None else " (width part only; the dropped blocks are approximate, not verified)"
        return self.verify.describe() + scope

    def save(self, path: str | os.PathLike[str]) -> None:
        save_model(self.model, path)

    def removal(self) -> dict[str, Any]:
        """Requested and achieved: channels (a share of the prunable ones) and MACs / params kept."""
        before, after = self.stats
        removed, prunable = self.channels
        achieved = removed / max(prunable, 1) if not self.stepped else self.steps.channels_removed  # type: ignore[union-attr]
        budget = self.config.budget
        asked = budget.value if budget.kind == "ratio" and self.choice is not None else None
        target = None if self.stepped else self.target  # with steps, a target is a fraction of step k's model
        return {"channels_removed": removed, "channels_prunable": prunable,
                "steps": None if self.steps is None else len(self.steps.steps),
                "channels_requested": asked, "channels_achieved": achieved,
                "macs_kept": after.macs / max(before.macs, 1), "params_kept": after.params / max(before.params, 1),
                "budget": None if target is None else {"metric": target.metric, "requested": target.target}}

    def race_json(self) -> dict[str, object] | None:
        """The tuning step's timing, why it was skipped, or None (not asked / not relevant)."""
        c = self.choice
        if c is None or (c.race is None and c.race_skipped is None):
            return None
        return c.race.to_json() if c.race is not None else {"skipped": c.race_skipped}

    def round_to_reason(self) -> str:
        if self.choice is None:
            return "replayed plan"
        race = self.choice.race
        return self.config.rounding.policy().why(used=self.plan.round_to, budget=self.target is not None,
                                                 timed=race is not None and not race.completion)

    def curves_from(self) -> str | None:
        """Where the curves that allocated came from (with steps: re-measured on the step before)."""
        name = _name(self.config.scoring.sensitivity)
        if name is None and self.config.scoring.allocation == "curves":
            return "curves measured on each step's model" if self.stepped else "curves measured in this run"
        if name is None or not self.stepped:
            return name
        k = len(self.steps.steps)  # type: ignore[union-attr]
        return f"curves re-measured on step {k - 1}'s model (step 1: {name})"

    def decisions(self) -> list[dict[str, Any]]:
        """What was decided for every group (pipeline/decisions.py)."""
        return group_decisions(self.dg, self.plan, choice=self.choice, verify=self.verify,
                               reconstruction=self.reconstruction)

    def to_json(self) -> dict[str, Any]:
        """Every figure of the run (the CLI's `--report`, without the file paths)."""
        from onnxprune.measure.compare import compare_dict

        before, after = self.stats
        c = self.choice
        return {
            "ratio": self.config.budget.value if self.config.budget.kind == "ratio" else None,
            "criterion": self.config.scoring.criterion, "allocation": self.config.scoring.allocation,
            "recipe": None if self.recipe is None else self.recipe.to_json(),
            "config": self.config.to_json(),
            "round_to": self.plan.round_to, "round_to_reason": self.round_to_reason(),
            "round_to_race": self.race_json(),
            "target": None if self.target is None else {
                "metric": self.target.metric, "target": self.target.target, "achieved": self.target.achieved},
            "compare": compare_dict(before, after),
            "inputs": self.dg.inputs_json(),
            "removal": self.removal(),
            "verify": None if self.verify is None else
            self.verify.to_json() | {"covers": "width" if self.depth is not None else "all"},
            "depth": None if self.depth is None else self.depth.to_json(),
            "reconstruct": None if self.reconstruction is None else self.reconstruction.to_json(),
            "fidelity": None if self.fidelity is None else self.fidelity.to_dict(),
            "distill": None if self.distillation is None else self.distillation.to_json(),
            "plan": self.plan.to_json(),
            "groups": [g.to_json() | d for g, d in zip(self.dg.groups, self.decisions(), strict=True)],
            "latency_ms": None if self.latency_ms is None else {"before": self.latency_ms[0],
                                                                 "after": self.latency_ms[1]},
            "latency_search": None if c is None or c.latency is None else c.latency.to_json(),
            "sensitivity": None if c is None or c.allocation is None
            else {"file": _name(self.config.scoring.sensitivity), "curves": self.curves_from(),
                  **c.allocation.to_json()},
            "steps": None if self.steps is None else self.steps.to_json(),
            "notes": list(self.notes),
        }


def _name(curves: object) -> str | None:
    """How a report names the curves it was given: their file, or "curves given in memory"."""
    if curves is None:
        return None
    return str(curves) if isinstance(curves, str | os.PathLike) else "curves given in memory"


@dataclass(frozen=True)
class StepRecord:
    step: int
    target: float  # fraction of the original to keep after this step (MACs, params, or channels)
    macs_kept: float  # measured, fraction of the original
    params_kept: float
    min_cosine: float | None
    acc_drop: float | None
    passed: bool
    reconstruction: dict[str, Any] | None
    decisions: list[dict[str, Any]] = field(default_factory=list)
    channels: tuple[int, int] = (0, 0)  # (removed, prunable) channels of this step's input model

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "target": self.target, "macs_kept": self.macs_kept,
                "params_kept": self.params_kept, "min_cosine": self.min_cosine, "acc_drop": self.acc_drop,
                "passed": self.passed, "reconstruction": self.reconstruction, "groups": self.decisions,
                "channels_removed": self.channels[0], "channels_prunable": self.channels[1]}


@dataclass
class StepsResult:
    result: PruneResult | None  # the kept step's
    original: onnx.ModelProto  # the normalised original every step is checked against
    steps: list[StepRecord]
    schedule: str
    kept_step: int
    stopped: str | None = None  # why the loop stopped early
    idle: list[str] = field(default_factory=list)  # steps whose budget rounded to nothing, and why

    @property
    def channels_removed(self) -> float:
        """The share of the prunable channels the kept steps removed (each step's share of what it
        found, compounded: exact while every step prunes the same groups)."""
        left = 1.0
        for rec in (r for r in self.steps if r.step <= self.kept_step):
            left *= 1.0 - rec.channels[0] / max(rec.channels[1], 1)
        return 1.0 - left

    def describe(self) -> str:
        done = f"{len(self.steps)} of the planned steps ran ({self.schedule} schedule)"
        if self.idle:
            done += f"; {'; '.join(self.idle)}"
        if self.stopped:
            return f"steps: {done}; {self.stopped}; kept the model of step {self.kept_step}"
        return f"steps: {done}; kept the model of step {self.kept_step}"

    def to_json(self) -> dict[str, Any]:
        return {"schedule": self.schedule, "kept_step": self.kept_step, "stopped": self.stopped,
                "idle": self.idle, "steps": [s.to_json() for s in self.steps]}
