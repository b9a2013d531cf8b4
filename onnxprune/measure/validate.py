"""Compare a pruned model with its original on the same inputs: output errors, top-1 agreement,
and, with labels, accuracy / per-class recall and false-positive rate / confused pairs.

Both models run in ONNX Runtime with graph optimisations off, so the comparison measures the
pruning and not ORT's fusions. Inputs come from a .npz/.npy file or from random batches.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxprune.calib.source import CalibConfig, calibration_batches
from onnxprune.errors import OnnxPruneError, ThresholdError
from onnxprune.io import runtime
from onnxprune.io.inputs import InputSpec, feed_rows, graph_inputs, random_inputs
from onnxprune.io.npfile import reading
from onnxprune.io.types import Feed, Shapes

LABEL_KEY = "y"
DEFAULT_SAMPLES = 4
DEFAULT_DATA_BATCH = 32
TOP_CONFUSED = 5


# ------------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class OutputComparison:
    """Agreement of one output over all compared samples."""

    name: str
    shape: tuple[int, ...]           # shape of the original's output, batches concatenated on axis 0
    max_abs_error: float
    max_rel_error: float             # max |a-b| / (|a| + 1e-3 * max|a|): near-zero values cannot blow it up
    cosine: float                    # cosine similarity of the flattened outputs (1.0 = same direction)
    top1_agreement: float | None     # rank-2 [N, C] outputs only; None = N/A
    rel_l2_error: float = 0.0        # ||a-b|| / ||a|| over the flattened outputs

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "max_abs_error": _json_float(self.max_abs_error),
                "max_rel_error": _json_float(self.max_rel_error), "cosine": _json_float(self.cosine),
                "rel_l2_error": _json_float(self.rel_l2_error), "top1_agreement": self.top1_agreement}


@dataclass(frozen=True)
class ClassMetrics:
    """Classification metrics of one model against labels. Per-class lists are indexed by class;
    None where undefined (recall of a class with no samples)."""

    accuracy: float
    recall: tuple[float | None, ...]
    fpr: tuple[float | None, ...]
    confused: tuple[tuple[int, int, int], ...]  # (true class, predicted class, count), most frequent first

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "recall": list(self.recall), "fpr": list(self.fpr),
                "top_confused": [{"true": t, "pred": p, "count": c} for t, p, c in self.confused]}


@dataclass(frozen=True)
class LabelReport:
    output: str
    num_samples: int
    num_classes: int
    original: ClassMetrics
    pruned: ClassMetrics
    flips: int      # samples the original got right and the pruned model gets wrong
    fixes: int      # the reverse

    @property
    def acc_drop(self) -> float:
        """Accuracy drop in percentage points (positive = the pruned model is worse)."""
        return 100.0 * (self.original.accuracy - self.pruned.accuracy)

    def to_dict(self) -> dict[str, Any]:
        return {"output": self.output, "num_samples": self.num_samples, "num_classes": self.num_classes,
                "acc_drop_points": self.acc_drop, "flips": self.flips, "fixes": self.fixes,
                "original": self.original.to_dict(), "pruned": self.pruned.to_dict()}


@dataclass(frozen=True)
class ValidationReport:
    source: str                      # "random" or the data file
    num_batches: int
    num_samples: int
    outputs: tuple[OutputComparison, ...]
    labels: LabelReport | None = None

    @property
    def min_cosine(self) -> float:
        return min((o.cosine for o in self.outputs), default=1.0)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "num_batches": self.num_batches, "num_samples": self.num_samples,
                "min_cosine": _json_float(self.min_cosine), "outputs": [o.to_dict() for o in self.outputs],
                "labels": self.labels.to_dict() if self.labels else None}


def _json_float(x: float) -> float | str:
    return x if math.isfinite(x) else str(x)


# --------------------------------------------------------------------------------------- data


def load_feeds(path: str | os.PathLike[str], model: onnx.ModelProto, *,
               batch: int | None = None) -> tuple[list[Feed], np.ndarray | None]:
    """Batches of `model` inputs read from `path`, and the labels stored under key `y` of a .npz.

    Reading is delegated to `onnxprune.calib.source` (same formats as --calib: .npz, .npy, folders of
    .npy files or images); a .npz holding labels is read whole by `load_data` + `data_batches`.
    """
    p = os.fspath(path)
    if not os.path.exists(p):
        raise OnnxPruneError(f"--data {p}: no such file or folder")
    labels = _npz_labels(p) if p.endswith(".npz") and os.path.isfile(p) else None
    if labels is not None:
        feed, _ = load_data(p, model)  # the 'y' key would confuse a single-input .npz reader
        return data_batches(model, feed, batch=batch), labels
    cfg = CalibConfig(path=Path(p), batch=batch or DEFAULT_DATA_BATCH)
    return list(calibration_batches(model, cfg)), None


def _npz_labels(path: str) -> np.ndarray | None:
    with reading(f"--data {path}"):
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise OnnxPruneError(f"--data {path}: expected a .npz archive")
        with npz:
            return np.asarray(npz[LABEL_KEY]) if LABEL_KEY in npz.files else None


def load_data(path: str | os.PathLike[str], model: onnx.ModelProto) -> tuple[Feed, np.ndarray | None]:
    """All inputs (and labels under key `y`) from a .npz keyed by input name, or from a single
    array (.npy, or a one-array .npz) for a single-input model. Arrays are cast to the input dtypes."""
    specs = graph_inputs(model)
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise OnnxPruneError(f"--data {p}: no such file")
    with reading(f"--data {p}"):
        loaded = np.load(p, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            arrays: dict[str, np.ndarray] = {"": loaded}
        else:
            with loaded:
                arrays = {k: loaded[k] for k in loaded.files}
    labels = arrays.pop(LABEL_KEY, None)
    names = [s.name for s in specs]
    if set(names) <= set(arrays):
        feed = {s.name: _cast(arrays[s.name], s, p) for s in specs}
    elif len(specs) == 1 and len(arrays) == 1:
        feed = {specs[0].name: _cast(next(iter(arrays.values())), specs[0], p)}
    else:
        missing = sorted(set(names) - set(arrays))
        raise OnnxPruneError(f"--data {p}: missing arrays for model inputs {missing} "
                             f"(the file has {sorted(arrays) or 'no arrays'})")
    rows = {a.shape[0] if a.ndim else 0 for a in feed.values()}
    if len(rows) != 1 or 0 in rows:
        raise OnnxPruneError(f"--data {p}: inputs need the same, non-zero number of rows on axis 0 (got {sorted(rows)})")
    return feed, labels


def _cast(arr: np.ndarray, spec: InputSpec, path: str) -> np.ndarray:
    if arr.ndim != len(spec.dims):
        raise OnnxPruneError(f"--data {path}: input {spec.name} has rank {arr.ndim}, the model expects "
                             f"{len(spec.dims)} ({spec.dims})")
    for i, (got, want) in enumerate(zip(arr.shape, spec.dims, strict=True)):
        if i > 0 and isinstance(want, int) and got != want:
            raise OnnxPruneError(f"--data {path}: input {spec.name} has shape {arr.shape}, the model expects {spec.dims}")
    return arr.astype(spec.dtype, copy=False)


def load_labels(path: str | os.PathLike[str]) -> np.ndarray:
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise OnnxPruneError(f"--labels {p}: no such file")
    with reading(f"--labels {p}"):
        loaded = np.load(p, allow_pickle=False)
        if not isinstance(loaded, np.ndarray):
            with loaded:
                if LABEL_KEY not in loaded.files:
                    raise OnnxPruneError(f"--labels {p}: a .npz needs the labels under key '{LABEL_KEY}'")
                return np.asarray(loaded[LABEL_KEY])
    return loaded


def data_batches(model: onnx.ModelProto, data: Mapping[str, np.ndarray], *, batch: int | None = None) -> list[Feed]:
    """Split `data` into feeds along axis 0: the model's static batch if it has one, else `batch`."""
    rows = next(iter(data.values())).shape[0]
    specs = graph_inputs(model)
    static = {s.dims[0] for s in specs if s.dims and isinstance(s.dims[0], int)}
    if static:
        size = int(next(iter(static)))
        if rows % size:
            raise OnnxPruneError(f"--data has {rows} rows, not a multiple of the model's static batch {size}")
    else:
        size = batch or DEFAULT_DATA_BATCH
    return [{k: v[i:i + size] for k, v in data.items()} for i in range(0, rows, size)]


