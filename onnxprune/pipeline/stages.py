"""The main path: a pass manager over one state object.

    analyse ─► score ─► curves ─► plan ─► tune ─► apply ─► verify ─► depth ─► reconstruct ─► distill ─►
    fidelity ─► passes ─► annotate

Each stage is an object with a name that reads the run's `PruneConfig` and the state, and writes
its product into the state. `Pipeline` runs them in order; `default_pipeline()` is the list above,
and callers may insert their own stages (`Pipeline.insert`). `--steps K` runs the same pipeline K
times (pipeline/schedule.py). Model-to-model passes (passes/base.py, including third-party plugins
of the `onnxprune.passes` entry-point group) run inside the `passes` stage.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import onnx

from onnxprune.calib.source import CalibrationLike, CalibrationSource
from onnxprune.config import PruneConfig
from onnxprune.errors import NothingToPruneError, VerifyError
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.graph.keep import keep_layers
from onnxprune.io.progress import ProgressFn, step
from onnxprune.measure.bench import LatencyOptions
from onnxprune.measure.curves import SensitivityResult, sensitivity_curves
from onnxprune.measure.validate import ValidationReport, validate
from onnxprune.passes.annotate import AnnotateShapes
from onnxprune.passes.base import PassManager, resolve_passes
from onnxprune.passes.prune import ApplyPlan
from onnxprune.passes.reconstruct import ReconstructResult
from onnxprune.passes.reconstruct import reconstruct as refit_layers
from onnxprune.passes.rotate import Rotation
from onnxprune.pipeline.analyse import analyse_model, rotate_for_pruning
from onnxprune.pipeline.depth import (
    DepthResult,
    auto_depth,
    choose_blocks,
    drop_depth,
    finish_for,
    requested,
)
from onnxprune.pipeline.result import PruneResult
from onnxprune.planning.choice import PlanChoice
from onnxprune.planning.costs import Scores
from onnxprune.planning.plan import Plan, enforce_min_channels
from onnxprune.planning.planner import choose_plan
from onnxprune.planning.recipe import CURVE_RATIOS, CURVE_SAMPLES
from onnxprune.planning.rounding import n_keep, too_narrow
from onnxprune.planning.strategy import PlanRequest
from onnxprune.planning.tuning import tune_multiples
from onnxprune.recovery.distill import DistillResult, distill
from onnxprune.recovery.distill_data import Split, split_calibration
from onnxprune.scoring.catalog import score_groups
from onnxprune.verify import VerifyResult, verify_pruned

FIDELITY_SAMPLES = 16


@dataclass
class PruneState:
    """What the stages read and write during one run (one step)."""

    config: PruneConfig
    source: onnx.ModelProto  # the model this run prunes (never modified)
    progress: ProgressFn | None = None
    dg: DependencyGraph | None = None
    plan: Plan | None = None  # given: a replayed plan; else the plan stage's
    scores: Scores | None = None
    choice: PlanChoice | None = None
    removed: set[int] = field(default_factory=set)
    model: onnx.ModelProto | None = None  # the pruned model, once applied
    verify: VerifyResult | None = None
    reconstruction: ReconstructResult | None = None
    depth: DepthResult | None = None  # residual blocks dropped (opt-in, approximate)
    block_scores: dict[str, float] | None = None  # every block's score, when this run chose the blocks
    measured_curves: SensitivityResult | None = None  # --allocation curves without a file: the curves stage's
    fidelity: ValidationReport | None = None  # set when approximate groups lost slots
    rotation: Rotation | None = None  # --approximate rotate (passes/rotate.py)
    reference: onnx.ModelProto | None = None  # the dense model before a rotation (dg.model is rotated)
    distillation: DistillResult | None = None
    split: Split | None = None  # with --distill: the calibration data cut into training and held-out parts
    unfitted: onnx.ModelProto | None = None  # with --distill and the re-fit: the pruned model before it
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    @property
    def graph(self) -> DependencyGraph:
        assert self.dg is not None, "the analyse stage runs first"
        return self.dg

    @property
    def curves(self) -> SensitivityResult | None:
        if self.measured_curves is not None:
            return self.measured_curves
        given = SensitivityResult.coerce(self.config.scoring.sensitivity)
        if given is not None:
            given.check_rotated(self.rotation is not None and bool(self.rotation.scores))
        return given

    def distill_split(self) -> Split | None:
        """With --distill, the training and held-out parts of the calibration data (cut once); else None."""
        options = self.config.recovery.distill
        if options is not None and self.split is None:
            self.split = split_calibration(self.config.calibration, self.graph.model, holdout=options.holdout,
                                           seed=options.seed)
        return self.split

    def result(self) -> PruneResult:
        assert self.plan is not None and self.model is not None
        dense = self.reference if self.reference is not None else self.graph.model
        return PruneResult(self.model, self.graph, self.plan, len(self.removed), self.config, dense,
                           verify=self.verify, seconds=time.perf_counter() - self.started, notes=self.notes,
                           target=self.choice.target if self.choice is not None else None,
                           reconstruction=self.reconstruction, choice=self.choice, depth=self.depth,
                           fidelity=self.fidelity, distillation=self.distillation)

    @property
    def drops_blocks(self) -> bool:
        """Whether this run drops residual blocks (after the plan stage)."""
        return requested(self.config, self.plan, replayed=self.choice is None)


class Stage(Protocol):
    name: str

    def run(self, state: PruneState) -> None: ...


class Analyse:
    name = "analyse"

    def run(self, state: PruneState) -> None:
        a = state.config.analysis
        if state.dg is None:
            state.dg = analyse_model(state.source, shapes=a.shapes, approximate=a.approximate, grouped=a.grouped,
                                     heads=a.heads,
                                     calibration=state.config.calibration)
        state.dg = keep_layers(state.dg, a.keep)
        if "rotate" in a.approximate and state.rotation is None:
            with step(state.progress, "rotate"):
                rotated, state.rotation = rotate_for_pruning(state.dg, shapes=a.shapes, approximate=a.approximate,
                                                             grouped=a.grouped, heads=a.heads, keep=a.keep,
                                                             calibration=state.config.calibration)
            state.notes.extend(state.rotation.notes)
            if rotated is not state.dg:
                state.reference, state.dg = state.dg.model, rotated
        if not requested(state.config, state.plan, replayed=state.plan is not None):
            state.dg.require_prunable()  # depth alone needs no prunable channel group


class Score:
    name = "score"

    def run(self, state: PruneState) -> None:
        if state.plan is None:
            c = state.config
            state.scores = score_groups(state.graph, c.scoring.criterion, calibration=c.calibration,
                                        shapes=c.analysis.shapes, progress=state.progress)
            if state.rotation is not None:
                state.scores.update(state.rotation.group_scores(state.graph))


class MeasureCurves:
    """`--allocation curves` without a curves file: measure them here, on this run's model (with steps,
    each step's own), with the recipe's grid (planning/recipe.py) and the configured error."""

    name = "curves"

    def run(self, state: PruneState) -> None:
        c = state.config
        if state.plan is not None or c.scoring.allocation != "curves" or c.scoring.sensitivity is not None:
            return
        state.measured_curves = sensitivity_curves(
            state.graph, calibration=c.calibration, ratios=CURVE_RATIOS, samples=CURVE_SAMPLES,
            round_to=c.rounding.policy().value, shapes=c.analysis.shapes, progress=state.progress,
            scores=state.rotation.group_scores(state.graph) if state.rotation is not None else None)
        state.notes.append(f"sensitivity curves measured in this run: {len(state.measured_curves.curves)} groups x "
                           f"{len(CURVE_RATIOS)} ratios on {state.measured_curves.samples} calibration samples "
                           f"({state.measured_curves.seconds:.1f}s)")


def timing_options(config: PruneConfig, model: onnx.ModelProto) -> LatencyOptions:
    """How latency is measured in this run: on the first samples of the user's data when given."""
    opts = config.latency.options
    if config.real_data and opts.feed is None:
        source = CalibrationSource.of(config.calibration, model, shapes=config.analysis.shapes)
        return dataclasses.replace(opts, feed=source.timing_feed(opts.batch))
    return opts


