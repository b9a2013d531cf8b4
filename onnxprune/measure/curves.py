"""Per-group sensitivity curves: the output error (and accuracy) against the pruning ratio of one
group alone, every other group dense.

For each prunable group and each ratio r, its lowest-scored slots (by `criterion`, default l2;
`removal_counts`: r of the group, rounded to whole blocks of `round_to` channels as a uniform plan
rounds a group's own share) are masked at every consume edge in one ONNX Runtime session whose
masks are graph inputs (`scoring.mask_probe.MaskProbe`: masking at the consume edges is exactly
what removing the slots does), and the model outputs on the held calibration samples
are compared with the dense outputs. With labelled data the accuracy is measured in the same session.
The MACs and parameters the model keeps with only that group pruned come from
`allocation.CostModel` (exact for Conv/Gemm/MatMul weights).

JSON schema (`SensitivityResult.to_json`, `"schema": "onnxprune.measure.curves/1"`):

    {"schema", "model", "criterion", "round_to", "ratios": [r...], "samples": N (calibration samples),
     "accuracy_samples": N | null, "dense_accuracy": a | null, "label_output": name | null,
     "macs": M, "params": P (of the dense model), "input_shapes": {name: [dims]}, "seconds": s,
     "groups": [{"id", "sources": [node names], "slots", "channels", "channels_per_slot",
                 "points": [{"ratio", "removed" (slots), "rel_error", "cos_error", "channel_error",
                             "argmax" | null, "margin" | null, "threshold" | null, "auto" | null,
                             "accuracy" | null, "macs_kept", "params_kept"}]}],
     "outputs": [{"name", "kind", "reason"}]}

rel_error = ‖y − y_dense‖ / ‖y_dense‖ and cos_error = 1 − cosine(y, y_dense), each over all held
samples and averaged over the float outputs. channel_error (the default for budgets) is the same
relative error taken per channel of each output (axis 1) and averaged over the channels: an output
that mixes scales, like YOLOv8's [1, 4 + classes, anchors] (box coordinates in pixels next to class
probabilities), is otherwise judged by its largest channels alone, and a budget would prune the
class branch freely. Files written before it existed load with channel_error = rel_error.

The task-aware errors (`measure.task_error`, each output's kind from `measure.output_kinds`, listed
under "outputs"): threshold (probability change weighted toward the decision, for final-Sigmoid maps
and score channels), argmax (fraction of rows or sequence lines whose argmax changes) and margin (its
graded form: the dense winner's margin eroded, compounded over a line), each averaged over the outputs
of its kinds (null when the model has none). auto takes for every output the error its kind calls
for (threshold, margin for sequences and classifiers, channel_error for regression; a mixed output
like YOLOv8's the mean of threshold over its score channels and channel_error over the others) and
averages over the outputs. Files written before them load with null: allocating by them refuses.
accuracy is a fraction in [0, 1]; macs_kept and params_kept are fractions of the dense model's.
A slot is what removal takes at once: one channel, or several where coupling ties them (the same
index in every conv group, a whole conv group, an attention head's index): channels = slots ×
channels_per_slot. Files written before "slots" existed have "channels" = slots and load that way.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxprune.calib.source import CalibrationLike, CalibrationSource
from onnxprune.errors import NothingToPruneError, OnnxPruneError
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.graph.groups import Group
from onnxprune.io.inputs import feed_rows
from onnxprune.io.model_io import write_json
from onnxprune.io.progress import ProgressFn, report
from onnxprune.io.types import Feed, Shapes
from onnxprune.measure.output_kinds import OutputKind, output_kinds
from onnxprune.measure.task_error import TaskSums
from onnxprune.planning.costs import CostModel
from onnxprune.planning.order import removal_orders
from onnxprune.planning.rounding import Quota, RoundTo, n_keep, resolve_round_to, too_narrow
from onnxprune.scoring.catalog import score_groups
from onnxprune.scoring.mask_probe import FILLS as PROBE_FILLS
from onnxprune.scoring.mask_probe import MaskProbe
from onnxprune.scoring.refit_probe import Compensator

SCHEMA = "onnxprune.measure.curves/1"
DEFAULT_RATIOS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
DEFAULT_SAMPLES = 64
METRICS = ("channel_error", "rel_error", "cos_error", "argmax", "margin", "threshold", "auto")
TASK_METRICS = ("argmax", "margin", "threshold", "auto")  # null in files written before them
# What a removed channel's consumers see while a curve is measured: zero, its calibration mean, or
# "refit": zero, with every re-fittable consumer re-fitted by least squares (scoring.refit_probe).
FILLS = (*PROBE_FILLS, "refit")
DEFAULT_METRIC = "channel_error"
JUDGES = {"argmax": ("sequence", "classifier"), "margin": ("sequence", "classifier"), "threshold": ("threshold",)}
NEGLIGIBLE_CHANNEL = 1e-12  # channels with less energy than this share of the output's mean are skipped


# ------------------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class CurvePoint:
    ratio: float
    removed: int  # channel slots masked at this ratio
    rel_error: float
    cos_error: float
    accuracy: float | None
    macs_kept: float  # fraction of the dense model's MACs with only this group pruned
    params_kept: float
    channel_error: float = 0.0
    argmax: float | None = None
    margin: float | None = None
    threshold: float | None = None
    auto: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"ratio": self.ratio, "removed": self.removed, "rel_error": self.rel_error,
                "cos_error": self.cos_error, "channel_error": self.channel_error, "argmax": self.argmax,
                "margin": self.margin, "threshold": self.threshold, "auto": self.auto, "accuracy": self.accuracy,
                "macs_kept": self.macs_kept, "params_kept": self.params_kept}

    def error(self, metric: str) -> float:
        value = getattr(self, metric)
        if value is None:
            raise OnnxPruneError(f"the sensitivity curves have no {metric!r} error: " + (
                "the model has no output of the kind it judges (see the curves' outputs)" if metric != "auto"
                else "they were measured before it existed; measure them again"))
        return float(value)


@dataclass(frozen=True)
class GroupCurve:
    group: int
    sources: list[str]
    slots: int
    points: list[CurvePoint]
    width: int = 1  # channels per slot (Group.width)

    @property
    def channels(self) -> int:
        return self.slots * self.width

    def error_at(self, removed: float, metric: str = DEFAULT_METRIC) -> float:
        """The error when `removed` slots are gone, linear between measured points (0 when none)."""
        xs = [0.0, *(float(p.removed) for p in self.points)]
        ys = [0.0, *(p.error(metric) for p in self.points)]
        return float(np.interp(removed, xs, ys))

    def to_json(self) -> dict[str, Any]:
        return {"id": self.group, "sources": self.sources, "slots": self.slots, "channels": self.channels,
                "channels_per_slot": self.width, "points": [p.to_json() for p in self.points]}


@dataclass
class SensitivityResult:
    model: str
    criterion: str
    round_to: int
    ratios: list[float]
    samples: int
    macs: int
    params: int
    curves: list[GroupCurve] = field(default_factory=list)
    dense_accuracy: float | None = None
    accuracy_samples: int | None = None
    label_output: str | None = None
    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    seconds: float = 0.0
    fill: str = "zero"  # what a masked channel read while measuring (scoring.mask_probe)
    grouped: str | None = None  # the --grouped-conv mode of the analysis (None: a file from before it was kept)
    heads: str | None = None  # the --heads mode of the analysis (None: a file from before it was kept)
    outputs: list[dict[str, str]] = field(default_factory=list)  # each output's kind (measure.output_kinds)
    rotated: bool | None = None  # measured on the rotated hidden width (--approximate rotate); None: not recorded

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "model": self.model, "criterion": self.criterion, "round_to": self.round_to,
                "ratios": self.ratios, "samples": self.samples, "accuracy_samples": self.accuracy_samples,
                "dense_accuracy": self.dense_accuracy, "label_output": self.label_output, "macs": self.macs,
                "params": self.params, "input_shapes": self.input_shapes, "seconds": self.seconds,
                "fill": self.fill, "grouped": self.grouped, "heads": self.heads, "outputs": self.outputs,
                "rotated": self.rotated, "groups": [c.to_json() for c in self.curves]}

    def save(self, path: str | os.PathLike[str]) -> None:
        write_json(path, self.to_json())

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SensitivityResult:
        if data.get("schema") != SCHEMA:
            raise OnnxPruneError(f"not an onnxprune sensitivity file (schema {data.get('schema')!r}, "
                                 f"expected {SCHEMA!r})")
        curves = [GroupCurve(int(g["id"]), [str(s) for s in g["sources"]], int(g.get("slots", g["channels"])),
                             [CurvePoint(float(p["ratio"]), int(p["removed"]), float(p["rel_error"]),
                                         float(p["cos_error"]),
                                         None if p.get("accuracy") is None else float(p["accuracy"]),
                                         float(p["macs_kept"]), float(p["params_kept"]),
                                         float(p.get("channel_error", p["rel_error"])),
                                         *(_optional(p.get(m)) for m in TASK_METRICS)) for p in g["points"]],
                             int(g.get("channels_per_slot", 1)))
                  for g in data["groups"]]
        return cls(str(data["model"]), str(data["criterion"]), int(data["round_to"]),
                   [float(r) for r in data["ratios"]], int(data["samples"]), int(data["macs"]),
                   int(data["params"]), curves, data.get("dense_accuracy"), data.get("accuracy_samples"),
                   data.get("label_output"), dict(data.get("input_shapes") or {}), float(data.get("seconds", 0.0)),
                   str(data.get("fill", "zero")), data.get("grouped"), data.get("heads"),
                   [dict(o) for o in data.get("outputs") or []], data.get("rotated"))

    @classmethod
    def coerce(cls, curves: SensitivityResult | str | os.PathLike[str] | None) -> SensitivityResult | None:
        """Curves as given, or loaded from their JSON file; None stays None."""
        return curves if curves is None or isinstance(curves, SensitivityResult) else cls.load(curves)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SensitivityResult:
        try:
            data = json.loads(Path(path).read_text())
            return cls.from_json(data)
        except OnnxPruneError as exc:
            raise OnnxPruneError(f"{path}: {exc}") from None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise OnnxPruneError(f"{path}: not a valid sensitivity file ({type(exc).__name__}: {exc})") from None

    def check_rotated(self, rotated: bool) -> None:
        """Refuse curves of the hidden width measured in the other basis than this run's."""
        if self.rotated is not None and self.rotated != rotated:
            raise OnnxPruneError(f"the sensitivity curves were measured {'with' if self.rotated else 'without'} the hidden "
                                 f"width rotated (--approximate rotate) and this run {'rotates' if rotated else 'does not rotate'}"
                                 " it: measure them with the same --approximate")

    def curves_for(self, dg: DependencyGraph) -> dict[int, GroupCurve]:
        """Curves keyed by group id, checked against `dg` (same groups, same sources, same sizes);
        the curves of groups `dg` blocks (e.g. `prune --keep`) are left out."""
        by_id = {g.id: g for g in dg.groups}
        out: dict[int, GroupCurve] = {}
        for c in self.curves:
            g = by_id.get(c.group)
            if g is None or g.sources != c.sources or g.size != c.slots:
                mode, heads = dg.analysis.grouped, dg.analysis.heads
                hint = (f"the curves were measured with --grouped-conv {self.grouped}, this run uses {mode}"
                        if self.grouped is not None and self.grouped != mode
                        else f"the curves were measured with --heads {self.heads}, this run uses {heads}"
                        if self.heads is not None and self.heads != heads
                        else "were the curves measured on another model?")
                raise OnnxPruneError(f"sensitivity group {c.group} ({', '.join(c.sources[:2])}) does not match this "
                                     f"model: {hint}")
            if g.prunable:
                out[c.group] = c
        missing = sorted({g.id for g in dg.prunable} - set(out))
        if missing:
            raise OnnxPruneError(f"the sensitivity file has no curve for prunable groups {missing[:8]}")
        return out


