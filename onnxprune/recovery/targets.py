"""Where each wave's dense targets Y come from: one cached dense pass when it fits in memory, else live.

Cached: the dense model runs once over the calibration data; its target tensors (and the feeds)
are kept, and each wave's pruned model gets them as extra, unused graph inputs
(`__reconstruct_t<i>`), so `collect_stats` reads Y straight from the feed and only the pruned
model runs per wave. Live: every wave runs the dense target model next to the pruned one
(`collect_stats(..., target_model=...)`), for calibration sets whose targets exceed the budget.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import onnx
from onnx import helper

from onnxprune.calib.collect import (
    ActivationStats,
    collect_stats,
    expose_outputs,
    feed_samples,
    find_node,
    gram_stats_from,
)
from onnxprune.calib.frontier import Budget, Frontier, hold_feeds
from onnxprune.calib.layer_grams import RowWeight
from onnxprune.calib.source import CalibrationSource
from onnxprune.io import runtime
from onnxprune.io.types import Feed
from onnxprune.recovery.layers import FitLayer

DEFAULT_CACHE_BYTES = 256 << 20
DEFAULT_FRONTIER_BYTES = 2 << 30  # held feeds and the tensors kept between passes (FrontierTargets)


class Targets:
    """Collects X-side Grams on a working model with XᵀY against the dense targets."""

    def __init__(self, tmodel: onnx.ModelProto, targets: Mapping[str, str], calibration: CalibrationSource,
                 *, cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.tmodel, self.targets, self.calibration = tmodel, dict(targets), calibration
        tensors = list(dict.fromkeys(self.targets.values()))
        self.alias = {t: f"__reconstruct_t{i}" for i, t in enumerate(tensors)}
        self.cache = self._fill(tensors, cache_bytes) if cache_bytes > 0 else None

    @property
    def cached(self) -> bool:
        return self.cache is not None

    def _fill(self, tensors: Sequence[str], budget: int) -> list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]] | None:
        sess = runtime.session(expose_outputs(self.tmodel, tensors))
        out: list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]] = []
        used = 0
        for feed in self.calibration.batches():
            vals = runtime.run(sess, feed, list(tensors))
            used += sum(v.nbytes for v in vals.values()) + sum(np.asarray(v).nbytes for v in feed.values())
            if used > budget:
                return None
            out.append(({k: np.asarray(v) for k, v in feed.items()},
                        {self.alias[t]: v for t, v in vals.items()}))
        return out

    def feeds(self) -> Iterator[Feed]:
        """The calibration feeds (from the cache when there is one)."""
        if self.cache is None:
            yield from self.calibration.batches()
        else:
            for feed, _ in self.cache:
                yield feed

    def _augmented(self, work: onnx.ModelProto) -> onnx.ModelProto:
        m = onnx.ModelProto()
        m.CopyFrom(work)
        assert self.cache is not None
        first = self.cache[0][1] if self.cache else {}
        for name, arr in first.items():
            elem = helper.np_dtype_to_tensor_dtype(arr.dtype)
            m.graph.input.append(helper.make_tensor_value_info(name, elem, None))
        return m

    def stats(self, work: onnx.ModelProto, keys: Sequence[str], *, max_rows: int | None,
              seed: int, row_weights: Mapping[str, RowWeight] | None = None,
              holdout: bool = False) -> ActivationStats:
        if self.cache is None:
            return collect_stats(work, self.calibration.batches(), grams=keys, targets={k: self.targets[k] for k in keys},
                                 target_model=self.tmodel, max_rows=max_rows, seed=seed, row_weights=row_weights,
                                 holdout=holdout)
        cache = self.cache
        batches = ({**feed, **vals} for feed, vals in cache)
        return collect_stats(self._augmented(work), batches, grams=keys,
                             targets={k: self.alias[self.targets[k]] for k in keys}, max_rows=max_rows, seed=seed,
                             row_weights=row_weights, holdout=holdout)


class FrontierTargets:
    """`Targets` over held feeds where each pass runs only the segment it adds (calib.frontier): the
    pruned model from the tensors kept after earlier waves were fitted, the dense target model from
    its own kept tensors. `passes` are the layers of each `stats` call, in the order of the calls."""

    def __init__(self, work: onnx.ModelProto, tmodel: onnx.ModelProto, targets: Mapping[str, str],
                 feeds: Sequence[Feed], passes: Sequence[Sequence[FitLayer]], budget: Budget) -> None:
        self.tmodel, self.targets, self.held = tmodel, dict(targets), list(feeds)
        changes = {name: k for k, chunk in enumerate(passes) for layer in chunk
                   for name in (layer.node, layer.bias_node) if name is not None}
        inputs = [[find_node(work, layer.node).input[0] for layer in chunk] for chunk in passes]
        self.work = Frontier(work, self.held, inputs, changes, budget)
        self.dense = Frontier(tmodel, self.held, [[self.targets[x.node] for x in chunk] for chunk in passes], {},
                              budget)

    @classmethod
    def of(cls, work: onnx.ModelProto, tmodel: onnx.ModelProto, targets: Mapping[str, str],
           calibration: CalibrationSource, passes: Sequence[Sequence[FitLayer]], *,
           budget: int = DEFAULT_FRONTIER_BYTES) -> FrontierTargets | None:
        """None when the feeds alone exceed the budget (then every pass runs from the graph inputs)."""
        shared = Budget(budget)
        feeds = hold_feeds(calibration.batches(), shared)
        return None if feeds is None else cls(work, tmodel, targets, feeds, passes, shared)

    def feeds(self) -> Iterator[Feed]:
        yield from self.held

    def stats(self, work: onnx.ModelProto, keys: Sequence[str], *, max_rows: int | None,
              seed: int, row_weights: Mapping[str, RowWeight] | None = None,
              holdout: bool = False) -> ActivationStats:
        # strict: both passes run to their end (a Frontier keeps its tensors only then)
        values = ((feed_samples(f), {**x, **y}) for f, x, y in
                  zip(self.held, self.work.run(work), self.dense.run(self.tmodel), strict=True))
        return gram_stats_from(work, values, grams=keys, targets={k: self.targets[k] for k in keys},
                               max_rows=max_rows, seed=seed, row_weights=row_weights, holdout=holdout)
