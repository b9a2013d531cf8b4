"""YOLOv8n at 0.7x MACs: variants of the best pipeline of `accuracy.py`, side by side.

The reference row is the best one of the accuracy table: per-group ratios from sensitivity curves
(channel_error, ratios 0.1-0.6, 16 calibration samples), channels chosen by obs, reconstruction
with the score heads weighted (head_floor 0.01). Each variant changes one thing:

* ``cap-0.5`` / ``cap-0.4``: the same curves cut at ratio 0.5 / 0.4 (no group loses more);
* ``fine-grid``: curves measured at ratios 0.05, 0.10, ..., 0.60 instead of 0.1, ..., 0.6;
* ``two-steps`` / ``three-steps``: the product's ``prune --steps K --sensitivity S.json``
  (`onnxprune.pipeline.schedule.prune_in_steps`): 0.837x then 0.7x (0.888x, 0.788x, 0.7x), each later
  step's curves re-measured on the previous step's re-fitted model, each step re-fitted to its
  own input model;
* ``obs-global``: no curves; one obs ranking over all groups (``allocation="global"``);
* ``more-photos`` / ``more-photos-l2``: the calibration images also drawn from three photographs
  bundled with other packages (matplotlib's Grace Hopper portrait, scikit-learn's china and flower;
  `_acc_images.OTHER_PHOTOS`), curves re-measured on them; with obs, and with l2 order;
* ``reference-l2``: the reference with l2 order, the companion of ``more-photos-l2``;
* ``keep-cv3``: the reference with the class-score branch of the detect head kept whole
  (``prune --keep '/model.22/cv3.*'``): the budget is taken from the other groups.

Same images, calibration set and metrics as `accuracy.py` (benchmarks/_acc_real.py). Usage:
``python benchmarks/yolo_variants.py [VARIANT ...]`` (default: all); prints a markdown table.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import _acc_images as im
import numpy as np
import onnx
from _acc_common import md_table, outputs
from _acc_real import (
    CASES,
    CURVE_RATIOS,
    CURVE_SAMPLES,
    HEAD_FLOOR,
    TARGET,
    Fidelity,
    RealCase,
    fidelity,
    write_calibration,
)

from onnxprune.api import analyse, prune
from onnxprune.calib.source import CalibConfig
from onnxprune.measure.curves import SensitivityResult, sensitivity_curves
from onnxprune.measure.model_stats import model_stats

FINE_RATIOS = tuple(round(0.05 * i, 2) for i in range(1, 13))
KEEP_CV3 = ("/model.22/cv3.*",)  # the class-score branch of the detect head: scores are thresholded directly


@dataclasses.dataclass
class Run:
    case: RealCase
    model: onnx.ModelProto
    calibration: CalibConfig
    inputs: list[np.ndarray]
    dense: list[np.ndarray]

    def curves(self, model: onnx.ModelProto, ratios: Sequence[float] = CURVE_RATIOS) -> SensitivityResult:
        return sensitivity_curves(analyse(model, shapes=self.case.shapes), calibration=self.calibration,
                                  samples=CURVE_SAMPLES, ratios=ratios, shapes=self.case.shapes)

    def pruned(self, model: onnx.ModelProto, target: float, criterion: str = "obs", **kw: object) -> onnx.ModelProto:
        return prune(model, recipe="fast", criterion=criterion, target_macs=target, calibration=self.calibration, reconstruct=True,
                     head_floor=HEAD_FLOOR, shapes=self.case.shapes, **kw).model  # type: ignore[arg-type]

    def recalibrated(self, names: tuple[str, ...], folder: Path) -> Run:
        views = im.calibration_views(names, self.case.calib_count)
        path = folder / "more_photos.npz"
        np.savez(path, **{self.case.input: im.calib_array(views, self.case.calib_prep)})
        return dataclasses.replace(self, calibration=CalibConfig(path=path, batch=self.calibration.batch))

    def fid(self, model: onnx.ModelProto) -> Fidelity:
        return fidelity(self.case, self.dense, outputs(model, self.inputs))

    def kept(self, model: onnx.ModelProto) -> float:
        return model_stats(model, shapes=self.case.shapes).macs / model_stats(self.model, shapes=self.case.shapes).macs


def capped(curves: SensitivityResult, cap: float) -> SensitivityResult:
    """The curves without their points above ratio `cap`."""
    keep = [r for r in curves.ratios if r <= cap + 1e-9]
    return dataclasses.replace(curves, ratios=keep, curves=[
        dataclasses.replace(g, points=[p for p in g.points if p.ratio <= cap + 1e-9]) for g in curves.curves])


def in_steps(run: Run, curves: SensitivityResult, steps: int) -> onnx.ModelProto:
    """`onnxprune prune --steps K --sensitivity S.json`: later steps re-measure the curves."""
    out = prune(run.model, recipe="fast", steps=steps, target_macs=TARGET, sensitivity=curves, criterion="obs",
                calibration=run.calibration, reconstruct=True, head_floor=HEAD_FLOOR, shapes=run.case.shapes)
    return out.model


def more_photos(run: Run, criterion: str) -> onnx.ModelProto:
    with tempfile.TemporaryDirectory() as tmp:
        other = run.recalibrated(run.case.calib_names + im.OTHER_PHOTOS, Path(tmp))
        return other.pruned(run.model, TARGET, criterion, sensitivity=other.curves(run.model))


VARIANTS = ("reference", "cap-0.5", "cap-0.4", "fine-grid", "two-steps", "three-steps", "obs-global", "more-photos",
            "reference-l2", "more-photos-l2", "keep-cv3")


def variants(run: Run, curves: SensitivityResult) -> dict[str, Callable[[], onnx.ModelProto]]:
    return {
        "reference": lambda: run.pruned(run.model, TARGET, sensitivity=curves),
        "cap-0.5": lambda: run.pruned(run.model, TARGET, sensitivity=capped(curves, 0.5)),
        "cap-0.4": lambda: run.pruned(run.model, TARGET, sensitivity=capped(curves, 0.4)),
        "fine-grid": lambda: run.pruned(run.model, TARGET, sensitivity=run.curves(run.model, FINE_RATIOS)),
        "two-steps": lambda: in_steps(run, curves, 2),
        "three-steps": lambda: in_steps(run, curves, 3),
        "obs-global": lambda: run.pruned(run.model, TARGET, allocation="global"),
        "more-photos": lambda: more_photos(run, "obs"),
        "reference-l2": lambda: run.pruned(run.model, TARGET, "l2", sensitivity=curves),
        "more-photos-l2": lambda: more_photos(run, "l2"),
        "keep-cv3": lambda: run.pruned(run.model, TARGET, sensitivity=curves, keep=KEEP_CV3),
    }


def main(names: Sequence[str]) -> str:
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:  # before the minutes of curves, not after
        raise SystemExit(f"unknown variant(s) {unknown}; choose from: {', '.join(VARIANTS)}")
    case = CASES[0]
    model = onnx.load(str(case.path))
    inputs = im.eval_inputs(case.eval_names, case.prep, case.views)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        run = Run(case, model, write_calibration(case, Path(tmp), case.calib_count), inputs, outputs(model, inputs))
        start = time.perf_counter()
        curves = run.curves(model)
        print(f"curves: {time.perf_counter() - start:.0f} s", flush=True)
        table = variants(run, curves)
        assert tuple(table) == VARIANTS
        for name in names or list(table):
            start = time.perf_counter()
            pruned = table[name]()
            fid = run.fid(pruned)
            secs = time.perf_counter() - start
            row = [name, f"{run.kept(pruned):.3f}", f"{fid.cosine:.4f}", f"{fid.score:.3f}", fid.detail, f"{secs:.0f}"]
            print(" | ".join(row), flush=True)
            rows.append(row)
    return md_table(["variant", "MACs kept", "cosine", "box F1", "boxes, class-score drift", "s"], rows)


if __name__ == "__main__":
    print(main(sys.argv[1:]))
