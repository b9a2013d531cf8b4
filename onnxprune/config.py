"""One configuration for a prune run, grouped the way users think, and checked once (`validate`).

The CLI builds it from its flags; Python callers build it directly or with `PruneConfig.create`
(the flat keyword names `api.prune` accepts). Every stage reads it; none checks it again.

    budget       what to reach: a ratio, a MAC / parameter fraction or a latency (planning/budget.py)
    rounding     multiples of kept channels for the runtime (planning/rounding.py)
    scoring      criterion, allocation strategy, sensitivity curves
    calibration  the user's data (calib/source.py); None: random inputs
    analysis     input shapes, approximate kinds, grouped convs, layers to keep
    depth        residual blocks to drop (opt-in, approximate: planning/depth.py)
    recovery     least-squares re-fit after pruning; opt-in distillation (needs the [distill] extra)
    checks       the oracle, and thresholds checked after each step
    steps        how many steps, on which schedule
    latency      how latency is measured, and whether to measure it before and after
    passes       extra passes run on the pruned model (entry-point plugins or Pass objects)
    recipe       who fills the knobs the caller left unset (planning/recipe.py): the quality recipe, or --fast
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from onnxprune.calib.source import CalibrationLike, CalibrationSource
from onnxprune.errors import OnnxPruneError
from onnxprune.graph.context import (
    APPROXIMATE_KINDS,
    DEFAULT_GROUPED,
    DEFAULT_HEADS,
    GROUPED_MODES,
    HEADS_MODES,
)
from onnxprune.io.types import Shapes
from onnxprune.measure.bench import LatencyOptions
from onnxprune.measure.curves import DEFAULT_METRIC, METRICS, SensitivityResult
from onnxprune.passes.base import Pass
from onnxprune.planning.budget import Budget
from onnxprune.planning.depth import FILLS as BLOCK_FILLS
from onnxprune.planning.depth import SCORES as BLOCK_SCORES
from onnxprune.planning.planner import ALLOCATIONS
from onnxprune.planning.rounding import RoundingPolicy, RoundTo, rounding_policy
from onnxprune.planning.steps import SCHEDULES
from onnxprune.recovery.distill import DistillOptions, require_torch
from onnxprune.scoring.catalog import criteria
from onnxprune.verify import DEFAULT_RTOL


@dataclass(frozen=True)
class AnalysisOptions:
    shapes: Shapes | None = None  # concrete sizes of dynamic input dims
    approximate: tuple[str, ...] = ()  # opt-in approximate kinds (graph/analysis.py: APPROXIMATE_KINDS)
    grouped: str = DEFAULT_GROUPED  # how grouped convolutions lose channels (graph/rules/conv.py)
    keep: tuple[str, ...] = ()  # fnmatch patterns of layers whose output channels stay (graph/keep.py)
    heads: str = DEFAULT_HEADS  # what an attention loses: whole heads, head_dim, or auto (graph/analysis.py)


@dataclass(frozen=True)
class RoundingOptions:
    round_to: RoundTo | str | None = 1  # None or "auto": the runtime's multiple (planning/rounding.py)
    target: str = "ort"  # the runtime: "ort" or "tensorrt"
    prefer: int | None = None  # a wider multiple a budget tries first (auto sets 16 on AVX2)
    time_multiples: bool = False  # the tuning step: time two landed multiples, keep the faster

    def policy(self) -> RoundingPolicy:
        return rounding_policy(self.round_to, target=self.target, prefer=self.prefer)


@dataclass(frozen=True)
class ScoringOptions:
    criterion: str = "l2"
    allocation: str = "uniform"  # "uniform" or "global"; sensitivity curves allocate when given
    sensitivity: SensitivityResult | str | os.PathLike[str] | None = None
    sensitivity_error: str = DEFAULT_METRIC


@dataclass(frozen=True)
class DepthOptions:
    blocks: int | str = 0  # residual blocks to drop, the lowest-scored first (0: none; "auto": the budget splits)
    fill: str = "mean"  # what replaces a dropped branch: its calibration mean, or nothing ("identity")
    score: str = "bi"  # ShortGPT's block influence, or the measured output error ("measured")


@dataclass(frozen=True)
class RecoveryOptions:
    reconstruct: bool | None = None  # None: on when the calibration is real data
    head_floor: float | None = None  # weight final Sigmoid/Softmax logit layers toward the decision (recovery/heads.py)
    distill: DistillOptions | None = None  # fine-tune toward the dense model after the re-fit (recovery/distill.py)
    damp: float | None = None  # the re-fit's relative ridge λ; None: each layer's, chosen on held-out samples


@dataclass(frozen=True)
class CheckOptions:
    verify: bool = False  # the oracle (verify.py)
    rtol: float = DEFAULT_RTOL
    min_cosine: float | None = None  # after each step, against the original, on calibration samples
    max_acc_drop: float | None = None  # after each step, percentage points, on labelled data
    data: str | None = None  # labelled data for max_acc_drop (.npz with labels under 'y')
    labels: str | None = None  # class ids for `data`, or for the calibration samples

    @property
    def gated(self) -> bool:
        return self.min_cosine is not None or self.max_acc_drop is not None


@dataclass(frozen=True)
class StepOptions:
    steps: int = 1
    schedule: str = "geometric"


@dataclass(frozen=True)
class LatencyConfig:
    options: LatencyOptions = field(default_factory=LatencyOptions)
    measure: bool = False  # time the dense and pruned models against each other after pruning


RECIPES = ("auto", "fast")
KNOBS = ("criterion", "allocation", "steps", "head_floor")  # what a recipe may set


@dataclass(frozen=True)
class RecipeOptions:
    name: str = "auto"  # "auto": planning/recipe.py fills the knobs not in `given`; "fast": the quick path
    given: frozenset[str] = frozenset()  # knobs the caller set, which no recipe changes

    @classmethod
    def of(cls, name: str, **knobs: object) -> RecipeOptions:
        """The recipe `name`, with every knob given a value (not None) kept as the caller's."""
        return cls(name, frozenset(k for k, v in knobs.items() if v is not None))