def _request(state: PruneState) -> PlanRequest:
    c = state.config
    timed = c.budget.kind == "latency" or (c.rounding.time_multiples and c.budget.kind in ("macs", "params"))
    latency = timing_options(c, state.graph.model) if timed else c.latency.options
    assert state.scores is not None
    return PlanRequest(state.graph, state.scores, c.scoring.criterion, c.analysis.shapes, state.curves,
                       c.scoring.sensitivity_error, latency, state.progress)


class Choose:
    name = "plan"

    def run(self, state: PruneState) -> None:
        if state.plan is not None:
            enforce_min_channels(state.graph, state.plan)
            return
        c = state.config
        req = _request(state)
        depth = None
        if c.depth.blocks == "auto":  # the budget splits between depth and width
            state.choice, depth, state.block_scores, notes = auto_depth(req, config=c, progress=state.progress)
            state.notes.extend(notes)
        else:
            if c.depth.blocks:  # the blocks first: a MAC / parameter budget counts them
                depth, state.block_scores, notes = choose_blocks(state.graph, config=c, progress=state.progress)
                state.notes.extend(notes)
                req.finish = finish_for(state.graph, depth) if c.budget.is_target else None
            state.choice = choose_plan(req, c.budget, allocation=c.scoring.allocation,
                                       rounding=c.rounding.policy())
        if c.rounding.time_multiples:
            tune_multiples(req, c.budget, state.choice, rounding=c.rounding.policy(), allocation=c.scoring.allocation,
                           options=req.latency or c.latency.options)
        state.plan = state.choice.plan
        state.plan.depth = depth
        for note in _choice_notes(state.choice):
            state.notes.append(note)


