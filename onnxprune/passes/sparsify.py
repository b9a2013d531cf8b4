"""SparsifyPass: zero Conv/Gemm/MatMul weights (unstructured or N:M) by magnitude, Wanda or SparseGPT.

Weights keep their shapes; only values become zero (and, with `refit`, the kept values are re-fitted
by least squares). The input model is never modified. Skipped (and listed in the notes): weights
that are not initializers, shared by several nodes, also graph inputs/outputs, not floating point,
with a reduction length below `min_reduction`; for N:M, reduction lengths that are not a multiple of
M; for SparseGPT and re-fits, weights without a 2-D view (batched MatMul, 3-D conv).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx

from onnxprune.calib.collect import DEFAULT_MAX_ROWS, collect_stats
from onnxprune.calib.source import CalibrationLike, CalibrationSource
from onnxprune.errors import OnnxPruneError
from onnxprune.io.runtime import session
from onnxprune.passes.base import Pass, PassConditionError, PassResult
from onnxprune.sparsity.colnorms import column_norms
from onnxprune.sparsity.methods import METHODS, gram_weight, mask_weight
from onnxprune.sparsity.sites import Target, read_weight, select_targets, write_weight
from onnxprune.sparsity.xw_targets import with_bias_free_outputs

DEFAULT_MIN_REDUCTION = 0


def parse_pattern(text: str) -> tuple[int, int]:
    """`2:4` -> (2, 4)."""
    n, sep, m = text.partition(":")
    try:
        pat = (int(n), int(m))
    except ValueError:
        raise OnnxPruneError(f"--pattern {text!r}: expected N:M, e.g. 2:4") from None
    if not sep or not 0 < pat[0] < pat[1]:
        raise OnnxPruneError(f"--pattern {text!r}: expected N:M with 0 < N < M, e.g. 2:4")
    return pat


class SparsifyPass(Pass):
    """Zero weights to `sparsity` (fraction per output row) or to an N:M `pattern` on the TensorRT axis.

    calibration: a CalibrationSource, or any form `CalibrationSource.of` takes (a zero-argument callable
    returning fresh feed iterators, a sequence of feeds, a CalibConfig or path, or None: random
    inputs, with a warning). Only wanda, sparsegpt and re-fits read it.
    sequential (sparsegpt, re-fits): collect each layer's Gram on the model with the earlier layers
    already sparsified (one calibration pass per layer), as in SparseGPT; False: one pass for all layers.
    refit: after masking, re-fit the kept weights of every output row by least squares so that the
    layer reproduces the *dense* model's (bias-free) output from the sparsified model's input
    (`sparsity.refit`); sparsegpt also starts from that fit. None (default): on when real calibration
    data is given. min_reduction: leave weights whose rows are shorter alone (a 1-channel 3x3 stem
    has 9), they hold few weights and every pruned one costs much.
    """

    name = "sparsify"

    def __init__(self, *, sparsity: float | None = None, pattern: tuple[int, int] | None = None,
                 method: str = "magnitude", calibration: CalibrationLike = None, sequential: bool = True,
                 blocksize: int = 128, percdamp: float = 0.01, max_rows: int | None = DEFAULT_MAX_ROWS,
                 seed: int = 0, refit: bool | None = None, min_reduction: int = DEFAULT_MIN_REDUCTION) -> None:
        if (sparsity is None) == (pattern is None):
            raise OnnxPruneError("give exactly one of a sparsity fraction or an N:M pattern")
        if sparsity is not None and not 0.0 <= sparsity < 1.0:
            raise OnnxPruneError(f"sparsity must be in [0, 1), got {sparsity}")
        if pattern is not None and not 0 < pattern[0] < pattern[1]:
            raise OnnxPruneError(f"N:M pattern needs 0 < N < M, got {pattern[0]}:{pattern[1]}")
        if method not in METHODS:
            raise OnnxPruneError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        self.sparsity, self.pattern, self.method = sparsity, pattern, method
        self.calibration = calibration
        self.sequential, self.blocksize, self.percdamp = sequential, blocksize, percdamp
        self.max_rows, self.seed = max_rows, seed
        self.refit = refit  # None: resolved per model, on with real data
        self.min_reduction = min_reduction

    def call(self, model: onnx.ModelProto) -> PassResult:
        work = onnx.ModelProto()
        work.CopyFrom(model)
        source = CalibrationSource.of(self.calibration, model)
        refit = source.is_real if self.refit is None else self.refit
        gram_based = self.method == "sparsegpt" or refit
        targets, notes = select_targets(work, pattern=self.pattern, method="sparsegpt" if gram_based else self.method,
                                        min_reduction=self.min_reduction)
        if not targets:
            return PassResult(work, False, [*notes, "no weight could be sparsified"])
        if gram_based:
            changed = self._layerwise(work, targets, source, model, refit=refit)
        elif self.method == "wanda":
            changed = self._masks(work, targets, source)
        else:
            changed = self._masks(work, targets, None)
        target = f"{self.pattern[0]}:{self.pattern[1]}" if self.pattern else f"{self.sparsity:.0%}"
        refitted = ", re-fitted" if refit else ""
        notes.append(f"{self.method} {target}{refitted}: sparsified {changed} of {len(targets)} weights")
        return PassResult(work, changed > 0, notes)

    def requires(self, model: onnx.ModelProto) -> None:
        """The input must load in ONNX Runtime (a bad input, exit 2): then a result that does not is our bug."""
        session(model)

    def ensures(self, model: onnx.ModelProto) -> None:
        """Like a pruned model, the result must load in ONNX Runtime (opset, op domains, shapes)."""
        try:
            session(model)
        except OnnxPruneError as exc:
            raise PassConditionError(f"refusing the sparsified model: {exc}") from None

    def _masks(self, work: onnx.ModelProto, targets: list[Target], source: CalibrationSource | None) -> int:
        norms = column_norms(work, source.batches(), targets) if source is not None else {}
        changed = 0
        for t in targets:
            w = read_weight(work, t.site.initializer)
            new = mask_weight(w, t, sparsity=self.sparsity, pattern=self.pattern, column_norm=norms.get(t.key))
            changed += self._store(work, t, w, new)
        return changed

    def _chunks(self, targets: list[Target]) -> Iterator[list[Target]]:
        if self.sequential:
            yield from ([t] for t in targets)
        else:
            yield targets

    def _layerwise(self, work: onnx.ModelProto, targets: list[Target], source: CalibrationSource,
                   dense: onnx.ModelProto, *, refit: bool) -> int:
        """Gram-based methods: one calibration pass per chunk (per layer when sequential)."""
        target_model, outputs = with_bias_free_outputs(dense, targets) if refit else (None, {})
        changed = 0
        for chunk in self._chunks(targets):
            keys = [t.key for t in chunk]
            grams = collect_stats(work, source.batches(), grams=keys, targets={k: outputs[k] for k in keys if k in outputs},
                                  target_model=target_model, max_rows=self.max_rows, seed=self.seed).grams
            for t in chunk:
                w = read_weight(work, t.site.initializer)
                new = gram_weight(w, t, grams[t.key], method=self.method, sparsity=self.sparsity,
                                  pattern=self.pattern, refit=refit, blocksize=self.blocksize,
                                  percdamp=self.percdamp)
                changed += self._store(work, t, w, new)
        return changed

    @staticmethod
    def _store(work: onnx.ModelProto, t: Target, old: np.ndarray, new: np.ndarray) -> int:
        if np.array_equal(old, new.astype(old.dtype)):
            return 0
        write_weight(work, t.site.initializer, new)
        return 1


def sparsify(model: onnx.ModelProto, *, sparsity: float | None = None, pattern: tuple[int, int] | None = None,
             method: str = "magnitude", calibration: CalibrationLike = None, sequential: bool = True,
             refit: bool | None = None, min_reduction: int = DEFAULT_MIN_REDUCTION) -> PassResult:
    """Functional form of SparsifyPass (a sparsified copy of `model`, plus notes)."""
    return SparsifyPass(sparsity=sparsity, pattern=pattern, method=method, calibration=calibration,
                        sequential=sequential, refit=refit, min_reduction=min_reduction)(model)