def random_batches(model: onnx.ModelProto, *, samples: int = DEFAULT_SAMPLES,
                   shapes: Shapes | None = None, batch: int = 1, seed: int = 0) -> list[Feed]:
    if samples < 1:
        raise OnnxPruneError("--samples must be at least 1")
    return [random_inputs(model, shapes=shapes, batch=batch, seed=seed + i) for i in range(samples)]


# ------------------------------------------------------------------------------------ running


def run_batches(model: onnx.ModelProto, feeds: Sequence[Feed]) -> dict[str, list[np.ndarray]]:
    """Outputs of every feed (ORT, graph optimisation off), per output name, in order."""
    sess = runtime.session(model, optimize=False)
    out: dict[str, list[np.ndarray]] = {o.name: [] for o in sess.get_outputs()}
    for feed in feeds:
        for name, value in runtime.run(sess, feed).items():
            out[name].append(np.asarray(value))
    return out


def _concat(parts: Sequence[np.ndarray]) -> np.ndarray:
    if len(parts) == 1:
        return parts[0]
    if all(p.ndim >= 1 and p.shape[1:] == parts[0].shape[1:] for p in parts):
        return np.concatenate(parts, axis=0)
    return np.concatenate([p.reshape(-1) for p in parts])


def _match_outputs(ref: Mapping[str, Any], cand: Mapping[str, Any]) -> list[tuple[str, str]]:
    if set(ref) == set(cand):
        return [(n, n) for n in ref]
    if len(ref) == len(cand):
        return list(zip(ref, cand, strict=True))
    raise OnnxPruneError(f"the models have different outputs: {list(ref)} vs {list(cand)}")