def _choice_notes(choice: PlanChoice) -> list[str]:
    notes = [] if choice.target is None else [choice.target.describe()]
    if choice.latency is not None:
        notes.append(choice.latency.describe())
    if choice.race is not None:
        notes.append(choice.race.describe())
    elif choice.race_skipped is not None:
        notes.append(f"multiples not timed: {choice.race_skipped}")
    return notes


class Apply:
    name = "apply"

    def run(self, state: PruneState) -> None:
        assert state.plan is not None
        dg = state.graph
        state.removed = state.plan.removed_roots(dg)
        if not state.removed and state.drops_blocks:  # depth only: the width part is the dense model
            state.model = onnx.ModelProto()
            state.model.CopyFrom(dg.model)
            return
        if not state.removed:
            raise NothingToPruneError(why_nothing(dg, state.plan, state.config, choice=state.choice))
        state.plan.note_kinds(dg)  # after removed_roots checked a replayed plan's kinds against this analysis
        applied = ApplyPlan(dg, state.removed)(dg.model)
        state.model = applied.model
        state.notes[:0] = applied.notes


class Verify:
    name = "verify"

    def run(self, state: PruneState) -> None:
        c = state.config
        if not c.checks.verify or not state.removed:  # depth alone: nothing the oracle can prove
            return
        assert state.model is not None
        dg, removed = state.graph, state.removed
        exact = dg.exact_roots(removed)
        checked = state.model if exact == removed else ApplyPlan(dg, exact)(dg.model).model
        with step(state.progress, "verify"):
            state.verify = verify_pruned(dg, exact, checked, shapes=c.analysis.shapes, rtol=c.checks.rtol,
                                         feeds=list(dg.feeds) or CalibrationSource.of(
                                             c.calibration, dg.model, shapes=c.analysis.shapes).real_samples())
        state.verify = dataclasses.replace(state.verify, unproven=len(removed - exact))
        if not state.verify.ok:
            raise VerifyError(state.verify.describe() + " (pruned model not written)")


class DropDepth:
    """Residual blocks dropped from the verified width-pruned model (pipeline/depth.py)."""

    name = "depth"

    def run(self, state: PruneState) -> None:
        if not state.drops_blocks:
            return
        assert state.model is not None and state.plan is not None
        assert state.plan.depth is not None, "the plan stage chose the blocks"
        state.model, state.depth = drop_depth(state.model, dg=state.graph, config=state.config,
                                              depth=state.plan.depth, influence=state.block_scores,
                                              progress=state.progress)
        state.notes.append(state.depth.describe())


def _refit(state: PruneState, model: onnx.ModelProto, batches: CalibrationLike) -> None:
    c = state.config
    with step(state.progress, "reconstruct"):
        state.reconstruction = refit_layers(model, dg=state.graph, removed_roots=state.removed, batches=batches,
                                            shapes=c.analysis.shapes, head_floor=c.recovery.head_floor,
                                            damp=c.recovery.damp,
                                            changed=state.depth.changed if state.depth is not None else ())
    state.model = state.reconstruction.model


class Reconstruct:
    name = "reconstruct"

    def run(self, state: PruneState) -> None:
        c = state.config
        if not c.reconstructs:
            return
        assert state.model is not None
        split = state.distill_split()  # distillation's held-out samples stay unseen by the re-fit
        state.unfitted = state.model if split is not None else None
        _refit(state, state.model, c.calibration if split is None else split.train)
        assert state.reconstruction is not None
        state.notes.extend(f"reconstruct: {n}" for n in state.reconstruction.notes)


