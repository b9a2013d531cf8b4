"""Base of the data-driven criteria: calibration batches, and statistics gathered once per model.

`api.prune` calls `configure(calibration=..., shapes=...)` on an importance that has it, with the
run's `CalibrationSource` (any other form is converted by `CalibrationSource.of`, once per
dependency graph; None: random inputs, with a CalibrationWarning). The edge statistics are computed on the first call and cached on the object,
keyed by the dependency graph, so scoring every group costs one pass over the calibration data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol, TypeVar, runtime_checkable

import numpy as np

from onnxprune.calib.source import CalibrationLike, CalibrationSource
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.graph.groups import Group
from onnxprune.io.types import Feed, Shapes
from onnxprune.scoring.edge_stats import EdgeStats, collect_edge_stats

T = TypeVar("T")


@runtime_checkable
class DataDriven(Protocol):
    """An Importance that reads activations: it must be told where the calibration data is."""

    name: str

    def configure(self, *, calibration: CalibrationLike = None, shapes: Shapes | None = None) -> None: ...


class CalibratedImportance:
    """Holds the calibration source; `edge_stats(dg)` runs the one statistics pass and caches it."""

    name = "calibrated"
    producers = True  # also gather the producers' output tensors

    def __init__(self) -> None:
        self.calibration: CalibrationLike = None
        self.shapes: Shapes | None = None
        self._cache: dict[tuple[int, str], tuple[DependencyGraph, object]] = {}

    def configure(self, *, calibration: CalibrationLike = None, shapes: Shapes | None = None) -> None:
        self.calibration = calibration
        self.shapes = shapes
        self._cache.clear()

    def source(self, dg: DependencyGraph) -> CalibrationSource:
        return self.cached(dg, "source", lambda: CalibrationSource.of(self.calibration, dg.model, shapes=self.shapes))

    def batches(self, dg: DependencyGraph) -> Iterator[Feed]:
        return self.source(dg).batches()

    def cached(self, dg: DependencyGraph, key: str, make: Callable[[], T]) -> T:
        """`make()` once per dependency graph and key (cleared by `configure`)."""
        hit = self._cache.get((id(dg), key))
        if hit is None or hit[0] is not dg:
            hit = (dg, make())
            self._cache[(id(dg), key)] = hit
        return hit[1]  # type: ignore[return-value]

    def edge_stats(self, dg: DependencyGraph) -> EdgeStats:
        return self.cached(dg, "edge_stats",
                           lambda: collect_edge_stats(dg, self.batches(dg), producers=self.producers))

    def __call__(self, dg: DependencyGraph, group: Group) -> np.ndarray:
        raise NotImplementedError


def normalised_sum(parts: list[np.ndarray], size: int) -> np.ndarray | None:
    """Sum of per-member contributions, each divided by its mean (like magnitude.py); None if none count."""
    total = np.zeros(size)
    used = 0
    for c in parts:
        m = float(c.mean()) if c.size else 0.0
        if m > 0 and np.isfinite(m):
            total += c / m
            used += 1
    return total if used else None
