"""Distillation as recovery (`prune --distill`, onnxprune/recovery/distill.py), against the re-fit alone.

* ``digits``: the trained digits ResNet (models/digits) at 0.5x / 0.25x / 0.15x MACs (l1, all 256
  calibration images): test accuracy on the 360 test images and the logits' relative error to the
  dense model there, with the least-squares re-fit (all 256 images), with the re-fit on 3/4 of them
  then distillation (the product's `--distill`: the last quarter picks the kept weights), and with
  distillation alone (no re-fit).
* ``yolo``: YOLOv8n (models/real) at 0.7x MACs, obs order, one global ranking (the ``obs-global``
  row of yolo_variants.py: no curves, so minutes fewer), re-fit with the score heads weighted; box
  F1 against the dense model on the accuracy.py images, without and with `--distill`.

Needs torch (the [distill] extra). Usage:
``python benchmarks/distill.py [digits] [yolo] [--steps N] [--seconds S] [--yolo-runs refit,1e-4,1e-3]``;
prints markdown tables (each YOLOv8n row is a whole prune: about 10 minutes on a shared 2-core host).
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

from onnxprune.api import prune
from onnxprune.calib.source import CalibConfig
from onnxprune.io import runtime
from onnxprune.recovery.distill import DistillOptions, DistillResult

DIGITS = Path(__file__).resolve().parents[1] / "models" / "digits"
DIGITS_FRACTIONS = (0.5, 0.25, 0.15)


def digits_test(model: onnx.ModelProto, dense: onnx.ModelProto) -> tuple[float, float]:
    """(test accuracy, relative error of the logits to the dense model's) on the 360 test images."""
    d = np.load(DIGITS / "test.npz")
    got, want = (runtime.run(m, {"input": d["x"]})["logits"] for m in (model, dense))
    return float((got.argmax(1) == d["y"]).mean()), float(np.linalg.norm(got - want) / np.linalg.norm(want))


def steps_note(d: DistillResult | None) -> str:
    if d is None:
        return ""
    return f"{d.steps} (kept {d.best_step}{'; re-fit again on all' if d.refit_all else ''})"


def digits(steps: int, seconds: float) -> str:
    model = onnx.load(str(DIGITS / "digits_resnet.onnx"))
    cal = CalibConfig(path=DIGITS / "calib.npz", samples=256, batch=128)
    rows = [["dense", "1.00", "", "100.00%", "0", ""]]
    for frac in DIGITS_FRACTIONS:
        for how, refit, lr in (("re-fit", True, None), ("re-fit on 3/4 + distill", True, 1e-4),
                               ("re-fit on 3/4 + distill", True, 1e-3), ("distill alone", False, 1e-3)):
            opts = None if lr is None else DistillOptions(steps=steps, time_budget=seconds, lr=lr, batch=16)
            res = prune(model, recipe="fast", target_macs=frac, criterion="l1", calibration=cal, reconstruct=refit, distill=opts)
            acc, err = digits_test(res.model, model)
            d = res.distillation
            rows.append([how if lr is None else f"{how} (lr {lr:g})", f"{frac:.2f}", steps_note(d), f"{acc:.2%}",
                         f"{err:.4f}", "" if d is None else f"{d.seconds:.0f}"])
            print(" | ".join(rows[-1]), flush=True)
    return md_table(["recovery", "MACs", "distill steps", "test accuracy", "test logits rel. error", "distill s"],
                    rows)


def yolo(steps: int, seconds: float, runs: tuple[float | None, ...] = (None, 1e-4, 1e-3)) -> str:
    case = CASES[0]
    model = onnx.load(str(case.path))
    inputs = im.eval_inputs(case.eval_names, case.prep, case.views)
    dense = outputs(model, inputs)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cal = write_calibration(case, Path(tmp), case.calib_count)
        for lr in runs:  # None: the re-fit alone
            start = time.perf_counter()
            opts = None if lr is None else DistillOptions(steps=steps, time_budget=seconds, lr=lr, batch=8)
            res = prune(model, recipe="fast", criterion="obs", allocation="global", target_macs=TARGET, calibration=cal,
                        reconstruct=True, head_floor=HEAD_FLOOR, shapes=case.shapes, distill=opts)
            fid = fidelity(case, dense, outputs(res.model, inputs))
            d = res.distillation
            rows.append(["obs-global, re-fit" if d is None else f"re-fit on 3/4 + distill (lr {lr:g})",
                         "" if d is None else f"{steps_note(d)}; {d.stopped}", f"{fid.cosine:.4f}",
                         f"{fid.score:.3f}", fid.detail, f"{time.perf_counter() - start:.0f}"])
            print(" | ".join(rows[-1]), flush=True)
    return md_table(["YOLOv8n 0.7x MACs", "distill steps", "cosine", "box F1", "boxes, class-score drift", "s"],
                    rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("which", nargs="*", choices=["digits", "yolo"], default=["digits", "yolo"])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--yolo-runs", default="refit,1e-4,1e-3",
                    help="YOLOv8n rows: 'refit' (the re-fit alone) and distillation learning rates")
    args = ap.parse_args()
    runs = tuple(None if r == "refit" else float(r) for r in args.yolo_runs.split(","))
    for which in args.which:
        print(digits(args.steps, args.seconds) if which == "digits" else yolo(args.steps, args.seconds, runs), flush=True)


if __name__ == "__main__":
    main()
