"""Structured recovery without training: re-fit pruned layers by ridge least squares.

After channels are removed, each affected Conv/ConvTranspose/Gemm/MatMul gets new weights and bias
so that its pre-activation output on calibration data matches the dense model's (kept output
channels only), with λ chosen per layer on calibration samples the fit did not see (recovery.solve:
every second sample is held out, both ways), λ = ∞ keeping W₀ and re-fitting the bias alone:

    min ‖[X_kept, 1]·[W'; b']ᵀ − Y_dense‖² + λ‖W' − W₀‖²      (W₀: the layer's pruned weights)

X comes from the pruned model *as already re-fitted upstream* (block by block, as in ThiNet and
SparseGPT), Y from the dense model on the same feeds. Layers are fitted in waves: all layers whose
re-fitted ancestors are done share one calibration pass. Grouped convs are fitted per group. A
layer keeps its pruned weights when its system stays singular, when they score better on the held-out
samples than every fit, or when the fit would not lower its error on the calibration rows; the whole
model is kept as pruned if its outputs end up further from the dense model's than without
reconstruction. The input models are never modified.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx

from onnxprune.calib.collect import DEFAULT_MAX_ROWS, LayerGram
from onnxprune.calib.layer_grams import RowWeight
from onnxprune.calib.source import CalibrationLike, CalibrationSource
from onnxprune.errors import OnnxPruneError
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.io.types import Shapes
from onnxprune.passes.base import runs_within
from onnxprune.recovery.fidelity import Fidelity, compare_outputs
from onnxprune.recovery.heads import DEFAULT_FLOOR, WEIGHTS, logit_mask, logit_roots
from onnxprune.recovery.layer_weights import LayerWeights, read_layer, write_layer
from onnxprune.recovery.layers import FitLayer, plan_layers, target_model, waves
from onnxprune.recovery.solve import (
    BIAS_ONLY,
    DAMP_PATH,
    Fit,
    anchored_fit,
    heldout_error,
    ridge_fit,
    split_folds,
    squared_error,
)
from onnxprune.recovery.targets import DEFAULT_CACHE_BYTES, DEFAULT_FRONTIER_BYTES, FrontierTargets, Targets

DEFAULT_DAMP = 1e-3  # λ relative to mean(diag(XᵀX)) where it cannot be chosen on held-out samples
HELDOUT_TOL = 1e-9  # relative to ‖Y‖²
DEFAULT_MAX_GRAM_BYTES = 1 << 30  # Grams held at once in one calibration pass


@dataclass(frozen=True)
class LayerFit:
    """One layer: relative squared error ‖XWᵀ + b − Y‖² / ‖Y‖² on the calibration rows, before and after."""

    node: str
    op_type: str
    wave: int
    direct: bool  # lost input channels (else: re-fitted because its input changed upstream)
    rel_error_before: float
    rel_error_after: float
    fitted: bool  # False: kept the pruned weights (see note)
    note: str = ""
    damp: float | None = None  # relative λ used (inf: the bias alone re-fitted); None: not fitted
    heldout_before: float = float("nan")  # relative held-out error of the pruned weights (nan: not measured)
    heldout_after: float = float("nan")  # ... of the chosen fit, fitted on the other half


@dataclass
class ReconstructResult:
    model: onnx.ModelProto
    layers: list[LayerFit] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "node: reason" for layers that could not be re-fitted
    waves: int = 0
    samples: int = 0
    seconds: float = 0.0
    before: dict[str, Fidelity] = field(default_factory=dict)  # pruned (un-fitted) outputs vs dense
    after: dict[str, Fidelity] = field(default_factory=dict)  # reconstructed outputs vs dense
    reverted: bool = False  # outputs got further from dense: the pruned model was kept
    fixed_damp: int = 0  # layers fitted with DEFAULT_DAMP where the damping was to be chosen: nothing to hold out

    @property
    def fitted(self) -> int:
        return sum(1 for lf in self.layers if lf.fitted) if not self.reverted else 0

    @property
    def notes(self) -> list[str]:
        out = [f"re-fitted {self.fitted} of {len(self.layers)} layers in {self.waves} waves on "
               f"{self.samples} samples ({self.seconds:.1f}s)" + self._damping()]
        if self.fixed_damp:
            out.append(f"damping fixed at {DEFAULT_DAMP:g} towards 0 on {self.fixed_damp} layers: {self.samples} "
                       f"calibration sample(s) leave none to hold out for choosing it")
        out += [f"kept pruned weights of {lf.node}: {lf.note}" for lf in self.layers if not lf.fitted]
        out += [f"skipped {s}" for s in self.skipped]
        for name, fb in self.before.items():
            fa = self.after.get(name)
            if fa is not None:
                out.append(f"output {name}: without reconstruction {fb.describe()}; with {fa.describe()}")
        if self.reverted:
            out.append("outputs moved further from the dense model: kept the pruned weights everywhere")
        return out

    def _damping(self) -> str:
        chosen = Counter("bias only" if lf.damp == BIAS_ONLY else f"{lf.damp:g}"
                         for lf in self.layers if lf.fitted and lf.damp is not None and np.isfinite(lf.heldout_after))
        if not chosen:
            return ""
        return "; damping chosen on held-out samples: " + ", ".join(f"{k} x{v}" for k, v in sorted(chosen.items()))

    def describe(self) -> str:
        return "\n".join(f"reconstruct: {n}" for n in self.notes)

    def to_json(self) -> dict[str, object]:
        return {
            "fitted": self.fitted, "waves": self.waves, "samples": self.samples, "seconds": self.seconds,
            "reverted": self.reverted, "skipped": self.skipped, "fixed_damp": self.fixed_damp,
            "layers": [{"node": lf.node, "op_type": lf.op_type, "wave": lf.wave, "direct": lf.direct,
                        "rel_error_before": lf.rel_error_before, "rel_error_after": lf.rel_error_after,
                        "fitted": lf.fitted, "note": lf.note, "damp": lf.damp,
                        "heldout_before": _finite(lf.heldout_before), "heldout_after": _finite(lf.heldout_after)}
                       for lf in self.layers],
            "outputs": {n: {"before": fb.to_json(), "after": self.after[n].to_json() if n in self.after else None}
                        for n, fb in self.before.items()},
        }


def _finite(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def _rank_of(dg: DependencyGraph, layers: list[FitLayer]) -> dict[str, int]:
    out: dict[str, int] = {}
    for layer in layers:
        shape = dg.analysis.view.shape(layer.output)
        if shape is not None:
            out[layer.output] = len(shape)
    return out


def _gram_bytes(model: onnx.ModelProto, layer: FitLayer, *, holdout: bool = False) -> int:
    node = next(n for n in model.graph.node if n.name == layer.node)
    w = next(t for t in model.graph.initializer if t.name == node.input[1])
    dims = [int(d) for d in w.dims]
    group = next((int(a.i) for a in node.attribute if a.name == "group"), 1)
    if layer.op_type == "Conv":
        d = int(np.prod(dims[1:]))
    elif layer.op_type == "ConvTranspose":  # per group: (C/g)*kh*kw columns
        d = dims[0] // group * int(np.prod(dims[2:]))
    elif layer.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute):
        d = dims[1]
    else:
        d = dims[0]
    return 8 * (d + 1) ** 2 * (group if layer.op_type in ("Conv", "ConvTranspose") else 1) * (2 if holdout else 1)


def _choose_damp(lg: LayerGram, cur: LayerWeights) -> tuple[float | None, float, float, float]:
    """The relative λ along DAMP_PATH whose fits score best on the held-out halves, summed over the
    groups (None: the pruned weights score better than every fit); with the held-out errors of the
    pruned weights and of that choice, and ‖Y‖², all summed over the groups."""
    assert lg.holdout is not None
    folds = [split_folds(g, h) for g, h in zip(lg.groups, lg.holdout, strict=True)]
    keep = total = 0.0
    for g, w, b in zip(lg.groups, cur.weights, cur.biases, strict=True):
        e0, yy = squared_error(g, w, b)
        keep, total = keep + e0, total + yy
    best, best_err = None, float("inf")
    for rel in DAMP_PATH:
        err = sum(heldout_error(f, rel=rel, weight=w, bias=b, fit_bias=cur.has_bias)
                  for f, w, b in zip(folds, cur.weights, cur.biases, strict=True))
        if err >= best_err:
            break
        best, best_err = rel, err
    # errors from the sums carry round-off relative to ‖Y‖²: a fit must beat the pruned weights by more
    return (best if best_err < keep - HELDOUT_TOL * total else None), keep, best_err, total


def _has_folds(lg: LayerGram) -> bool:
    return lg.holdout is not None and all(0.0 < h.rows < g.rows for g, h in zip(lg.groups, lg.holdout, strict=True))


def _fit_layer(work: onnx.ModelProto, layer: FitLayer, lg: LayerGram, damp: float | None) -> LayerFit:
    """damp None: λ chosen on held-out samples where the Grams have them (else DEFAULT_DAMP towards 0)."""
    node = next(n for n in work.graph.node if n.name == layer.node)
    bias_add = None
    if layer.bias_node is not None:
        add = next(n for n in work.graph.node if n.name == layer.bias_node)
        bias_add = (add, 1 if add.input[0] == node.output[0] else 0)
    cur = read_layer(work, node, bias_add)

    def report(before: float, after: float, fitted: bool, note: str = "", rel: float | None = None,
               held: tuple[float, float] = (float("nan"), float("nan"))) -> LayerFit:
        return LayerFit(layer.node, layer.op_type, layer.wave, layer.direct, before, after, fitted, note,
                        rel if fitted else None, *held)

    if len(lg.groups) != len(cur.weights):
        return report(float("nan"), float("nan"), False, f"{len(lg.groups)} Gram groups for {len(cur.weights)} weight groups")
    for g, w in zip(lg.groups, cur.weights, strict=True):
        if g.xty is None or g.xty.shape != (w.shape[1], w.shape[0]):
            got = None if g.xty is None else g.xty.shape
            return report(float("nan"), float("nan"), False, f"target shape {got} does not match weight {w.shape}")
    chosen = damp if damp is not None else DEFAULT_DAMP
    held = (float("nan"), float("nan"))
    cross_checked = damp is None and _has_folds(lg)
    if cross_checked:
        best, keep, err, yy = _choose_damp(lg, cur)
        held = (keep / yy, err / yy) if yy > 0 else (0.0, 0.0)
        if best is None:
            rel = held[0]
            return report(rel, rel, False, f"the pruned weights score best on held-out samples "
                                          f"({held[0]:.3g}; the best fit {held[1]:.3g})", held=held)
        chosen = best
    err_b = err_a = total = 0.0
    new_w: list[np.ndarray] = []
    new_b: list[np.ndarray] = []
    for g, w, b in zip(lg.groups, cur.weights, cur.biases, strict=True):
        e0, yy = squared_error(g, w, b)
        fit: Fit | None = (anchored_fit(g, rel=chosen, weight=w, bias=b, fit_bias=cur.has_bias)
                           if cross_checked else ridge_fit(g, damp=chosen, bias=b, fit_bias=cur.has_bias))
        if fit is None:
            rel = e0 / yy if yy > 0 else 0.0
            return report(rel, rel, False, "ill-conditioned system", held=held)
        e1, _ = squared_error(g, fit.weight, fit.bias)
        err_b, err_a, total = err_b + e0, err_a + e1, total + yy
        new_w.append(fit.weight)
        new_b.append(fit.bias)
        chosen = fit.damp
    before = err_b / total if total > 0 else 0.0
    after = err_a / total if total > 0 else 0.0
    if not after < before:
        return report(before, before, False, f"the fit would not lower the error ({before:.3g} -> {after:.3g})",
                      held=held)
    write_layer(work, node, LayerWeights(new_w, new_b, cur.has_bias), bias_add)
    return report(before, after, True, rel=chosen, held=held)


def head_weights(dg: DependencyGraph, layers: Sequence[FitLayer], *,
                 floor: float = DEFAULT_FLOOR) -> dict[str, RowWeight]:
    """Row weights for the layers whose (kept) output channels include a final Sigmoid's logits
    (`SlopeWeight`) or a final Softmax's (`MarginWeight`); a layer feeding both is weighted as a Sigmoid's."""
    nodes = {n.name: n for n in dg.model.graph.node}
    out: dict[str, RowWeight] = {}
    for op, weight in reversed(WEIGHTS.items()):
        roots = logit_roots(dg, op)
        for layer in layers:
            mask = logit_mask(dg, nodes[layer.node], roots) if layer.node in nodes else None
            if mask is not None and layer.out_keep is not None:
                mask = mask[layer.out_keep]
            if mask is not None and mask.any():
                out[layer.node] = weight(mask, floor)
    return out


def reconstruct(pruned: onnx.ModelProto, *, dg: DependencyGraph, removed_roots: set[int],
                batches: CalibrationLike, dense: onnx.ModelProto | None = None, damp: float | None = None,
                propagate: bool = True, max_rows: int | None = DEFAULT_MAX_ROWS, seed: int = 0,
                max_gram_bytes: int = DEFAULT_MAX_GRAM_BYTES, check_outputs: bool = True,
                shapes: Shapes | None = None,
                cache_bytes: int = DEFAULT_CACHE_BYTES, head_floor: float | None = None,
                changed: Collection[str] = (), frontier_bytes: int = DEFAULT_FRONTIER_BYTES) -> ReconstructResult:
    """Re-fit the layers of `pruned` (made by ApplyPlan(dg, removed_roots)) to the dense model's outputs.

    dense: the reference model with the same node and tensor names (default: `dg.model`, the
    normalised original). damp: None (default) chooses each layer's λ, towards its pruned weights, on
    held-out calibration samples; a number fixes λ relative to mean(diag(XᵀX)), towards 0. batches:
    the run's CalibrationSource, or any form `CalibrationSource.of` takes (a feed factory, a sequence
    of feeds, a CalibConfig or path, or None: random inputs, with a warning). propagate: also re-fit
    layers whose weights kept all
    their inputs but whose inputs changed upstream. check_outputs: compare the graph outputs with
    and without reconstruction against the dense model and keep the pruned weights if they got worse.
    shapes: sizes of dynamic input dims for random inputs. cache_bytes: keep the dense targets and
    feeds of one dense pass in memory up to this size (else the dense model runs in every wave).
    head_floor: opt-in; layers producing a final Sigmoid's logits weight each row by the dense
    sigmoid's slope plus this floor, a final Softmax's by the slope at the dense top-2 logit gap
    (onnxprune.recovery.heads, e.g. DEFAULT_FLOOR = 0.01); None
    (default) fits them unweighted like every other layer. changed: tensors of `pruned` that differ
    from the dense model's for another reason (the outputs of dropped residual blocks, named in
    `dense` too): the layers after them are re-fitted as direct ones. frontier_bytes: hold the feeds
    and, between waves, the tensors later waves start from (calib.frontier) up to this size, so each
    wave runs only the layers it adds; 0, or feeds larger than it, run every wave from the graph
    inputs (with `cache_bytes` as above).
    """
    start = time.perf_counter()
    dense = dense if dense is not None else dg.model
    if damp is not None and damp < 0:
        raise OnnxPruneError(f"damping must be >= 0, got {damp}")
    calibration = CalibrationSource.of(batches, dense, shapes=shapes)
    work = onnx.ModelProto()
    work.CopyFrom(pruned)
    layers, skipped = plan_layers(work, dg, removed_roots, propagate=propagate, changed=changed)
    result = ReconstructResult(work, skipped=skipped)
    if not layers:
        result.seconds = time.perf_counter() - start
        return result
    tmodel, targets = target_model(dense, layers, _rank_of(dg, layers))
    stages = waves(layers)
    passes = [chunk for stage in stages
              for chunk in runs_within(stage, lambda layer: _gram_bytes(work, layer, holdout=damp is None),
                                       max_gram_bytes)]
    source: Targets | FrontierTargets | None = (
        FrontierTargets.of(work, tmodel, targets, calibration, passes, budget=frontier_bytes)
        if frontier_bytes > 0 else None)
    if source is None:
        source = Targets(tmodel, targets, calibration, cache_bytes=cache_bytes)
    weights = head_weights(dg, layers, floor=head_floor) if head_floor is not None else {}
    result.waves = len(stages)
    fits: dict[str, LayerFit] = {}
    for chunk in passes:
        st = source.stats(work, [layer.node for layer in chunk], max_rows=max_rows, seed=seed,
                          row_weights={x.node: weights[x.node] for x in chunk if x.node in weights},
                          holdout=damp is None)
        result.samples = st.samples
        for layer in chunk:
            fits[layer.node] = _fit_layer(work, layer, st.grams[layer.node], damp)
    result.layers = [fits[layer.node] for layer in layers]
    if damp is None:
        result.fixed_damp = sum(1 for lf in result.layers if lf.fitted and not np.isfinite(lf.heldout_after))
    if check_outputs and result.fitted:
        result.before, result.after = compare_outputs(dense, [pruned, work], source.feeds())
        worse = [n for n, fa in result.after.items() if fa.rel_error > result.before[n].rel_error]
        if worse:
            result.reverted = True
            result.model = onnx.ModelProto()
            result.model.CopyFrom(pruned)
    result.seconds = time.perf_counter() - start
    return result

