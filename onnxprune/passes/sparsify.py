"""SparsifyPass: zero Conv/Gemm/MatMul weights (unstructured or N:M) by magnitude, Wanda or SparseGPT.

Weights keep their shapes; only values become zero. The input model is never modified.
Skipped (and listed in the notes): weights that are not initializers, shared by several nodes,
also graph inputs/outputs, not floating point; for N:M, reduction lengths that are not a multiple
of M; for SparseGPT, weights without a 2-D view (batched MatMul, 3-D conv).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import onnx

from onnxprune.activations import DEFAULT_MAX_ROWS, collect_stats
from onnxprune.calibration import CalibConfig, batch_factory
from onnxprune.errors import OnnxPruneError
from onnxprune.passes.base import Pass, PassResult
from onnxprune.sparsity.methods import METHODS, mask_weight, sparsegpt_weight
from onnxprune.sparsity.sites import Target, read_weight, select_targets, write_weight

Feed = Mapping[str, np.ndarray]
Calibration = Callable[[], Iterable[Feed]] | Sequence[Feed] | CalibConfig | None


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

    calibration: a zero-argument callable returning fresh feed iterators, a sequence of feeds, a
    CalibConfig, or None (random inputs, with a warning). Only wanda/sparsegpt read it.
    sequential (sparsegpt): collect each layer's Gram on the model with the earlier layers already
    sparsified (one calibration pass per layer), as in SparseGPT; False: one pass for all layers.
    """

    name = "sparsify"

    def __init__(self, *, sparsity: float | None = None, pattern: tuple[int, int] | None = None,
                 method: str = "magnitude", calibration: Calibration = None, sequential: bool = True,
                 blocksize: int = 128, percdamp: float = 0.01, max_rows: int | None = DEFAULT_MAX_ROWS,
                 seed: int = 0) -> None:
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

    def _batches(self, model: onnx.ModelProto) -> Callable[[], Iterable[Feed]]:
        cal = self.calibration
        if cal is None or isinstance(cal, CalibConfig):
            return batch_factory(model, cal)
        if callable(cal):
            return cal
        feeds = list(cal)
        return lambda: iter(feeds)

    def call(self, model: onnx.ModelProto) -> PassResult:
        work = onnx.ModelProto()
        work.CopyFrom(model)
        targets, notes = select_targets(work, pattern=self.pattern, method=self.method)
        if not targets:
            return PassResult(work, False, [*notes, "no weight could be sparsified"])
        if self.method == "magnitude":
            changed = self._masks(work, targets, None)
        elif self.method == "wanda":
            changed = self._masks(work, targets, self._batches(model))
        else:
            changed = self._sparsegpt(work, targets, self._batches(model))
        target = f"{self.pattern[0]}:{self.pattern[1]}" if self.pattern else f"{self.sparsity:.0%}"
        notes.append(f"{self.method} {target}: sparsified {changed} of {len(targets)} weights")
        return PassResult(work, changed > 0, notes)

    def _masks(self, work: onnx.ModelProto, targets: list[Target],
               batches: Callable[[], Iterable[Feed]] | None) -> int:
        stats = {}
        if batches is not None:
            axes = {t.input: t.input_axis for t in targets}
            stats = collect_stats(work, batches(), channels=axes).channels
        changed = 0
        for t in targets:
            w = read_weight(work, t.site.initializer)
            new = mask_weight(w, t, sparsity=self.sparsity, pattern=self.pattern, stats=stats.get(t.input))
            changed += self._store(work, t, w, new)
        return changed

    def _chunks(self, targets: list[Target]) -> Iterator[list[Target]]:
        if self.sequential:
            yield from ([t] for t in targets)
        else:
            yield targets

    def _sparsegpt(self, work: onnx.ModelProto, targets: list[Target],
                   batches: Callable[[], Iterable[Feed]]) -> int:
        changed = 0
        for chunk in self._chunks(targets):
            grams = collect_stats(work, batches(), grams=[t.key for t in chunk], max_rows=self.max_rows,
                                  seed=self.seed).grams
            for t in chunk:
                w = read_weight(work, t.site.initializer)
                new = sparsegpt_weight(w, t, grams[t.key], sparsity=self.sparsity, pattern=self.pattern,
                                       blocksize=self.blocksize, percdamp=self.percdamp)
                changed += self._store(work, t, w, new)
        return changed

    @staticmethod
    def _store(work: onnx.ModelProto, t: Target, old: np.ndarray, new: np.ndarray) -> int:
        if np.array_equal(old, new.astype(old.dtype)):
            return 0
        write_weight(work, t.site.initializer, new)
        return 1


def sparsify(model: onnx.ModelProto, *, sparsity: float | None = None, pattern: tuple[int, int] | None = None,
             method: str = "magnitude", calibration: Calibration = None, sequential: bool = True) -> PassResult:
    """Functional form of SparsifyPass (a sparsified copy of `model`, plus notes)."""
    return SparsifyPass(sparsity=sparsity, pattern=pattern, method=method, calibration=calibration,
                        sequential=sequential)(model)
