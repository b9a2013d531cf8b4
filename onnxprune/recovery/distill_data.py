"""The calibration data as distillation reads it: single samples (or static batches), and the seeded
cut into a training share and a held-out share (`Split`) that the pipeline's re-fit also respects."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from onnxprune.calib.source import CalibrationLike, CalibrationSource
from onnxprune.errors import OnnxPruneError
from onnxprune.io.inputs import feed_rows
from onnxprune.io.types import Feed


def units_of(source: CalibrationSource) -> list[Feed]:
    """The calibration data as the smallest feeds the model takes: single samples, or one static batch."""
    out: list[Feed] = []
    for feed in source.batches():
        rows = feed_rows(feed)
        if source.static_batch or rows <= 1:
            out.append({k: np.asarray(v) for k, v in feed.items()})
        else:
            out += [{k: np.asarray(v)[i:i + 1] for k, v in feed.items()} for i in range(rows)]
    return out


def joined(units: Sequence[Feed], static: bool) -> list[Feed]:
    """The feeds one step runs: the units concatenated (dynamic batch), or each unit (static batch)."""
    if static or len(units) == 1:
        return list(units)
    return [{k: np.concatenate([u[k] for u in units]) for k in units[0]}]


@dataclass(frozen=True)
class Split:
    """The calibration data cut in two: `train` (the re-fit and the optimiser read it) and `held`
    (only the choice of the kept weights and the reported fidelity read it). The re-fit must not see
    `held`: fitted on a few hundred samples it matches them far better than new ones, and the choice
    would always favour it (measured: benchmarks/README.md, "Distillation as recovery")."""

    train: CalibrationSource
    held: CalibrationSource
    static: bool


def split_calibration(calibration: CalibrationLike, model: onnx.ModelProto, *, holdout: float, seed: int,
                      batch: int = 32) -> Split:
    """A seeded random `holdout` share of the samples (single samples, or static batches) held out."""
    source = CalibrationSource.of(calibration, model)
    units = units_of(source)
    if len(units) < 2:
        raise OnnxPruneError(f"distill needs at least 2 calibration samples (or static batches), got {len(units)}")
    order = np.random.default_rng(seed).permutation(len(units)).tolist()
    cut = max(1, int(round(holdout * len(units))))

    def part(indices: list[int], what: str) -> CalibrationSource:
        chosen = [units[i] for i in sorted(indices)]
        feeds = [f for i in range(0, len(chosen), batch) for f in joined(chosen[i:i + batch], source.static_batch)]
        return CalibrationSource(source.model, lambda: iter(feeds), is_real=source.is_real,
                                 origin=f"{len(chosen)} {what} of {source.describe()}")

    return Split(part(order[cut:], "training units"), part(order[:cut], "held-out units"), source.static_batch)