# ------------------------------------------------------------------------------------ metrics


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    x, y = a.reshape(-1).astype(np.float64), b.reshape(-1).astype(np.float64)
    na, nb = float(np.linalg.norm(x)), float(np.linalg.norm(y))
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(x, y) / (na * nb))


def is_class_scores(a: np.ndarray) -> bool:
    return a.ndim == 2 and a.shape[1] > 1 and a.dtype.kind == "f"


def compare_arrays(name: str, ref: np.ndarray, cand: np.ndarray) -> OutputComparison:
    if ref.shape != cand.shape:
        raise OnnxPruneError(f"output {name}: shape {cand.shape} differs from the original's {ref.shape}")
    if ref.dtype.kind not in "fiub" or cand.dtype.kind not in "fiub":
        raise OnnxPruneError(f"output {name}: cannot compare dtype {ref.dtype}")
    a, b = ref.astype(np.float64), cand.astype(np.float64)
    if a.size == 0:
        return OutputComparison(name, tuple(ref.shape), 0.0, 0.0, 1.0, None)
    diff = np.abs(a - b)
    scale = float(np.max(np.abs(a))) if np.isfinite(a).all() else 0.0
    rel = diff / (np.abs(a) + (1e-3 * scale or 1e-12))
    top1 = float(np.mean(np.argmax(a, axis=1) == np.argmax(b, axis=1))) if is_class_scores(ref) else None
    norm = float(np.linalg.norm(a))
    err = float(np.linalg.norm(a - b))
    rel_l2 = err / norm if norm > 0 else (math.inf if err > 0 else 0.0)
    return OutputComparison(name, tuple(ref.shape), float(np.max(diff)), float(np.max(rel)), cosine(a, b), top1,
                            rel_l2)


