"""Accuracy after pruning: the digits model at MACs targets, sparsity, Torch-Pruning and onnxsim side
by side, output fidelity of YOLOv8n / PP-OCRv4 det on real photographs, and calibration timing.

    python benchmarks/accuracy.py            # full run (~15 min on 2 cores), writes benchmarks/README.md
    python benchmarks/accuracy.py --quick    # digits only, a few cells, no torch (smoke test)

Needs the `bench` extra for the Torch-Pruning column and the real photographs
(torch, torch-pruning, scikit-image); without it those cells say so. Which onnxprune features are
used (calibration=, criterion=, allocation=, target_macs=, reconstruct=) is read from
`inspect.signature(onnxprune.api.prune)` at run time; see benchmarks/_acc_prune.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _acc_common import blas_threads, load_digits, md_table, write_block  # noqa: E402
from _acc_digits import TARGETS, sparsity_table, structured_table, timing_row  # noqa: E402
from _acc_prune import prune_params  # noqa: E402

from onnxprune.scoring.catalog import criteria  # noqa: E402

SECTIONS = ("structured", "global", "torch", "onnxsim", "sparsity", "real", "timing")
COMMAND = "/work/benchvenv/bin/python benchmarks/accuracy.py"
VENV = ("python3 -m venv /work/benchvenv && /work/benchvenv/bin/pip install -e '.[dev]' "
        "torch==2.13.0 torch-pruning scikit-image")


def features_line() -> str:
    wanted = ("calibration", "criterion", "allocation", "target_macs", "reconstruct")
    params = prune_params()
    have = ", ".join(f"`{p}=` {'yes' if p in params else '**no**'}" for p in wanted)
    return f"onnxprune at run time: `prune()` {have}; criteria registered: {', '.join(criteria())}."


def digits_section(quick: bool, skip: set[str]) -> str:
    d = load_digits()
    parts = ["### Digits model: structured pruning at MACs targets"]
    table = (structured_table(d, quick=quick, global_rows="global" not in skip) if "structured" not in skip
             else "(structured rows skipped)")
    if "torch" not in skip and not quick:
        from _acc_torch import torch_rows

        print("Torch-Pruning", flush=True)
        table += "\n" + "\n".join("| " + " | ".join(r) + " |" for r in torch_rows(d, TARGETS))
    parts += [table, DIGITS_NOTES]
    if "onnxsim" not in skip and not quick:
        from _acc_onnxsim import onnxsim_rows

        print("onnxsim", flush=True)
        head, rows = onnxsim_rows(d)
        parts += ["### Digits model: onnxsim 0.8.1's structured pruners", md_table(head, rows), ONNXSIM_NOTES]
    if "sparsity" not in skip:
        print("sparsity", flush=True)
        parts += ["### Digits model: sparsity (weights zeroed, shapes kept)", sparsity_table(d, quick=quick)]
    if "timing" not in skip and not quick:
        print("timing", flush=True)
        row = timing_row(d)
        parts += ["### Calibration + reconstruction time", md_table(["what", "seconds (time.perf_counter)", "goal"],
                                                                    [row]) + "\n\n" + TIMING_NOTES]
    return "\n\n".join(parts)


def real_section() -> str:
    try:
        import skimage  # noqa: F401
    except ImportError:
        return "### Real models at 0.7x MACs\n\nn/a (pip install 'onnxprune[bench]'): needs scikit-image."
    from _acc_real import real_table

    print("real models", flush=True)
    return "\n\n".join(["### Real models at 0.7x MACs: fidelity to the dense model on photographs",
                        real_table(), REAL_NOTES])


DIGITS_NOTES = """\
Cells: test accuracy @ MACs actually kept (onnxprune.measure.model_stats for onnxprune, `tp.utils.count_ops_and_params`
for Torch-Pruning, whose count also includes BatchNorm and pooling: +0.7 % on the dense model). Without `target_macs=` the uniform
ratio is bisected to the closest achievable MACs (channel granularity: within 0.03 of the target where
possible). Calibration: 128 samples of `models/digits/calib.npz`. `bn-scale` on this ONNX file equals
`l2`: the export folds BatchNorm into the convs, so there are no scales to read (Torch-Pruning's
BNScaleImportance sees the unfolded model). Global-allocation rows leave out l1 and bn-scale (time).
No fine-tuning anywhere."""

ONNXSIM_NOTES = """\
Cells: test accuracy @ MACs kept. `sparsity=s` is onnxsim's per-chain fraction of output channels;
onnxsim only prunes chains it can match (single producer -> consumer), so MACs kept vary."""

TIMING_NOTES = """\
One `prune(..., target_macs=0.5, calibration=CalibConfig(calib.npz, samples=128, batch=64),
reconstruct=True)` call on the digits model (scoring, plan search, apply, one ORT pass per wave of
layers, ridge fits, output check), with numpy's BLAS on all cores (its default) and on one thread
(as in the tables above: on a shared machine BLAS threads fight ONNX Runtime's and other processes');
"prune alone" is the same call with `reconstruct=False`. The load average of the shared machine is in the first line."""

REAL_NOTES = """\
Images: scikit-image's bundled photographs. YOLO evaluation: astronaut, chelsea, coffee, rocket,
motorcycle_left, colorwheel and logo, each with its mirror image, its four corner crops and its centre
crop at 60 % of each side (49 inputs); RGB/255 letterboxed to 320x320; boxes decoded from
[1, 4+18, 2100] at confidence 0.25, class-wise NMS IoU 0.45, pruned boxes match dense boxes at
IoU >= 0.5 with the same class, F1 from the matches summed over all images. The detector is NudeNet's
(faces and body parts, not COCO), so photographs give few boxes; their count is in the notes. OCR
evaluation: text, page, logo, rocket, coffee, astronaut, chelsea and motorcycle_left, each with its
mirror image (16 inputs), BGR (rapidocr converts to BGR, as PaddleOCR does) / 255, ImageNet mean/std
as asked (rapidocr-onnxruntime 1.4.4's own config.yaml uses mean = std = 0.5), resized like
rapidocr's DetPreProcess (shorter side up to 736, H and W rounded to multiples of 32); mask IoU of
the probability maps binarised at 0.3, intersections and unions summed over the images. Cosine: of
all raw outputs concatenated. Calibration (random crops/flips of other images, never of an
evaluation image, `CalibConfig(batch=8)`; 64 for YOLO, 24 for OCR): YOLO from hubble_deep_field, immunohistochemistry,
retina, camera, clock, coins and mosaics of the LFW faces; OCR from camera, clock, coins,
hubble_deep_field, immunohistochemistry, retina, colorwheel and LFW mosaics at 448x448 (no text: every
skimage image with text is an evaluation image). "best calibrated": every calibrated criterion but
sensitivity (hundreds of masked passes per model, beyond the time budget) is scored at 0.7x MACs
without reconstruction, the best (box F1 / mask IoU, ties by cosine) is then re-fitted. "sensitivity
allocation": `sensitivity_curves` (output error per channel, `channel_error`, at ratios 0.1-0.6, on 16 of
the calibration samples) split the 0.7x MAC budget into per-group ratios (`prune(sensitivity=...)`),
then reconstruction; measured on YOLOv8n, a grid up to 0.9 strips a few groups almost bare (F1 0.435).
"obs + sensitivity allocation": the same curves and per-group ratios, the channels inside each group
chosen by `obs` (greedy structured OBS: the least-squares re-fit cost of every consumer layer, 16
rounds; onnxprune/scoring/obs.py). "in 2 steps": that row through `prune_in_steps` (prune --steps 2
--sensitivity): 0.837x then 0.7x, the second step's curves re-measured on the first step's re-fitted
model, each step re-fitted to its own input model. One box moves the YOLO F1 by about 0.03; the
mean class-score change is the steadier companion. "dense model, inputs + 1 grey level of noise":
no pruning; the dense model's outputs on its inputs plus Gaussian noise of 1/255 of the pixel range
(in each model's input units), against its outputs on the clean inputs, mean of 10 draws: how far an
imperceptible change of the input moves each metric, the resolution of every other row. More YOLO variants (caps, grids, more photos,
three steps): benchmarks/yolo_variants.py, the table below this one. MACs at
1x3x320x320 (YOLO) and 1x3x640x640 (OCR). Reconstruction re-fits ConvTranspose layers since
2026-12-02 (PP-OCR's two upsamplers were kept as pruned before: uniform l2 + reconstruction had mask
IoU 0.467, sensitivity allocation 0.865)."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="digits only, l2 and wanda at 0.5x MACs, no torch")
    ap.add_argument("--skip", nargs="*", default=[], choices=SECTIONS)
    ap.add_argument("--no-write", action="store_true", help="print only, leave benchmarks/README.md alone")
    args = ap.parse_args()
    skip = set(args.skip)
    start = time.perf_counter()
    print(features_line(), flush=True)
    with blas_threads(1):
        parts = [features_line(), digits_section(args.quick, skip)]
        if "real" not in skip and not args.quick:
            parts.append(real_section())
    parts.append(f"Whole run: {time.perf_counter() - start:.0f} s.")
    text = "\n\n".join(parts)
    print(text)
    if not args.no_write and not args.quick and not skip:
        write_block(text, f"{VENV}\n    {COMMAND}")


if __name__ == "__main__":
    main()