class Distill:
    """Opt-in: fine-tune the pruned weights toward the dense model (recovery/distill.py). Only
    initializer values change, so the oracle's proof of the pruned structure still holds."""

    name = "distill"

    def run(self, state: PruneState) -> None:
        options = state.config.recovery.distill
        if options is None:
            return
        assert state.model is not None
        with step(state.progress, "distill"):
            state.distillation = distill(state.model, state.graph.model, state.distill_split(), dg=state.graph,
                                         removed_roots=state.removed, options=options)
        state.model = state.distillation.model
        if not state.distillation.changed and state.unfitted is not None:
            # Nothing beat the re-fit: give it back the held-out quarter, as without --distill.
            _refit(state, state.unfitted, state.config.calibration)
            state.distillation.refit_all = True


class Fidelity:
    """With approximate groups removed, which the oracle cannot prove: how close the pruned model stays
    to the dense one (cosine and relative L2 error of every output) on calibration samples."""

    name = "fidelity"

    def run(self, state: PruneState) -> None:
        dg = state.graph
        if dg.exact_roots(state.removed) == state.removed:
            return
        assert state.model is not None
        with step(state.progress, "fidelity"):
            dense = state.reference if state.reference is not None else dg.model
            state.fidelity = fidelity_of(dense, state.model, state.config)


def fidelity_of(dense: onnx.ModelProto, pruned: onnx.ModelProto, config: PruneConfig) -> ValidationReport:
    """`pruned` against `dense` on the first calibration samples (random inputs without data)."""
    shapes = config.analysis.shapes
    feeds = CalibrationSource.of(config.calibration, dense, shapes=shapes).real_samples(FIDELITY_SAMPLES)
    return validate(dense, pruned, feeds=feeds or None, shapes=shapes, samples=FIDELITY_SAMPLES,
                    source="calibration" if feeds else "random")


class RunPasses:
    """Model-to-model passes on the pruned model: Pass objects, or entry-point plugins by name."""

    name = "passes"

    def run(self, state: PruneState) -> None:
        if not state.config.passes:
            return
        assert state.model is not None
        ran = PassManager(resolve_passes(state.config.passes))(state.model)
        state.model = ran.model
        state.notes.extend(ran.notes)


class Annotate:
    name = "annotate"

    def run(self, state: PruneState) -> None:
        assert state.model is not None
        AnnotateShapes()(state.model)


class Pipeline:
    """Runs stages in order over one state (a pass manager for stages)."""

    def __init__(self, stages: Sequence[Stage]) -> None:
        self.stages = list(stages)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.stages]

    def insert(self, stage: Stage, *, after: str) -> Pipeline:
        """A copy with `stage` right after the stage named `after`."""
        i = self.names.index(after)
        return Pipeline([*self.stages[: i + 1], stage, *self.stages[i + 1:]])

    def run(self, state: PruneState) -> PruneState:
        for s in self.stages:
            s.run(state)
        return state


def default_pipeline() -> Pipeline:
    return Pipeline([Analyse(), Score(), MeasureCurves(), Choose(), Apply(), Verify(), DropDepth(), Reconstruct(), Distill(),
                     Fidelity(), RunPasses(), Annotate()])


def why_nothing(dg: DependencyGraph, plan: Plan, config: PruneConfig, *, choice: PlanChoice | None) -> str:
    """Why a plan removes nothing from a model that has prunable groups (one line for the user)."""
    if choice is None:
        return "nothing to prune: the plan removes no channel slot"
    if choice.latency is not None and choice.latency.chosen is None:
        return f"nothing to prune: {choice.latency.describe()}"
    if choice.target is not None:
        t = choice.target
        return (f"nothing to prune: the {t.metric} budget {t.target:.1%} is closest with nothing removed "
                f"(channel counts in multiples of {plan.round_to}); a smaller budget removes some")
    ratio = config.budget.value
    if ratio <= 0:
        return f"nothing to prune: --ratio {ratio:g} removes nothing"
    rt = plan.round_to
    narrow = too_narrow(dg, rt)
    if narrow is not None:
        return f"nothing to prune: {narrow}"
    asked = sum((g.size - n_keep(g.size, ratio, 1)) * g.width for g in dg.prunable)
    prunable = sum(g.channels for g in dg.prunable)
    unit = f"half a block of {rt} channels" if rt > 1 else "one channel slot of any group"
    return (f"nothing to prune: --ratio {ratio:g} asks for {asked} of {prunable} prunable channels, less than "
            f"{unit}; raise --ratio")
