"""Distillation as recovery (`prune --distill`, onnxprune/recovery/distill.py), against the re-fit alone.

* ``digits``: the trained digits ResNet (models/digits) at 0.5x / 0.25x / 0.15x MACs (l1, all 256
  calibration images; the held-out quarter picks the kept weights): test accuracy on the 360 test
  images with the least-squares re-fit, with the re-fit then distillation, and with distillation
  alone (no re-fit).
* ``yolo``: YOLOv8n (models/real) at 0.7x MACs, obs order, one global ranking (the ``obs-global``
  row of yolo_variants.py: no curves, so minutes fewer), re-fit with the score heads weighted; box
  F1 against the dense model on the accuracy.py images, before and after distillation.

Each pruned model is distilled once from the same pruned, re-fitted model (`recovery.distill.distill`
on the prune result), so the two rows differ only by distillation. Needs torch (the [distill] extra).
Usage: ``python benchmarks/distill.py [digits] [yolo] [--steps N] [--seconds S]``; prints markdown tables.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import _acc_images as im
import numpy as np
import onnx
from _acc_common import md_table, outputs
from _acc_real import CASES, HEAD_FLOOR, TARGET, fidelity, write_calibration

from onnxprune.api import PruneResult, prune
from onnxprune.calib.source import CalibConfig, CalibrationLike
from onnxprune.io import runtime
from onnxprune.recovery.distill import DistillOptions, DistillResult, distill

DIGITS = Path(__file__).resolve().parents[1] / "models" / "digits"
DIGITS_FRACTIONS = (0.5, 0.25, 0.15)


def distilled(res: PruneResult, calibration: CalibrationLike, options: DistillOptions) -> DistillResult:
    return distill(res.model, res.dense, calibration, dg=res.dg, removed_roots=res.plan.removed_roots(res.dg),
                   options=options)


def digits_accuracy(model: onnx.ModelProto) -> float:
    d = np.load(DIGITS / "test.npz")
    return float((runtime.run(model, {"input": d["x"]})["logits"].argmax(1) == d["y"]).mean())


def digits(steps: int, seconds: float) -> str:
    model = onnx.load(str(DIGITS / "digits_resnet.onnx"))
    cal = CalibConfig(path=DIGITS / "calib.npz", samples=256, batch=128)
    rows = [["dense", "1.00", "", f"{digits_accuracy(model):.2%}", "", ""]]
    for frac in DIGITS_FRACTIONS:
        for refit, lr in ((True, 1e-4), (False, 1e-3)):
            res = prune(model, target_macs=frac, criterion="l1", calibration=cal, reconstruct=refit)
            d = distilled(res, cal, DistillOptions(steps=steps, time_budget=seconds, lr=lr, batch=16))
            how = "re-fit" if refit else "none"
            rows.append([how, f"{frac:.2f}", "", f"{digits_accuracy(res.model):.2%}", "", ""])
            rows.append([f"{how} + distill (lr {lr:g})", f"{frac:.2f}", f"{d.steps} (kept {d.best_step})",
                         f"{digits_accuracy(d.model):.2%}", f"{d.loss_before:.4g} -> {d.loss_after:.4g}",
                         f"{d.seconds:.0f}"])
            print(" | ".join(rows[-1]), flush=True)
    return md_table(["recovery", "MACs", "distill steps", "test accuracy", "held-out output loss", "distill s"],
                    rows)


def yolo(steps: int, seconds: float) -> str:
    case = CASES[0]
    model = onnx.load(str(case.path))
    inputs = im.eval_inputs(case.eval_names, case.prep, case.views)
    dense = outputs(model, inputs)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cal = write_calibration(case, Path(tmp), case.calib_count)
        start = time.perf_counter()
        res = prune(model, criterion="obs", allocation="global", target_macs=TARGET, calibration=cal,
                    reconstruct=True, head_floor=HEAD_FLOOR, shapes=case.shapes)
        fid = fidelity(case, dense, outputs(res.model, inputs))
        rows.append(["obs-global, re-fit", "", f"{fid.cosine:.4f}", f"{fid.score:.3f}", fid.detail,
                     f"{time.perf_counter() - start:.0f}"])
        print(" | ".join(rows[-1]), flush=True)
        for lr in (1e-4, 1e-5):
            d = distilled(res, cal, DistillOptions(steps=steps, time_budget=seconds, lr=lr, batch=8))
            fid = fidelity(case, dense, outputs(d.model, inputs))
            rows.append([f"+ distill (lr {lr:g})", f"{d.steps} (kept {d.best_step}; {d.stopped})",
                         f"{fid.cosine:.4f}", f"{fid.score:.3f}", fid.detail, f"{d.seconds:.0f}"])
            print(" | ".join(rows[-1]), flush=True)
    return md_table(["YOLOv8n 0.7x MACs", "distill steps", "cosine", "box F1", "boxes, class-score drift", "s"],
                    rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("which", nargs="*", choices=["digits", "yolo"], default=["digits", "yolo"])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seconds", type=float, default=300.0)
    args = ap.parse_args()
    for which in args.which:
        print((digits if which == "digits" else yolo)(args.steps, args.seconds), flush=True)


if __name__ == "__main__":
    main()