@dataclass(frozen=True)
class PruneConfig:
    budget: Budget = field(default_factory=Budget)
    rounding: RoundingOptions = field(default_factory=RoundingOptions)
    scoring: ScoringOptions = field(default_factory=ScoringOptions)
    calibration: CalibrationLike = None  # api.prune turns it into one CalibrationSource
    analysis: AnalysisOptions = field(default_factory=AnalysisOptions)
    depth: DepthOptions = field(default_factory=DepthOptions)
    recovery: RecoveryOptions = field(default_factory=RecoveryOptions)
    checks: CheckOptions = field(default_factory=CheckOptions)
    steps: StepOptions = field(default_factory=StepOptions)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    passes: tuple[Pass | str, ...] = ()
    recipe: RecipeOptions = field(default_factory=RecipeOptions)

    @property
    def stepped(self) -> bool:
        """More than one step, or thresholds checked after the step: the schedule runs."""
        return self.steps.steps > 1 or self.checks.gated

    @property
    def real_data(self) -> bool:
        """Whether the calibration is the user's data (not random inputs)."""
        cal = self.calibration
        if isinstance(cal, CalibrationSource):
            return cal.is_real
        return cal is not None and getattr(cal, "path", True) is not None

    @property
    def reconstructs(self) -> bool:
        flag = self.recovery.reconstruct
        return self.real_data if flag is None else flag

    def validate(self) -> PruneConfig:
        """Check every option once; returns self. Raises OnnxPruneError with one line."""
        self.budget.check()
        self.rounding.policy()  # the round-to text, the target and the preferred multiple
        s = self.scoring
        if s.criterion not in criteria():
            raise OnnxPruneError(f"unknown criterion {s.criterion!r}; choose one of: {', '.join(criteria())}")
        if self.recipe.name not in RECIPES:
            raise OnnxPruneError(f"unknown recipe {self.recipe.name!r}; choose one of: {', '.join(RECIPES)}")
        unknown_knobs = set(self.recipe.given) - set(KNOBS)
        if unknown_knobs:
            raise OnnxPruneError(f"unknown recipe knob(s) {sorted(unknown_knobs)}; known: {', '.join(KNOBS)}")
        if s.allocation not in ALLOCATIONS:
            raise OnnxPruneError(f"unknown allocation {s.allocation!r}; choose one of: {', '.join(ALLOCATIONS)}")
        if s.sensitivity_error not in METRICS:
            raise OnnxPruneError(f"unknown sensitivity error {s.sensitivity_error!r}; choose one of: "
                                 f"{', '.join(METRICS)}")
        if s.sensitivity is not None and not self.budget.is_target:
            raise OnnxPruneError("--sensitivity needs a budget: --target-macs, --target-params or --target-latency")
        if s.allocation == "curves" and not self.budget.is_target:
            raise OnnxPruneError("--allocation curves needs a budget: --target-macs, --target-params or "
                                 "--target-latency")
        a = self.analysis
        unknown = set(a.approximate) - set(APPROXIMATE_KINDS)
        if unknown:
            raise OnnxPruneError(f"unknown --approximate kind(s) {sorted(unknown)}; known: {list(APPROXIMATE_KINDS)}")
        if "rotate" in a.approximate and not self.real_data:
            raise OnnxPruneError("--approximate rotate needs --calib: the rotation is the PCA of the hidden width's "
                                 "activations on real inputs")
        if a.heads not in HEADS_MODES:
            raise OnnxPruneError(f"unknown --heads mode {a.heads!r}; choose one of: {', '.join(HEADS_MODES)}")
        if a.grouped not in GROUPED_MODES:
            raise OnnxPruneError(f"unknown --grouped-conv mode {a.grouped!r}; choose one of: {', '.join(GROUPED_MODES)}")
        self._check_recovery(self.recovery)
        if self.steps.steps < 1:
            raise OnnxPruneError(f"--steps must be at least 1, got {self.steps.steps}")
        if self.steps.schedule not in SCHEDULES:
            raise OnnxPruneError(f"unknown schedule {self.steps.schedule!r}; choose one of: {', '.join(SCHEDULES)}")
        if self.steps.steps > 1 and self.budget.kind == "latency":
            raise OnnxPruneError("target-latency cannot be combined with steps (it describes the original model only)")
        d = self.depth
        if d.blocks == "auto":
            if self.budget.kind not in ("macs", "params"):
                raise OnnxPruneError("--drop-blocks auto needs a --target-macs or --target-params budget to split "
                                     "between depth and width")
        elif not isinstance(d.blocks, int) or d.blocks < 0:
            raise OnnxPruneError(f"--drop-blocks must be a count >= 0 or auto, got {d.blocks!r}")
        if d.fill not in BLOCK_FILLS:
            raise OnnxPruneError(f"unknown block fill {d.fill!r}; choose one of: {', '.join(BLOCK_FILLS)}")
        if d.score not in BLOCK_SCORES:
            raise OnnxPruneError(f"unknown block score {d.score!r}; choose one of: {', '.join(BLOCK_SCORES)}")
        if d.blocks and self.budget.kind == "latency":  # the latency search times width-pruned models only
            raise OnnxPruneError("--drop-blocks cannot be combined with --target-latency yet: give --target-macs, "
                                 "--target-params or --ratio")
        if d.blocks and self.stepped:
            raise OnnxPruneError("--drop-blocks cannot be combined with --steps/--min-cosine/--max-acc-drop")
        c = self.checks
        if c.max_acc_drop is not None and c.data is None and c.labels is None:
            raise OnnxPruneError("--max-acc-drop needs labelled data: --data test.npz (labels under 'y') or --labels")
        return self

    def _check_recovery(self, r: RecoveryOptions) -> None:
        if r.damp is not None and not 0 <= r.damp < float("inf"):
            raise OnnxPruneError(f"refit damping must be finite and >= 0, got {r.damp}")
        if r.head_floor is not None and r.head_floor < 0:
            raise OnnxPruneError(f"head_floor must be >= 0, got {r.head_floor}")
        if r.distill is not None:
            self._check_distill(r.distill)

    def _check_distill(self, options: DistillOptions) -> None:
        options.check()
        if not self.real_data:
            raise OnnxPruneError("--distill needs the user's data: give --calib (distilling on random inputs "
                                 "teaches nothing about the inputs the model will see)")
        if self.stepped:
            raise OnnxPruneError("--distill cannot be combined with --steps/--min-cosine/--max-acc-drop yet")
        require_torch()

    @classmethod
    def create(cls, *, ratio: float = 0.3, target_macs: float | None = None, target_params: float | None = None,
               target_latency: float | None = None, criterion: str | None = None, allocation: str | None = None,
               sensitivity: SensitivityResult | str | os.PathLike[str] | None = None,
               sensitivity_error: str = DEFAULT_METRIC, round_to: RoundTo | str | None = 1, target: str = "ort",
               prefer_round_to: int | None = None, time_multiples: bool = False, calibration: CalibrationLike = None,
               shapes: Shapes | None = None, approximate: Sequence[str] = (), grouped: str = DEFAULT_GROUPED,
               keep: Sequence[str] = (), heads: str = DEFAULT_HEADS, drop_blocks: int | str = 0,
               block_fill: str = "mean", block_score: str = "bi", reconstruct: bool | None = None, head_floor: float | None = None,
               distill: DistillOptions | None = None, refit_damp: float | None = None,
               verify: bool = False, rtol: float = DEFAULT_RTOL, min_cosine: float | None = None,
               max_acc_drop: float | None = None, data: str | None = None, labels: str | None = None,
               steps: int | None = None, schedule: str = "geometric", latency: LatencyOptions | None = None,
               measure_latency: bool = False, extra_passes: Sequence[Pass | str] = (),
               recipe: str = "auto") -> PruneConfig:
        """The config from flat keyword options (the names of the CLI flags), validated. criterion,
        allocation, steps and head_floor left None are the recipe's to choose (planning/recipe.py)."""
        return cls(
            budget=budget_of(ratio=ratio, target_macs=target_macs, target_params=target_params,
                             target_latency=target_latency),
            rounding=RoundingOptions(round_to, target, prefer_round_to, time_multiples),
            scoring=ScoringOptions(criterion or "l2", allocation or "uniform", sensitivity, sensitivity_error),
            calibration=calibration,
            analysis=AnalysisOptions(dict(shapes) if shapes else None, tuple(approximate), grouped, tuple(keep), heads),
            depth=DepthOptions(drop_blocks, block_fill, block_score),
            recovery=RecoveryOptions(reconstruct, head_floor, distill, refit_damp),
            checks=CheckOptions(verify, rtol, min_cosine, max_acc_drop, data, labels),
            steps=StepOptions(1 if steps is None else steps, schedule),
            latency=LatencyConfig(latency or LatencyOptions(), measure_latency),
            passes=tuple(extra_passes),
            recipe=RecipeOptions.of(recipe, criterion=criterion, allocation=allocation, steps=steps,
                                    head_floor=head_floor),
        ).validate()

    def replace(self, **groups: Any) -> PruneConfig:
        """A copy with some groups replaced (e.g. one step's budget), validated."""
        return dataclasses.replace(self, **groups).validate()

    def to_json(self) -> dict[str, object]:
        curves = self.scoring.sensitivity
        return {"budget": self.budget.to_json(), "criterion": self.scoring.criterion,
                "allocation": self.scoring.allocation,
                "sensitivity": None if curves is None else "given in memory" if isinstance(curves, SensitivityResult)
                else str(curves),
                "round_to": self.rounding.round_to, "for": self.rounding.target,
                "steps": self.steps.steps, "schedule": self.steps.schedule, "head_floor": self.recovery.head_floor,
                "refit_damp": "held-out" if self.recovery.damp is None else self.recovery.damp,
                "depth": {"blocks": self.depth.blocks, "fill": self.depth.fill, "score": self.depth.score}}


def budget_of(*, ratio: float = 0.3, target_macs: float | None = None, target_params: float | None = None,
              target_latency: float | None = None) -> Budget:
    """The one budget the options name: a target if one is given, else the ratio."""
    given: Mapping[str, float | None] = {"macs": target_macs, "params": target_params, "latency": target_latency}
    named = [k for k, v in given.items() if v is not None]
    if len(named) > 1:
        raise OnnxPruneError("give at most one of --target-macs, --target-params and --target-latency")
    if named:
        return Budget(named[0], float(given[named[0]]))  # type: ignore[arg-type]
    return Budget("ratio", float(ratio))
