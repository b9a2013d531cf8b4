"""Every criterion, by name, and scoring a whole dependency graph with one of them.

Importing this module registers the criteria (each module calls `register_importance`). To add a
criterion: a module under scoring/ with a registered factory, imported here.
"""

from __future__ import annotations

import numpy as np

from onnxprune.calib.source import CalibrationLike
from onnxprune.errors import OnnxPruneError
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.io.progress import ProgressFn, report
from onnxprune.io.types import Shapes
from onnxprune.scoring import activation, flap, magnitude, obs, sensitivity, wanda  # noqa: F401 - registrations
from onnxprune.scoring.calibrated import DataDriven
from onnxprune.scoring.importance import CRITERIA, Importance


def get_importance(name: str) -> Importance:
    if name not in CRITERIA:
        raise OnnxPruneError(f"unknown criterion {name!r}; choose one of: {', '.join(sorted(CRITERIA))}")
    return CRITERIA[name]()


def criteria() -> list[str]:
    return sorted(CRITERIA)


def score_groups(dg: DependencyGraph, criterion: str, *, calibration: CalibrationLike = None,
                 shapes: Shapes | None = None, progress: ProgressFn | None = None) -> dict[int, np.ndarray]:
    """One score array per prunable group (data-driven criteria read `calibration`)."""
    importance = get_importance(criterion)
    if isinstance(importance, DataDriven):
        importance.configure(calibration=calibration, shapes=shapes)
    tick = report(progress)
    groups = dg.prunable
    tick("scoring", 0, len(groups))
    out: dict[int, np.ndarray] = {}
    for i, g in enumerate(groups):
        out[g.id] = np.asarray(importance(dg, g), dtype=np.float64)
        tick("scoring", i + 1, len(groups))
    return out
