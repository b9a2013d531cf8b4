"""Iterative pruning: reach the budget in K steps, re-fitting and checking the model after each.

Schedules (the fraction of the original kept after step k of K, for a final fraction F):

* geometric (default): F^(k/K) — every step removes the same *share of what is left*;
* linear: 1 − (1 − F)·k/K — every step removes the same *amount of the original*.

F is the MAC or parameter target (`target_macs` / `target_params`), or 1 − ratio for a ratio
(per-group channels). Step k prunes the current model to (kept_k / kept so far) of its MACs or
parameters, both measured with `stats.model_stats` against the original, so rounding in one step
is corrected by the next; for a ratio, step k removes 1 − kept_k / kept_(k−1) of every group.

Each step is one `api.prune` call on the previous step's model: scoring, planning, apply, verify
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

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import onnx

from onnxprune.errors import NothingToPruneError, OnnxPruneError, ThresholdError
from onnxprune.graph.analysis import DEFAULT_GROUPED
from onnxprune.io.progress import ProgressFn, report
from onnxprune.measure.curves import LabelledData, SensitivityResult, sensitivity_curves
from onnxprune.measure.model_stats import model_stats
from onnxprune.scoring.calibrated import Calibration
from onnxprune.scoring.mask_probe import Feed

SCHEDULES = ("geometric", "linear")
Shapes = Mapping[str, tuple[int, ...]]


def kept_fractions(final: float, steps: int, kind: str = "geometric") -> list[float]:
    """The fraction of the original kept after each of `steps` steps (the last one is `final`)."""
    if steps < 1:
        raise OnnxPruneError(f"--steps must be at least 1, got {steps}")
    if not 0.0 < final <= 1.0:
        raise OnnxPruneError(f"the final kept fraction must be in (0, 1], got {final}")
    if kind == "geometric":
        return [final ** (k / steps) for k in range(1, steps + 1)]
    if kind == "linear":
        return [1.0 - (1.0 - final) * k / steps for k in range(1, steps + 1)]
    raise OnnxPruneError(f"unknown schedule {kind!r}; choose one of: {', '.join(SCHEDULES)}")


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
    result: Any  # api.PruneResult of the kept step
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


def _step_budget(kind: str, keep_now: float, achieved: float) -> float:
    """The budget handed to one api.prune call: a ratio for channels, else a fraction of the current
    model; `achieved` is what the steps before kept (measured), so one step's rounding is made up by the next."""
    if kind == "ratio":
        return max(0.0, 1.0 - keep_now / max(achieved, 1e-9))
    return min(1.0, keep_now / max(achieved, 1e-9))


def remeasured(curves: SensitivityResult, model: onnx.ModelProto, *, calibration: Calibration = None,
               shapes: Shapes | None = None, approximate: Iterable[str] = (), grouped: str = DEFAULT_GROUPED,
               progress: ProgressFn | None = None) -> SensitivityResult:
    """`curves` measured again on `model`, with the same grid, samples, criterion, round_to, fill and
    grouped-conv mode (`grouped` when the file does not say)."""
    from onnxprune.api import analyse

    dg = analyse(model, shapes=shapes, approximate=approximate, grouped=curves.grouped or grouped,
                 calibration=calibration)
    return sensitivity_curves(dg, calibration=calibration, ratios=curves.ratios, criterion=curves.criterion,
                              samples=curves.samples, round_to=curves.round_to, shapes=shapes,
                              model_name=curves.model, progress=progress, fill=curves.fill)


def prune_in_steps(model: onnx.ModelProto, *, steps: int, schedule: str = "geometric", ratio: float = 0.3,
                   target_macs: float | None = None, target_params: float | None = None, gate: Gate | None = None,
                   shapes: Shapes | None = None, progress: ProgressFn | None = None,
                   decisions: bool = False, **prune_kwargs: Any) -> StepsResult:
    """Prune `model` in `steps` steps (see the module doc). `prune_kwargs` go to every `api.prune` call
    (criterion, round_to, allocation, calibration, reconstruct, verify, approximate, ...).
    decisions: keep each step's per-group decisions (onnxprune.pipeline.decisions) in its record."""
    from onnxprune.api import analyse, prune
    from onnxprune.pipeline.decisions import group_decisions

    for bad in ("target_latency", "plan"):
        if prune_kwargs.get(bad) is not None and steps > 1:
            raise OnnxPruneError(f"{bad.replace('_', '-')} cannot be combined with steps (it describes the "
                                 f"original model only)")
    kind = "macs" if target_macs is not None else "params" if target_params is not None else "ratio"
    final = float(target_macs if kind == "macs" else target_params if kind == "params" else 1.0 - ratio)  # type: ignore[arg-type]
    fractions = kept_fractions(final, steps, schedule)
    g = gate or Gate()
    curves = SensitivityResult.coerce(prune_kwargs.pop("sensitivity", None))
    original = analyse(model, shapes=shapes, approximate=prune_kwargs.get("approximate", ()),
                       grouped=prune_kwargs.get("grouped", DEFAULT_GROUPED),
                       calibration=prune_kwargs.get("calibration")).model
    base = model_stats(original, shapes=shapes)
    out = StepsResult(None, original, [], schedule, 0)
    current, achieved = original, 1.0
    tick = report(progress)
    for k, keep in enumerate(fractions, start=1):
        tick("steps", k - 1, steps)
        budget = _step_budget(kind, keep, achieved)
        kw: dict[str, Any] = {"ratio": budget} if kind == "ratio" else {f"target_{kind}": budget}
        if curves is not None and k > 1:
            curves = remeasured(curves, current, calibration=prune_kwargs.get("calibration"), shapes=shapes,
                                approximate=prune_kwargs.get("approximate", ()),
                                grouped=prune_kwargs.get("grouped", DEFAULT_GROUPED), progress=progress)
        try:
            res = prune(current, shapes=shapes, progress=progress, sensitivity=curves, **kw, **prune_kwargs)
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
                                    group_decisions(res) if decisions else [], res.channels))
        if failures:
            if k == 1:
                raise ThresholdError(f"step 1 of {steps} already fails: {'; '.join(failures)} (nothing written)")
            out.stopped = f"step {k} failed ({'; '.join(failures)})"
            break
        out.result, out.kept_step = res, k
        current = res.model
        achieved = macs_kept if kind == "macs" else params_kept if kind == "params" else 1.0 - out.channels_removed
    tick("steps", steps, steps)
    if out.result is None:
        raise NothingToPruneError(f"no step removed anything: {out.idle[-1]}")
    return out
