"""Recovery by distillation: briefly fine-tune the pruned model's weights on the unlabeled calibration
data, with the dense model as teacher (its outputs, and its features at the pruned layers).

The pruned graph runs in PyTorch through `recovery.torch_graph` (our own interpreter: each
trainable initializer is a parameter keyed by its name, so writing the trained values back is exact
and complete). The teacher runs in ONNX Runtime. Loss: one term per probability head, graph output
and pruned layer (`recovery.distill_targets`), each divided by the size of the teacher's tensor on the
held-out samples, so the terms add up on one scale; the features weigh `feature_weight` in all.
Adam, minibatches of `batch` samples. The held-out share of the calibration samples is evaluated
every `eval_every` steps on the output terms alone (the features only guide training) and the best
weights are kept (step 0, the model as given, included), so the held-out output loss never gets
worse; training stops after `steps`, at the time budget, or after `patience` evaluations without
improvement.

Only initializer values change: the graph, the names, shapes and dtypes stay (checked), so the
oracle's structural proof of the pruned model still holds. Needs torch (`pip install
'onnxprune[distill]'`): it is imported only here, when distillation runs.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxprune.calib.source import CalibrationLike
from onnxprune.errors import InternalError, OnnxPruneError
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.io import runtime
from onnxprune.io.inputs import feed_rows
from onnxprune.io.skeleton import without_weights
from onnxprune.io.types import Feed
from onnxprune.recovery.distill_data import Split, joined, split_calibration, units_of
from onnxprune.recovery.distill_loss import Objective, Teacher
from onnxprune.recovery.distill_targets import (
    feature_layers,
    feature_terms,
    head_terms,
    output_terms,
    trainable,
)
from onnxprune.recovery.fidelity import Fidelity, compare_outputs

if TYPE_CHECKING:

    from onnxprune.recovery.torch_graph import TorchGraph

INSTALL_HINT = "pip install 'onnxprune[distill]' (PyTorch 2.13.0, CPU)"
EXACT_RTOL = 1e-4  # torch graph vs ONNX Runtime on the first sample: max |Δ| <= rtol·max|y| + atol
EXACT_ATOL = 1e-6


@dataclass(frozen=True)
class DistillOptions:
    steps: int = 300  # optimiser steps at most
    time_budget: float = 300.0  # seconds of training at most
    lr: float = 1e-3  # Adam (digits: 1e-4 too timid to beat the re-fit, benchmarks/README.md)
    batch: int = 8  # samples per step
    feature_weight: float = 1.0  # weight of all feature terms together (outputs weigh 1 each)
    feature_layers: tuple[str, ...] | None = None  # fnmatch patterns of layers; None: the pruned layers
    holdout: float = 0.25  # share of the calibration samples held out (early stopping, fidelity)
    eval_every: int = 0  # steps between held-out evaluations (0: steps / 10)
    patience: int = 3  # evaluations without improvement before stopping
    seed: int = 0

    def check(self) -> DistillOptions:
        if self.steps < 1:
            raise OnnxPruneError(f"--distill-steps must be at least 1, got {self.steps}")
        if not self.time_budget > 0:
            raise OnnxPruneError(f"--distill-time must be positive, got {self.time_budget}")
        if not self.lr > 0:
            raise OnnxPruneError(f"distill learning rate must be positive, got {self.lr}")
        if self.batch < 1 or self.patience < 1 or self.eval_every < 0:
            raise OnnxPruneError("distill batch and patience must be at least 1, eval_every at least 0")
        if not 0 < self.holdout < 1:
            raise OnnxPruneError(f"distill holdout must be in (0, 1), got {self.holdout}")
        if self.feature_weight < 0:
            raise OnnxPruneError(f"distill feature weight must be >= 0, got {self.feature_weight}")
        return self


def require_torch() -> None:
    """Raise the one-line error (exit 2) when PyTorch is not installed."""
    if importlib.util.find_spec("torch") is None:
        raise OnnxPruneError(f"distillation needs PyTorch, which is not installed: {INSTALL_HINT}")


@dataclass
class DistillResult:
    model: onnx.ModelProto
    steps: int = 0  # optimiser steps run
    best_step: int = 0  # the step whose weights were kept (0: the model as given)
    stopped: str = ""  # why training ended
    train_samples: int = 0
    held_samples: int = 0
    trainable: int = 0  # initializers trained
    parameters: int = 0  # their elements
    features: list[str] = field(default_factory=list)  # layers whose outputs were compared
    heads: list[str] = field(default_factory=list)  # "kind student" of each output / head term
    exactness: float = 0.0  # torch vs ONNX Runtime on the first sample: max |Δ| / max(max |y|, atol / rtol)
    loss_before: float = 0.0  # held-out output terms, each relative to the teacher's size
    loss_after: float = 0.0
    seconds: float = 0.0
    before: dict[str, Fidelity] = field(default_factory=dict)  # held-out outputs vs dense, before
    after: dict[str, Fidelity] = field(default_factory=dict)
    refit_all: bool = False  # no step won: the pipeline re-fitted again on all samples (held-out ones included)

    @property
    def changed(self) -> bool:
        return self.best_step > 0

    @property
    def notes(self) -> list[str]:
        kept = (f"kept step {self.best_step}" if self.changed else
                "no step beat the re-fit: re-fitted again on all samples" if self.refit_all else
                "no step beat the given weights: kept them")
        out = [f"fine-tuned {self.trainable} weight tensors ({self.parameters} values) for {self.steps} steps on "
               f"{self.train_samples} samples ({self.stopped}; {self.seconds:.1f}s); held-out output loss "
               f"{self.loss_before:.4g} -> {self.loss_after:.4g} on {self.held_samples} samples, {kept}",
               f"taught: {', '.join(self.heads)}; features of {len(self.features)} pruned layers"]
        for name, fb in self.before.items():
            fa = self.after.get(name)
            if fa is not None:
                out.append(f"held-out output {name}: before {fb.describe()}; after {fa.describe()}")
        return out

    def describe(self) -> str:
        return "\n".join(f"distill: {n}" for n in self.notes)

    def to_json(self) -> dict[str, object]:
        return {"steps": self.steps, "best_step": self.best_step, "stopped": self.stopped, "refit_all": self.refit_all,
                "train_samples": self.train_samples, "held_samples": self.held_samples,
                "trainable": self.trainable, "parameters": self.parameters, "features": self.features,
                "terms": self.heads, "exactness": self.exactness, "loss_before": self.loss_before,
                "loss_after": self.loss_after, "seconds": self.seconds,
                "outputs": {n: {"before": fb.to_json(), "after": self.after[n].to_json() if n in self.after else None}
                            for n, fb in self.before.items()}}


def exactness(graph: TorchGraph, pruned: onnx.ModelProto, unit: Feed) -> float:
    """max |torch − ORT| / max(max |ORT|, atol / rtol) over the float outputs; refuses beyond the
    tolerance, or where the two disagree on which elements are finite."""
    import torch

    from onnxprune.recovery.fidelity import float_outputs

    names = float_outputs(pruned)
    ref = runtime.run(pruned, unit, names)
    with torch.no_grad():
        got = graph(unit, names)
    worst = 0.0
    for n in names:
        r, g = ref[n].astype(np.float64), got[n].numpy().astype(np.float64)
        if r.shape != g.shape:
            raise OnnxPruneError(f"distill: the PyTorch run of the pruned model gives output {n} the shape "
                                 f"{g.shape}, ONNX Runtime {r.shape}: cannot fine-tune this model exactly")
        finite = np.isfinite(r)
        same = np.array_equal(finite, np.isfinite(g)) and np.array_equal(r[~finite], g[~finite], equal_nan=True)
        r, g = r[finite], g[finite]
        diff = float(np.abs(g - r).max(initial=0.0)) if same else float("inf")
        top = float(np.abs(r).max(initial=0.0))
        worst = max(worst, diff / max(top, EXACT_ATOL / EXACT_RTOL))  # a saturated output is judged absolutely
        if diff > EXACT_RTOL * top + EXACT_ATOL:
            raise OnnxPruneError(f"distill: the PyTorch run of the pruned model differs from ONNX Runtime on output "
                                 f"{n} (max |difference| {diff:.3g} of {top:.3g}): cannot fine-tune this model exactly")
    return worst


def write_back(model: onnx.ModelProto, values: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of `model` with these initializers' values replaced (same name, shape and dtype)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    done: set[str] = set()
    for t in out.graph.initializer:
        if t.name in values:
            arr = np.asarray(values[t.name])
            if tuple(arr.shape) != tuple(int(d) for d in t.dims):
                raise InternalError(f"distill: trained {t.name} has shape {arr.shape}, the initializer {list(t.dims)}")
            t.CopyFrom(numpy_helper.from_array(arr.astype(helper.tensor_dtype_to_np_dtype(t.data_type)), t.name))
            done.add(t.name)
    missing = set(values) - done
    if missing:
        raise InternalError(f"distill: no initializer named {sorted(missing)[:3]} to write back")
    return out


def check_structure(before: onnx.ModelProto, after: onnx.ModelProto) -> None:
    """Only initializer values may differ: the graph, names, shapes and dtypes must be the same."""
    def signature(m: onnx.ModelProto) -> bytes:
        skel = without_weights(m, stub_bytes=0)
        return skel.graph.SerializeToString(deterministic=True)

    if signature(before) != signature(after):
        raise InternalError("distill changed the structure of the pruned model (graph, names, shapes or dtypes)")


def _batches(train: list[int], size: int, seed: int) -> Iterator[list[int]]:
    rng = np.random.default_rng(seed + 1)
    while True:
        order = rng.permutation(train).tolist()
        for i in range(0, len(order), size):
            yield order[i:i + size]


def distill(pruned: onnx.ModelProto, dense: onnx.ModelProto, calibration: CalibrationLike | Split, *,
            dg: DependencyGraph | None = None, removed_roots: set[int] | None = None,
            options: DistillOptions | None = None, cache_bytes: int = 512 << 20) -> DistillResult:
    """Fine-tune `pruned` toward `dense` on the calibration data; returns the trained model (a copy).

    calibration: a `Split` (the re-fit read its `train` part only), or any calibration, then split here.
    dense: the teacher, with the same tensor names (the normalised original, `dg.model`). dg,
    removed_roots: the analysis and removal that made `pruned`; they say which layers were pruned
    and which of their channels were kept (without them only the outputs are compared).
    cache_bytes: the teacher's tensors kept in memory up to this size (beyond it the teacher runs
    again each time a sample comes round). The input models are never modified.
    """
    require_torch()
    import torch

    from onnxprune.recovery.torch_graph import TorchGraph, opset_of, unsupported

    opts = (options or DistillOptions()).check()
    start = time.perf_counter()
    bad = unsupported(pruned)
    if bad:
        raise OnnxPruneError(f"distill: no PyTorch rule for {', '.join(bad)} in the pruned model; "
                             "run without distillation")
    names = trainable(pruned)
    if not names:
        raise OnnxPruneError("distill: the pruned model has no float32 weights to fine-tune")
    split = calibration if isinstance(calibration, Split) else split_calibration(
        calibration, dense, holdout=opts.holdout, seed=opts.seed)
    train_units, held_units = units_of(split.train), units_of(split.held)
    units = train_units + held_units
    train, held = list(range(len(train_units))), list(range(len(train_units), len(units)))

    dense_tensors = {o for n in dense.graph.node for o in n.output} | {i.name for i in dense.graph.input}
    heads = head_terms(pruned, dense_tensors, opset_of(pruned))
    terms = heads + output_terms(pruned, heads)
    teacher_model = dense
    if dg is not None and removed_roots is not None and opts.feature_weight > 0:
        layers = feature_layers(pruned, dg, removed_roots, opts.feature_layers)
        if layers:
            teacher_model, feats = feature_terms(dense, dg, layers)
            terms += feats
    elif opts.feature_layers:
        raise OnnxPruneError("distill feature layers need the analysis and removal that pruned the model")
    if not terms:
        raise OnnxPruneError("distill: the pruned model has no float output to compare with the dense model")

    torch.manual_seed(opts.seed)
    graph = TorchGraph(pruned, names)
    result = DistillResult(pruned, train_samples=sum(feed_rows(units[i]) for i in train),
                           held_samples=sum(feed_rows(units[i]) for i in held), trainable=len(names),
                           parameters=sum(int(p.numel()) for p in graph.params),
                           features=[t.label for t in terms if t.feature],
                           heads=[f"{t.kind} {t.label}" for t in terms if not t.feature])
    result.exactness = exactness(graph, pruned, units[0])
    objective = Objective(graph, Teacher(teacher_model, [t.teacher for t in terms], cache_bytes), terms,
                          opts.feature_weight, split.static)

    def held_raw() -> np.ndarray:
        """Per-term raw values, averaged over the held-out units."""
        raw = np.zeros(len(terms))
        with torch.no_grad():
            for group in (held[i:i + opts.batch] for i in range(0, len(held), opts.batch)):
                raw += objective.terms_of(group, [units[i] for i in group], backward=False) * len(group)
        return raw / len(held)

    objective.fit_scale(held, [units[i] for i in held])
    best, best_loss = graph.state(), objective.loss(held_raw())
    result.loss_before = best_loss
    every = opts.eval_every or max(1, opts.steps // 10)
    optimiser = torch.optim.Adam(graph.params, lr=opts.lr)
    stale, step, result.stopped = 0, 0, f"{opts.steps} steps"
    train_start = time.perf_counter()
    for step, group in enumerate(_batches(train, opts.batch, opts.seed), start=1):
        optimiser.zero_grad(set_to_none=True)
        objective.terms_of(group, [units[i] for i in group], backward=True)
        optimiser.step()
        out_of_time = time.perf_counter() - train_start > opts.time_budget
        if step % every == 0 or step == opts.steps or out_of_time:
            loss = objective.loss(held_raw())
            if loss < best_loss:
                best, best_loss, result.best_step, stale = graph.state(), loss, step, 0
            else:
                stale += 1
            if stale >= opts.patience:
                result.stopped = f"early stop: {stale} held-out evaluations without improvement"
                break
        if out_of_time:
            result.stopped = f"time budget {opts.time_budget:g}s"
            break
        if step >= opts.steps:
            break
    result.steps, result.loss_after = step, best_loss
    out = write_back(pruned, best) if result.changed else pruned
    check_structure(pruned, out)
    held_feeds = [f for i in range(0, len(held), opts.batch)
                  for f in joined([units[j] for j in held[i:i + opts.batch]], split.static)]
    result.before, result.after = compare_outputs(dense, [pruned, out], held_feeds)
    result.model = out
    result.seconds = time.perf_counter() - start
    return result