def _to_class_ids(labels: np.ndarray, num_classes: int, n: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim == 2 and y.shape[1] == num_classes:
        y = np.argmax(y, axis=1)  # one-hot / soft labels
    y = y.reshape(-1)
    if y.shape[0] != n:
        raise OnnxPruneError(f"--labels has {y.shape[0]} labels but the data has {n} samples")
    if y.dtype.kind == "f":
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise OnnxPruneError("--labels must be integer class ids (or one-hot rows)")
        y = y.astype(np.int64)
    if y.dtype.kind not in "iu":
        raise OnnxPruneError(f"--labels: unsupported dtype {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise OnnxPruneError(f"--labels: class ids must be in [0, {num_classes}), got {y.min()}..{y.max()}")
    return y.astype(np.int64)


def classification_metrics(pred: np.ndarray, labels: np.ndarray, num_classes: int, *,
                           top_confused: int = TOP_CONFUSED) -> ClassMetrics:
    """Accuracy, per-class recall and false-positive rate, most frequent (true, predicted) mistakes."""
    pred, labels = np.asarray(pred, dtype=np.int64), np.asarray(labels, dtype=np.int64)
    n = labels.shape[0]
    tp = np.bincount(labels[pred == labels], minlength=num_classes)
    support = np.bincount(labels, minlength=num_classes)
    predicted = np.bincount(pred, minlength=num_classes)
    fp = predicted - tp
    negatives = n - support
    recall = tuple(float(t / s) if s else None for t, s in zip(tp, support, strict=True))
    fpr = tuple(float(f / neg) if neg else None for f, neg in zip(fp, negatives, strict=True))
    wrong = pred != labels
    pairs, counts = np.unique(np.stack([labels[wrong], pred[wrong]], axis=1), axis=0, return_counts=True) \
        if wrong.any() else (np.zeros((0, 2), np.int64), np.zeros(0, np.int64))
    order = sorted(range(len(counts)), key=lambda i: (-int(counts[i]), int(pairs[i][0]), int(pairs[i][1])))
    confused = tuple((int(pairs[i][0]), int(pairs[i][1]), int(counts[i])) for i in order[:top_confused])
    return ClassMetrics(float(np.mean(pred == labels)) if n else 0.0, recall, fpr, confused)


def label_report(output: str, ref: np.ndarray, cand: np.ndarray, labels: np.ndarray) -> LabelReport:
    num_classes = ref.shape[1]
    y = _to_class_ids(labels, num_classes, ref.shape[0])
    p_ref, p_cand = np.argmax(ref, axis=1), np.argmax(cand, axis=1)
    ok_ref, ok_cand = p_ref == y, p_cand == y
    return LabelReport(output=output, num_samples=int(y.shape[0]), num_classes=int(num_classes),
                       original=classification_metrics(p_ref, y, num_classes),
                       pruned=classification_metrics(p_cand, y, num_classes),
                       flips=int(np.sum(ok_ref & ~ok_cand)), fixes=int(np.sum(~ok_ref & ok_cand)))


# ----------------------------------------------------------------------------------- pipeline


def _check_same_inputs(original: onnx.ModelProto, pruned: onnx.ModelProto) -> None:
    a = {s.name for s in graph_inputs(original)}
    b = {s.name for s in graph_inputs(pruned)}
    if a != b:
        raise OnnxPruneError(f"the models have different inputs: {sorted(a)} vs {sorted(b)}")


def validate(original: onnx.ModelProto, pruned: onnx.ModelProto, *,
             data: Mapping[str, np.ndarray] | None = None, feeds: Sequence[Feed] | None = None,
             labels: np.ndarray | None = None,
             shapes: Shapes | None = None, samples: int = DEFAULT_SAMPLES,
             batch: int | None = None, seed: int = 0, label_output: str | None = None,
             source: str | None = None) -> ValidationReport:
    """Run both models on the same inputs (ORT optimisation off) and compare every output.

    `data`: arrays keyed by input name, split into batches; or `feeds`: ready batches (see
    `load_feeds`); without either, `samples` random batches of `batch` rows (default 1).
    `labels` (one per data row) adds accuracy metrics on the first [N, C] output, or on `label_output`.
    """
    _check_same_inputs(original, pruned)
    if data is not None and feeds is not None:
        raise OnnxPruneError("give data or feeds, not both")
    if data is not None:
        feeds = data_batches(original, data, batch=batch)
    elif feeds is not None:
        feeds = list(feeds)
        if not feeds:
            raise OnnxPruneError("no input batches to compare")
    else:
        if labels is not None:
            raise OnnxPruneError("--labels needs --data (labels must describe real inputs)")
        feeds = random_batches(original, samples=samples, shapes=shapes, batch=batch or 1, seed=seed)
    ref_parts, cand_parts = run_batches(original, feeds), run_batches(pruned, feeds)
    pairs = _match_outputs(ref_parts, cand_parts)
    ref = {r: _concat(ref_parts[r]) for r, _ in pairs}
    cand = {r: _concat(cand_parts[c]) for r, c in pairs}
    outputs = tuple(compare_arrays(name, ref[name], cand[name]) for name in ref)
    report_labels = None
    if labels is not None:
        name = label_output or next((n for n in ref if is_class_scores(ref[n])), None)
        if name is None or name not in ref:
            raise OnnxPruneError(f"--labels: no class-score output [N, C] to score "
                                 f"({'unknown output ' + label_output if label_output else 'outputs: ' + str(list(ref))})")
        if not is_class_scores(ref[name]):
            raise OnnxPruneError(f"--labels: output {name} is not [N, C] class scores (shape {ref[name].shape})")
        report_labels = label_report(name, ref[name], cand[name], _align_labels(labels, feeds))
    rows = sum(feed_rows(f) for f in feeds)
    real = data is not None or feeds is not None
    return ValidationReport(source=source or ("data" if real else "random"), num_batches=len(feeds),
                            num_samples=int(rows), outputs=outputs, labels=report_labels)


def _align_labels(labels: np.ndarray, feeds: Sequence[Feed]) -> np.ndarray:
    """Drop labels of trailing samples the batching dropped (a fixed batch size that does not divide the data)."""
    rows = sum(feed_rows(f) for f in feeds)
    last = feed_rows(feeds[-1]) if feeds else 0
    n = int(np.asarray(labels).shape[0]) if np.ndim(labels) else 0
    if rows < n < rows + last:
        return np.asarray(labels)[:rows]
    return labels


def threshold_failures(report: ValidationReport, *, min_cosine: float | None = None,
                       max_acc_drop: float | None = None) -> list[str]:
    """Human-readable reasons the report misses the thresholds (empty = pass). NaN always fails."""
    failures = []
    if min_cosine is not None:
        for o in report.outputs:
            if not o.cosine >= min_cosine:
                failures.append(f"output {o.name}: cosine {o.cosine:.6f} < {min_cosine}")
    if max_acc_drop is not None:
        if report.labels is None:
            raise OnnxPruneError("--max-acc-drop needs labels (--labels, or key 'y' in --data)")
        drop = report.labels.acc_drop
        if not drop <= max_acc_drop:
            failures.append(f"accuracy drop {drop:.2f} points > {max_acc_drop}")
    return failures


def check_thresholds(report: ValidationReport, *, min_cosine: float | None = None,
                     max_acc_drop: float | None = None) -> None:
    """Raise ThresholdError (exit code 5) when the pruned model misses a threshold."""
    failures = threshold_failures(report, min_cosine=min_cosine, max_acc_drop=max_acc_drop)
    if failures:
        raise ThresholdError("validation failed: " + "; ".join(failures))