def _optional(value: Any) -> float | None:
    return None if value is None else float(value)


# ------------------------------------------------------------------------------------------ probing


@dataclass(frozen=True)
class LabelledData:
    """Feeds with one class id per row (accuracy of output `output`, or of the first [N, C] output)."""

    feeds: list[Feed]
    labels: np.ndarray
    output: str | None = None


def _class_ids(labels: np.ndarray, rows: int, classes: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim == 2 and y.shape[1] == classes:
        y = np.argmax(y, axis=1)
    y = y.reshape(-1)
    if y.shape[0] < rows:
        raise OnnxPruneError(f"--labels has {y.shape[0]} labels for {rows} samples")
    return y[:rows].astype(np.int64)


class CurveProbe(MaskProbe):
    """A MaskProbe that reports relative L2 error, 1 − cosine and, with labelled data, accuracy."""

    def __init__(self, dg: DependencyGraph, feeds: Iterable[Feed], *, labelled: LabelledData | None = None,
                 fill: str = "zero", overrides: Iterable[str] = ()) -> None:
        super().__init__(dg, feeds, fill=fill, overrides=overrides)
        self.labelled = labelled
        self.kinds = output_kinds(dg)
        self.label_output: str | None = None
        self.labels: np.ndarray | None = None
        self.dense_accuracy: float | None = None
        if labelled is not None:
            logits = self._logits(set(), pick=True)
            self.labels = _class_ids(labelled.labels, logits.shape[0], logits.shape[1])
            self.dense_accuracy = self._accuracy(logits)

    def _logits(self, removed: set[int], *, pick: bool = False,
                weights: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        assert self.labelled is not None
        parts = [self._run(f, removed, weights) for f in self.labelled.feeds]
        if pick:
            want = self.labelled.output
            names = [want] if want else [n for n, v in parts[0].items() if v.ndim == 2 and v.shape[1] > 1
                                         and v.dtype.kind == "f"]
            if not names or names[0] not in parts[0]:
                raise OnnxPruneError(f"--labels: no class-score output [N, C] to score (outputs: {list(parts[0])})")
            self.label_output = names[0]
        assert self.label_output is not None
        return np.concatenate([p[self.label_output] for p in parts], axis=0)

    def _accuracy(self, logits: np.ndarray) -> float:
        assert self.labels is not None
        return float(np.mean(np.argmax(logits, axis=1) == self.labels))

    def unchanged(self) -> Errors:
        """The errors of the dense model against itself: 0 for every kind this model's outputs have."""
        kinds = {k.kind for k in self.kinds.values()}
        zero = {m: 0.0 if kinds & set(judges) else None for m, judges in JUDGES.items()}
        return Errors(0.0, 0.0, 0.0, self.dense_accuracy, auto=0.0, **zero)

    def measure(self, removed: set[int], weights: Mapping[str, np.ndarray] | None = None) -> Errors:
        """The errors (and accuracy) with the slots `removed` masked (and `weights` fed, see MaskProbe)."""
        self.evaluations += 1
        sums: dict[str, OutputSums] = {}
        for want, got in self.held_outputs(removed, weights):
            for name, w in want.items():
                if w.dtype.kind == "f":
                    sums.setdefault(name, OutputSums(self.kinds.get(name))).add(w, got[name])
        accuracy = self._accuracy(self._logits(removed, weights=weights)) if self.labelled is not None else None
        return Errors.combine(list(sums.values()), accuracy)


def _mean(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None


@dataclass(frozen=True)
class Errors:
    rel_error: float
    cos_error: float
    channel_error: float
    accuracy: float | None
    argmax: float | None = None
    margin: float | None = None
    threshold: float | None = None
    auto: float | None = None

    @classmethod
    def combine(cls, sums: Sequence[OutputSums], accuracy: float | None) -> Errors:
        """Every error, averaged over the outputs it applies to (see the module doc)."""
        if not sums:
            return cls(0.0, 0.0, 0.0, accuracy, auto=0.0)
        return cls(float(np.mean([s.rel_error() for s in sums])), float(np.mean([s.cos_error() for s in sums])),
                   float(np.mean([s.channel_error() for s in sums])), accuracy,
                   _mean(s.task.argmax() for s in sums if s.task is not None),
                   _mean(s.task.margin() for s in sums if s.task is not None),
                   _mean(s.task.threshold() for s in sums if s.task is not None),
                   float(np.mean([s.auto() for s in sums])))

    def point(self, ratio: float, removed: int, macs_kept: float, params_kept: float) -> CurvePoint:
        return CurvePoint(ratio, removed, self.rel_error, self.cos_error, self.accuracy, macs_kept, params_kept,
                          self.channel_error, self.argmax, self.margin, self.threshold, self.auto)


class OutputSums:
    """Running sums of one output against its dense reference, whole and per channel (axis 1), and of
    the task error its kind calls for (`measure.task_error`)."""

    def __init__(self, kind: OutputKind | None = None) -> None:
        self.diff = self.ref = self.dot = self.got = 0.0
        self.diff_c: np.ndarray | None = None  # Σd² per channel
        self.ref_c: np.ndarray | None = None  # Σref² per channel
        self.task = TaskSums(kind) if kind is not None and kind.kind != "regression" else None

    def add(self, want: np.ndarray, got: np.ndarray) -> None:
        a, b = want.astype(np.float64), got.astype(np.float64)
        d = a - b
        self.diff += float(np.vdot(d, d))
        self.ref += float(np.vdot(a, a))
        self.dot += float(np.vdot(a, b))
        self.got += float(np.vdot(b, b))
        axes = tuple(i for i in range(a.ndim) if i != 1) if a.ndim >= 2 else tuple(range(a.ndim))
        dc, rc = np.atleast_1d((d * d).sum(axis=axes)), np.atleast_1d((a * a).sum(axis=axes))
        self.diff_c = dc if self.diff_c is None else self.diff_c + dc
        self.ref_c = rc if self.ref_c is None else self.ref_c + rc
        if self.task is not None:
            self.task.add(want, got)

    def rel_error(self) -> float:
        return float(np.sqrt(self.diff) / max(np.sqrt(self.ref), 1e-12))

    def cos_error(self) -> float:
        if self.ref > 0 and self.got > 0:
            return float(1.0 - self.dot / np.sqrt(self.ref * self.got))
        return float(self.ref != self.got)

    def channel_error(self, among: np.ndarray | None = None) -> float:
        """Mean over the channels (those `among` marks, default all) of ‖d_c‖ / ‖ref_c‖; channels with
        (almost) no energy are left out."""
        if self.diff_c is None or self.ref_c is None:
            return 0.0
        live = self.ref_c > NEGLIGIBLE_CHANNEL * max(float(self.ref_c.mean()), 1e-300)
        if among is not None and among.shape == live.shape:
            live &= among
        if not live.any():
            return self.rel_error()
        return float(np.mean(np.sqrt(self.diff_c[live] / self.ref_c[live])))

    def auto(self) -> float:
        """The error this output's kind calls for (see the module doc)."""
        if self.task is None:
            return self.channel_error()
        if self.task.kind.kind != "threshold":
            return float(self.task.margin() or 0.0)
        scores, channels = float(self.task.threshold() or 0.0), self.task.kind.channels
        if channels is None or channels.all():
            return scores
        return float(np.mean([scores, self.channel_error(~channels)]))


# ------------------------------------------------------------------------------------------ curves


def removal_counts(size: int, ratios: Sequence[float], round_to: int) -> list[int]:
    """Slots removed at each ratio: the group's ask rounded to whole blocks of `round_to` slots as a
    uniform plan rounds it (`rounding.Quota.nearest`; the group is alone, so nothing is spread)."""
    quota = Quota(size, round_to)
    return [quota.nearest(size - n_keep(size, r, 1)) for r in ratios]


def _check_ratios(ratios: Sequence[float]) -> list[float]:
    out = sorted({float(r) for r in ratios})
    if not out or any(not 0.0 < r < 1.0 for r in out):
        raise OnnxPruneError(f"ratios must be in (0, 1), got {list(ratios)}")
    return out


def group_orders(dg: DependencyGraph, criterion: str, *, round_to: int = 1, calibration: CalibrationLike = None,
                 shapes: Shapes | None = None, progress: ProgressFn | None = None,
                 overrides: Mapping[int, np.ndarray] | None = None) -> dict[int, np.ndarray]:
    """Slot indices of every prunable group in removal order (`order.removal_order`, as plans use);
    `overrides` replace the criterion's scores of their groups."""
    scores = score_groups(dg, criterion, calibration=calibration, shapes=shapes, progress=progress)
    scores.update(overrides or {})
    return removal_orders(dg, scores, round_to=round_to)


def _group_curve(g: Group, order: np.ndarray, counts: list[int], ratios: list[float], probe: CurveProbe,
                 cost: CostModel, refit: Compensator | None = None) -> GroupCurve:
    seen: dict[int, CurvePoint] = {}
    points: list[CurvePoint] = []
    weights = refit.schedule(g, order, counts) if refit is not None else {}
    for r, n in zip(ratios, counts, strict=True):
        if n not in seen:
            removed = {int(g.slots[i]) for i in order[:n]}
            e = probe.measure(removed, weights.get(n)) if n else probe.unchanged()
            macs, params = cost.estimate(removed)
            seen[n] = e.point(r, n, macs / max(cost.macs, 1), params / max(cost.params, 1))
        points.append(replace(seen[n], ratio=r))
    return GroupCurve(g.id, list(g.sources), g.size, points, g.width)


def sensitivity_curves(dg: DependencyGraph, *, calibration: CalibrationLike = None,
                       ratios: Sequence[float] = DEFAULT_RATIOS, criterion: str = "l2",
                       samples: int = DEFAULT_SAMPLES, round_to: RoundTo = 1, shapes: Shapes | None = None,
                       labelled: LabelledData | None = None, model_name: str = "",
                       progress: ProgressFn | None = None, fill: str = "zero",
                       scores: Mapping[int, np.ndarray] | None = None) -> SensitivityResult:
    """Measure every prunable group's curve (see the module doc). `dg` from `api.analyse`.
    round_to: as `api.prune` (an integer, or "auto" for ONNX Runtime's NCHWc block on this CPU).
    fill: what masked channels read, "zero" or their calibration "mean" (scoring.mask_probe), or
    "refit": zero, their consumers re-fitted by least squares as reconstruction does (scoring.refit_probe).
    scores: per-slot scores by group id that replace the criterion's there (a rotation's variances)."""
    start = time.perf_counter()
    grid = _check_ratios(ratios)
    if fill not in FILLS:
        raise OnnxPruneError(f"fill must be one of {', '.join(FILLS)}, got {fill!r}")
    if samples < 1:
        raise OnnxPruneError(f"samples must be at least 1, got {samples}")
    multiple = resolve_round_to(round_to)
    dg.require_prunable()
    counts = {g.id: removal_counts(g.size, grid, g.multiple(multiple)) for g in dg.prunable}
    if not any(any(c) for c in counts.values()):
        why = too_narrow(dg, multiple) or (f"at ratios up to {grid[-1]:g} no group loses a whole "
                                           f"{'block of ' + str(multiple) + ' channels' if multiple > 1 else 'slot'}")
        raise NothingToPruneError(f"nothing to measure: {why}")
    source = CalibrationSource.of(calibration, dg.model, shapes=shapes)
    orders = group_orders(dg, criterion, round_to=multiple, calibration=source, shapes=shapes, progress=progress,
                          overrides=scores)
    feeds = source.first(samples)
    refit = Compensator(dg, feeds) if fill == "refit" else None
    probe = CurveProbe(dg, feeds, labelled=labelled, fill="zero" if refit is not None else fill,
                       overrides=refit.initializers if refit is not None else ())
    cost = CostModel(dg, shapes=shapes)
    result = SensitivityResult(model_name, criterion, multiple, grid, sum(feed_rows(f) for f in feeds), cost.macs,
                               cost.params, dense_accuracy=probe.dense_accuracy,
                               accuracy_samples=None if probe.labels is None else int(probe.labels.shape[0]),
                               label_output=probe.label_output,
                               input_shapes={k: list(v.shape) for k, v in feeds[0].items()}, fill=fill,
                               grouped=dg.analysis.grouped, heads=dg.analysis.heads,
                               outputs=[{"name": k.output, "kind": k.kind, "reason": k.reason}
                                        for k in probe.kinds.values()])
    tick = report(progress)
    total = len(dg.prunable)
    tick("sensitivity", 0, total)
    for i, g in enumerate(dg.prunable):
        result.curves.append(_group_curve(g, orders[g.id], counts[g.id], grid, probe, cost, refit))
        tick("sensitivity", i + 1, total)
    result.seconds = time.perf_counter() - start
    return result


def require_metric(dg: DependencyGraph, metric: str) -> None:
    """Refuse, before measuring, a task error no output of the model is judged by."""
    judges = JUDGES.get(metric)
    kinds = output_kinds(dg).values()
    if judges and not any(k.kind in judges for k in kinds):
        raise OnnxPruneError(f"the {metric!r} error judges {' or '.join(judges)} outputs; this model has "
                             f"{'; '.join(k.describe() for k in kinds)}")


def load_labelled(model: onnx.ModelProto, *, data: str | None, labels: str | None,
                  calibration: CalibrationLike = None, samples: int = DEFAULT_SAMPLES, batch: int | None = None,
                  output: str | None = None, shapes: Shapes | None = None) -> LabelledData | None:
    """Labelled data for accuracy: `data` (.npz with labels under 'y', or with `labels`), or the held
    calibration samples with `labels` (one per calibration sample, in order). None without labels."""
    from onnxprune.measure.validate import load_feeds, load_labels

    if data is None and labels is None:
        return None
    feeds, y = load_feeds(data, model, batch=batch) if data else (
        CalibrationSource.of(calibration, model, shapes=shapes).first(samples), None)
    if labels is not None:
        y = load_labels(labels)
    if y is None:
        raise OnnxPruneError(f"--data {data}: no labels (key 'y'); give --labels")
    return LabelledData([dict(f) for f in feeds], np.asarray(y), output)
