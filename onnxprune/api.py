"""The Python API of the structured pipeline: load -> normalise -> analyse -> score -> plan -> apply -> verify.

    >>> from onnxprune.api import prune
    >>> result = prune("model.onnx", ratio=0.3, verify=True)
    >>> result.save("model.pruned.onnx")
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import onnx

from onnxprune.calib.source import CalibConfig, real_feeds, timing_feed
from onnxprune.errors import NothingToPruneError, OnnxPruneError, VerifyError
from onnxprune.graph.analysis import APPROXIMATE_KINDS, DEFAULT_GROUPED
from onnxprune.graph.dependency import DependencyGraph, dependency_graph
from onnxprune.graph.keep import keep_layers
from onnxprune.io.model_io import load_model, save_model
from onnxprune.io.progress import ProgressFn, step
from onnxprune.measure.curves import DEFAULT_METRIC, SensitivityResult
from onnxprune.passes.annotate import AnnotateShapes
from onnxprune.passes.base import Pass, PassManager, resolve_passes
from onnxprune.passes.normalize import Normalize
from onnxprune.passes.prune import ApplyPlan
from onnxprune.passes.reconstruct import ReconstructResult
from onnxprune.passes.reconstruct import reconstruct as refit_layers
from onnxprune.planning.allocation import TargetResult
from onnxprune.planning.cpu_profile import RoundTo, channel_multiple
from onnxprune.planning.latency_search import LatencyOptions
from onnxprune.planning.plan import Plan, enforce_min_channels, n_keep, removed_channels, too_narrow
from onnxprune.planning.planner import Budget, PlanChoice, choose_plan
from onnxprune.verify import DEFAULT_RTOL, VerifyResult, verify_pruned

ModelLike = onnx.ModelProto | str | os.PathLike[str]
Shapes = Mapping[str, tuple[int, ...]]


def _as_model(model: ModelLike) -> onnx.ModelProto:
    return model if isinstance(model, onnx.ModelProto) else load_model(model)


def analyse(model: ModelLike, *, shapes: Shapes | None = None,
            approximate: Iterable[str] = (), grouped: str = DEFAULT_GROUPED,
            calibration: CalibConfig | str | os.PathLike[str] | None = None) -> DependencyGraph:
    """Normalise a copy of the model and build its channel dependency graph.

    calibration: the user's data (as `prune`); the shape probe runs on its first samples (kept in
    `dg.feeds` for the oracle) instead of random inputs (`onnxprune.io.inputs.random_inputs`).
    approximate: opt-in rules that cannot be proven exact, e.g. ("layernorm",): LayerNorm over the
    channel axis then lets channels through; those groups are marked approximate.
    grouped: how grouped convolutions lose channels: "index" (the same index in every group, the
    groups stay), "whole" (whole groups with their input channels) or "auto" (whole groups where a
    group holds fewer than 16 channels, index otherwise; onnxprune/graph/rules/conv.py).
    """
    kinds = frozenset(approximate)
    unknown = kinds - set(APPROXIMATE_KINDS)
    if unknown:
        raise OnnxPruneError(f"unknown --approximate kind(s) {sorted(unknown)}; known: {list(APPROXIMATE_KINDS)}")
    normalised = Normalize()(_as_model(model)).model
    return dependency_graph(normalised, shapes=shapes, allow_approximate=kinds, grouped=grouped,
                            feeds=real_feeds(normalised, calibration))


@dataclass
class PruneResult:
    model: onnx.ModelProto
    dg: DependencyGraph
    plan: Plan
    removed_slots: int
    verify: VerifyResult | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    target: TargetResult | None = None  # set when target_macs / target_params chose the plan
    reconstruction: ReconstructResult | None = None  # set when the layers were re-fitted (reconstruct)
    choice: PlanChoice | None = None  # scores, latency search, curves' prediction (when the plan was chosen here)

    @property
    def channels(self) -> tuple[int, int]:
        """(channels removed, prunable channels) of the model this result pruned."""
        return removed_channels(self.dg, self.plan)

    def save(self, path: str | os.PathLike[str]) -> None:
        save_model(self.model, path)


def prune(model: ModelLike, *, ratio: float = 0.3, criterion: str = "l2", round_to: RoundTo = 1,
          plan: Plan | None = None, verify: bool = False, shapes: Shapes | None = None,
          rtol: float = DEFAULT_RTOL, dg: DependencyGraph | None = None,
          calibration: CalibConfig | str | os.PathLike[str] | None = None, allocation: str = "uniform",
          target_macs: float | None = None, target_params: float | None = None,
          approximate: Iterable[str] = (), reconstruct: bool | None = None,
          target_latency: float | None = None, latency: LatencyOptions | None = None,
          sensitivity: SensitivityResult | str | os.PathLike[str] | None = None,
          sensitivity_error: str = DEFAULT_METRIC, progress: ProgressFn | None = None,
          head_floor: float | None = None, prefer_round_to: int | None = None,
          keep: Sequence[str] = (), grouped: str = DEFAULT_GROUPED, time_multiples: bool = False,
          extra_passes: Sequence[Pass | str] = ()) -> PruneResult:
    """Structured channel pruning. Raises NothingToPruneError if no group can lose a channel, or if
    the plan removes nothing (the message says why: blocks too wide, a ratio below one block, a
    budget the dense model meets).

    criterion: l1, l2, bn-scale, random, or a data-driven one (activation, apoz, wanda, flap,
    obs, sensitivity) that reads `calibration` (random inputs with a CalibrationWarning when None).
    The shape probe, the oracle and latency measurements also run on `calibration`'s first samples
    when it names data (the oracle on random inputs as well; onnxprune.verify).
    allocation: "uniform" (every group loses `ratio`) or "global" (one ranking over all groups).
    target_macs / target_params: keep this fraction of the original MACs / parameters (within 3 %)
    instead of removing `ratio`; see onnxprune.planning.allocation.
    reconstruct: re-fit the affected layers by least squares to the dense model's outputs on the
    calibration data (onnxprune.passes.reconstruct). None: on when `calibration` names data (a path,
    or a CalibConfig with a path), off otherwise. The oracle (`verify`) runs on the pruned model
    before re-fitting; the re-fit's fidelity to the dense model is in `result.reconstruction`.
    target_latency: milliseconds in ONNX Runtime (measured with `latency` options); the MAC target is
    searched (onnxprune.planning.latency_search). sensitivity: curves (onnxprune.measure.curves, or their JSON
    file) that choose per-group ratios for a MAC/param/latency target (onnxprune.planning.curves_budget).
    round_to: kept channel counts are multiples of this (at least one channel); "auto": the ONNX
    Runtime CPU NCHWc block of this machine (onnxprune.planning.cpu_profile: 16 with AVX-512F, 8 with AVX2,
    or the profile ONNXPRUNE_CPU forces; on AVX2 a MAC/param/latency budget tries 16 first and keeps
    it when it lands within 3 %). A ratio is rounded to whole blocks as near to `ratio` of all
    prunable channels as they allow (onnxprune.planning.rounding); `result.channels` says what was removed.
    prefer_round_to: a wider multiple a budget tries first (what "auto" sets on AVX2); `result.plan.round_to`
    is the one used. time_multiples: where both the preferred multiple and round_to land a MAC/param
    budget, build both plans, time them against each other in ONNX Runtime (`latency` options) and
    keep the preferred one unless the other runs more than 5 % faster; where only round_to lands,
    time its plan the same way against the preferred multiple's plan completed with blocks of
    round_to (onnxprune.planning.multiple_race; the CLI does this by default). Off: the preferred multiple
    where it lands, else round_to, untimed and reproducible.
    progress: a callback for long steps (onnxprune.io.progress); nothing is printed.
    keep: fnmatch patterns over node names; the channel groups those layers produce are not pruned
    (onnxprune.graph.keep). A pattern that matches no such layer is an error.
    grouped: as `analyse` (used when `dg` is not given).
    head_floor: with reconstruction, fit the layers that produce a final Sigmoid's logits (a
    detector's class scores) weighted by the sigmoid's slope plus this floor (e.g. 0.01;
    onnxprune.recovery.heads); None fits them like every other layer.
    extra_passes: passes run on the pruned (and re-fitted) model, in order: Pass objects, or names of
    plugins registered under the `onnxprune.passes` entry-point group (onnxprune.passes.base.resolve_passes).
    """
    if not 0.0 <= ratio < 1.0:
        raise OnnxPruneError(f"ratio must be in [0, 1), got {ratio}")
    if head_floor is not None and head_floor < 0:
        raise OnnxPruneError(f"head_floor must be >= 0, got {head_floor}")
    if prefer_round_to is not None and prefer_round_to < 1:
        raise OnnxPruneError(f"prefer_round_to must be at least 1, got {prefer_round_to}")
    rounding = channel_multiple(round_to)
    after = resolve_passes(extra_passes)  # an unknown plugin name fails before any work
    multiple, prefer = rounding.value, prefer_round_to if prefer_round_to is not None else rounding.prefer
    start = time.perf_counter()
    timed = target_latency is not None or (time_multiples and (target_macs or target_params))
    if timed and calibration is not None and (latency is None or latency.feed is None):
        opts = latency or LatencyOptions()
        latency = dataclasses.replace(opts, feed=timing_feed(_as_model(model), calibration, batch=opts.batch))
    dg = keep_layers(dg or analyse(model, shapes=shapes, approximate=approximate, grouped=grouped,
                                   calibration=calibration), keep)
    dg.require_prunable()
    target: TargetResult | None = None
    choice: PlanChoice | None = None
    if plan is None:
        curves = SensitivityResult.coerce(sensitivity)
        budget = Budget(ratio=ratio, target_macs=target_macs, target_params=target_params,
                        target_latency=target_latency, latency=latency, sensitivity=curves,
                        sensitivity_error=sensitivity_error)
        choice = choose_plan(dg, criterion=criterion, budget=budget, round_to=multiple, prefer_round_to=prefer,
                             allocation=allocation, calibration=calibration, shapes=shapes, progress=progress,
                             time_multiples=(latency or LatencyOptions()) if time_multiples else None)
        plan, target = choice.plan, choice.target
    else:
        enforce_min_channels(dg, plan)
    removed = plan.removed_roots(dg)
    if not removed:
        raise NothingToPruneError(_why_nothing(dg, plan, ratio=ratio, choice=choice, replayed=choice is None))
    result = ApplyPlan(dg, removed)(dg.model)
    out = PruneResult(result.model, dg, plan, len(removed), notes=list(result.notes), target=target, choice=choice)
    if target is not None:
        out.notes.append(target.describe())
    if choice is not None and choice.latency is not None:
        out.notes.append(choice.latency.describe())
    if choice is not None and (choice.race is not None or choice.race_skipped is not None):
        out.notes.append(choice.race.describe() if choice.race is not None
                         else f"multiples not timed: {choice.race_skipped}")
    if verify:
        exact = dg.exact_roots(removed)
        checked = result.model if exact == removed else ApplyPlan(dg, exact)(dg.model).model
        with step(progress, "verify"):
            out.verify = verify_pruned(dg, exact, checked, shapes=shapes, rtol=rtol,
                                       feeds=list(dg.feeds) or real_feeds(dg.model, calibration))
        if exact != removed:
            out.notes.append(f"{len(removed - exact)} channel slots of approximate groups removed: not covered "
                             f"by the exactness check (verified the other {len(exact)})")
        if not out.verify.ok:
            raise VerifyError(out.verify.describe() + " (pruned model not written)")
    if _wants_reconstruct(reconstruct, calibration):
        with step(progress, "reconstruct"):
            out.reconstruction = refit_layers(result.model, dg=dg, removed_roots=removed, batches=calibration,
                                              shapes=shapes, head_floor=head_floor)
        out.model = out.reconstruction.model
        out.notes.extend(f"reconstruct: {n}" for n in out.reconstruction.notes)
    if after:
        ran = PassManager(after)(out.model)
        out.model = ran.model
        out.notes.extend(ran.notes)
    AnnotateShapes()(out.model)
    out.seconds = time.perf_counter() - start
    return out


def _why_nothing(dg: DependencyGraph, plan: Plan, *, ratio: float, choice: PlanChoice | None, replayed: bool) -> str:
    """Why a plan removes nothing from a model that has prunable groups (one line for the user)."""
    if replayed:
        return "nothing to prune: the plan removes no channel slot"
    if choice is not None and choice.latency is not None and choice.latency.chosen is None:
        return f"nothing to prune: {choice.latency.describe()}"
    if choice is not None and choice.target is not None:
        t = choice.target
        return (f"nothing to prune: the {t.metric} budget {t.target:.1%} is closest with nothing removed "
                f"(channel counts in multiples of {plan.round_to}); a smaller budget removes some")
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


def _wants_reconstruct(flag: bool | None, calibration: CalibConfig | str | os.PathLike[str] | None) -> bool:
    """Explicit flag, else on only when real calibration data is given (not random inputs)."""
    if flag is not None:
        return flag
    if isinstance(calibration, CalibConfig):
        return calibration.path is not None
    return calibration is not None
