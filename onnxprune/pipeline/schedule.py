"""Iterative pruning: reach the budget in K steps, re-fitting and checking the model after each.

The fractions kept after each step and each step's budget come from planning/steps.py
(geometric or linear schedule), measured against the original so one step's rounding is made up
by the next.

Each step is one run of the pipeline (pipeline/stages.py) on the previous step's model: scoring, planning, apply, verify
and, when calibration data is given, least-squares reconstruction (`passes.reconstruct`) of the
step's pruned layers to the step's input model — so the next step scores a re-fitted model.
After each step the model is checked against the *original* with `validate.validate`: cosine of
every output on the held calibration samples (`min_cosine`), and the accuracy drop on labelled
data (`max_acc_drop`, percentage points). When a step misses a threshold the loop stops and the
last good step's model is kept (`StepsResult.stopped`); if the first step already misses it,
`ThresholdError` is raised.

Sensitivity curves describe the model they were measured on, so with curves the first step
allocates from them (they must match the original) and every later step re-measures them on its
own input model, with the same settings (ratio grid, samples, criterion, round_to, fill) and the
calibration data: each step's per-group ratios reflect what the previous steps removed and
re-fitted (measured on YOLOv8n at 0.7x MACs, benchmarks/yolo_variants.py). A latency target and
a replayed plan describe the original model only, so they are not combined with more than one step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import onnx

from onnxprune.calib.source import CalibrationSource
from onnxprune.config import PruneConfig
from onnxprune.errors import NothingToPruneError, OnnxPruneError, ThresholdError
from onnxprune.io.progress import ProgressFn, report
from onnxprune.io.types import Feed, Shapes
from onnxprune.measure.curves import (
    DEFAULT_SAMPLES,
    LabelledData,
    SensitivityResult,
    load_labelled,
    sensitivity_curves,
)
from onnxprune.measure.model_stats import model_stats
from onnxprune.pipeline.analyse import analyse_model
from onnxprune.pipeline.result import StepRecord, StepsResult
from onnxprune.pipeline.stages import Pipeline, PruneState, default_pipeline
from onnxprune.planning.steps import final_kept, kept_fractions, step_budget


@dataclass(frozen=True)
class Gate:
    """Thresholds checked after every step against the original model."""

    min_cosine: float | None = None
    max_acc_drop: float | None = None  # percentage points; needs `labelled`
    feeds: Sequence[Feed] | None = None  # calibration samples for the cosine (None: random inputs)
    labelled: LabelledData | None = None

    @property
    def active(self) -> bool:
        return self.min_cosine is not None or self.max_acc_drop is not None


def check_gate(original: onnx.ModelProto, pruned: onnx.ModelProto, gate: Gate, *,
               shapes: Shapes | None = None) -> tuple[float | None, float | None, list[str]]:
    """(min cosine, accuracy drop in points, failures) of `pruned` against `original`."""
    from onnxprune.measure.validate import threshold_failures, validate

    cos: float | None = None
    drop: float | None = None
    failures: list[str] = []
    if gate.min_cosine is not None or gate.feeds is not None:
        feeds = None if gate.feeds is None else [dict(f) for f in gate.feeds]
        rep = validate(original, pruned, feeds=feeds, shapes=shapes)
        cos = rep.min_cosine
        failures += threshold_failures(rep, min_cosine=gate.min_cosine)
    if gate.labelled is not None:
        rep = validate(original, pruned, feeds=[dict(f) for f in gate.labelled.feeds], labels=gate.labelled.labels,
                       label_output=gate.labelled.output)
        drop = rep.labels.acc_drop if rep.labels is not None else None
        failures += threshold_failures(rep, max_acc_drop=gate.max_acc_drop)
    elif gate.max_acc_drop is not None:
        raise OnnxPruneError("--max-acc-drop needs labelled data (--data with labels, or --labels)")
    return cos, drop, failures


def gate_for(model: onnx.ModelProto, config: PruneConfig) -> Gate:
    """The thresholds of `config.checks` with the data they are checked on: cosine on held calibration
    samples, accuracy on labelled data."""
    c = config.checks
    real = config.real_data
    source = CalibrationSource.of(config.calibration, model, shapes=config.analysis.shapes)
    feeds = source.first(DEFAULT_SAMPLES) if real else None
    labelled = load_labelled(model, data=c.data, labels=c.labels, calibration=config.calibration,
                             shapes=config.analysis.shapes)
    if c.max_acc_drop is not None and labelled is None:
        raise OnnxPruneError("--max-acc-drop needs labelled data: --data test.npz (labels under 'y') or --labels")
    return Gate(c.min_cosine, c.max_acc_drop, feeds, labelled)


def remeasured(curves: SensitivityResult, model: onnx.ModelProto, config: PruneConfig, *,
               progress: ProgressFn | None = None) -> SensitivityResult:
    """`curves` measured again on `model`, with the same grid, samples, criterion, round_to, fill,
    grouped-conv and heads modes (the config's when the file does not say)."""
    a = config.analysis
    dg = analyse_model(model, shapes=a.shapes, approximate=a.approximate, grouped=curves.grouped or a.grouped,
                       heads=curves.heads or a.heads,
                       calibration=config.calibration)
    return sensitivity_curves(dg, calibration=config.calibration, ratios=curves.ratios,
                              criterion=curves.criterion, samples=curves.samples, round_to=curves.round_to,
                              shapes=a.shapes, model_name=curves.model, progress=progress, fill=curves.fill)


def prune_in_steps(model: onnx.ModelProto, config: PruneConfig, *, gate: Gate | None = None,
                   progress: ProgressFn | None = None, pipeline: Pipeline | None = None) -> StepsResult:
    """Prune `model` in `config.steps.steps` steps (see the module doc), each a run of `pipeline`;
    `gate`: thresholds with their data (default: `config.checks`, on the configured data)."""
    budget, shapes = config.budget, config.analysis.shapes
    steps = config.steps.steps
    fractions = kept_fractions(final_kept(budget), steps, config.steps.schedule)
    a = config.analysis
    original = analyse_model(model, shapes=shapes, approximate=a.approximate, grouped=a.grouped, heads=a.heads,
                             calibration=config.calibration).model
    g = gate or (gate_for(original, config) if config.stepped else Gate())
    curves = SensitivityResult.coerce(config.scoring.sensitivity)
    base = model_stats(original, shapes=shapes)
    out = StepsResult(None, original, [], config.steps.schedule, 0)
    current, achieved = original, 1.0
    tick = report(progress)
    for k, keep in enumerate(fractions, start=1):
        tick("steps", k - 1, steps)
        if curves is not None and k > 1:
            curves = remeasured(curves, current, config, progress=progress)
        step_config = dataclasses.replace(config, budget=step_budget(budget, keep, achieved),
                                          scoring=dataclasses.replace(config.scoring, sensitivity=curves))
        try:
            res = (pipeline or default_pipeline()).run(PruneState(step_config, current, progress)).result()
        except NothingToPruneError as exc:
            if k == 1 and steps == 1:
                raise
            out.idle.append(f"step {k} removed nothing ({exc})")  # the next step asks for more
            continue
        st = model_stats(res.model, shapes=shapes)
        macs_kept, params_kept = st.macs / max(base.macs, 1), st.params / max(base.params, 1)
        cos, drop, failures = check_gate(original, res.model, g, shapes=shapes) if g.active or g.feeds \
            else (None, None, [])
        rec = res.reconstruction.to_json() if res.reconstruction is not None else None
        out.steps.append(StepRecord(k, keep, macs_kept, params_kept, cos, drop, not failures, rec,
                                    res.decisions(), res.channels))
        if failures:
            if k == 1:
                raise ThresholdError(f"step 1 of {steps} already fails: {'; '.join(failures)} (nothing written)")
            out.stopped = f"step {k} failed ({'; '.join(failures)})"
            break
        out.result, out.kept_step = res, k
        current = res.model
        achieved = macs_kept if budget.kind == "macs" else params_kept if budget.kind == "params" \
            else 1.0 - out.channels_removed
    tick("steps", steps, steps)
    if out.result is None:
        raise NothingToPruneError(f"no step removed anything: {out.idle[-1]}")
    return out
