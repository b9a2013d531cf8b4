"""What bounds issue 24's targets at 0.7x MACs: the metric's own noise, the calibration data, or the method.

    python benchmarks/bounds.py                        # every part; each writes its own block of benchmarks/README.md
    python benchmarks/bounds.py --parts noise --no-write

Parts (the evaluation sets, calibration sets and CLI command of benchmarks/recipes.py):
- noise: the dense model against itself with Gaussian noise of 0.5, 1 and 2 grey levels added to its
  inputs (5 draws each; on rec only inside the text line, not on its zero padding): how far the task metric
  moves when the outputs move as much as a grey level of input noise moves them.
- rec-calib: PP-OCRv4 rec pruned by the default recipe with 64, 128 and 256 rendered calibration lines
  (the evaluation lines stay the same 240), and by the same with the re-fit's former fixed damping
  (`--refit-damp 0.001`).
- yolo-domain: YOLOv8n with its 10 evaluation photographs split in two halves; each half is evaluated
  after calibrating on the other half's crops (in the evaluation's domain, disjoint photographs) and
  after calibrating on the grid's usual images.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import recipes as R  # noqa: E402
from _acc_common import README, REAL, commit, environment, md_table, outputs  # noqa: E402
from _readme import replace_block  # noqa: E402

PARTS = ("noise", "rec-calib", "yolo-domain")
SIGMAS = (0.5, 1.0, 2.0)
DRAWS = 5
REC_CALIB_COUNTS = (64, 128, 256)
BUDGET = 0.7


def _noisy(x: np.ndarray, sigma: float, rng: np.random.Generator, *, unit: float, padded: bool) -> np.ndarray:
    noise = rng.normal(0.0, sigma * unit, x.shape).astype(np.float32)
    return x + (noise * (x != 0) if padded else noise)


def _noisy_rec(clean: Callable[[np.ndarray, tuple[int, int]], np.ndarray], sigma: float,
               rng: np.random.Generator) -> Callable[[np.ndarray, tuple[int, int]], np.ndarray]:
    def noisy_input(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        # rec inputs are (x / 255 - 0.5) / 0.5: a grey level is 2/255; the right-hand padding stays 0
        return _noisy(clean(img, hw), sigma, rng, unit=2 / 255, padded=True)
    return noisy_input


def noise_rows() -> list[list[str]]:
    import _acc_images as im
    import _acc_text as tx
    from _acc_metrics import box_agreement

    rows: list[list[str]] = []
    yolo = onnx.load(str(REAL / "yolov8n_320n.onnx"))
    inputs = [im.yolo_input(v) for v in im.wide_eval_views(im.YOLO_EVAL_WIDE, R.YOLO_AUGMENTED)]
    dense = outputs(yolo, inputs)
    for sigma in SIGMAS:
        f1 = [box_agreement(dense, outputs(yolo, [_noisy(x, sigma, np.random.default_rng(d), unit=1 / 255,
                                                          padded=False) for x in inputs])).f1 for d in range(DRAWS)]
        rows.append(["YOLOv8n, box F1 vs dense (106 boxes)", f"{sigma:g}", f"{np.mean(f1):.3f}",
                     f"{min(f1):.3f}–{max(f1):.3f}"])
    lines = tx.text_set(R.REC_EVAL, R.REC_CALIB)
    rec = onnx.load(str(REAL / "ppocrv4_rec.onnx"))
    chars, truth = tx.classes(rec), [line.text for line in lines.eval]
    clean = tx.rec_input
    for sigma in SIGMAS:
        exact = []
        for d in range(DRAWS):
            tx.rec_input = _noisy_rec(clean, sigma, np.random.default_rng(d))  # type: ignore[assignment]
            try:
                exact.append(tx.ocr_score(truth, tx.read_lines(rec, lines.eval, chars)).exact)
            finally:
                tx.rec_input = clean
        rows.append(["PP-OCRv4 rec, exact lines vs ground truth (240 lines)", f"{sigma:g}",
                     f"{100 * np.mean(exact):.1f} %", f"{100 * min(exact):.1f}–{100 * max(exact):.1f} %"])
    return rows


def _prune(model: Path, calib: Path, shapes: str, out: Path, extra: Sequence[str] = ()) -> float:
    cmd = [*R.CLI, "prune", str(model), "-o", str(out), "--target-macs", f"{BUDGET:g}", "--calib", str(calib),
           "--shapes", shapes, "--no-progress", *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"prune failed: {(proc.stderr.strip().splitlines() or ['no output'])[-1]}")
    return time.perf_counter() - start


def rec_calib_rows(tmp: Path) -> list[list[str]]:
    case = next(c for c in R.CASES if c.key == "rec")
    rows: list[list[str]] = []
    for count in REC_CALIB_COUNTS:
        R.REC_CALIB = count
        setup = case.setup(tmp / f"rec{count}")
        for recipe in ("default", "fixed-damp"):
            out = tmp / f"rec{count}.onnx"
            secs = _prune(case.path, setup.calib, case.shapes, out, R.RECIPES[recipe])
            rows.append([f"{count}", recipe, setup.score(onnx.load(str(out))).cell, f"{secs:.0f}",
                         f"{os.getloadavg()[0]:.1f}"])
    return rows


def yolo_domain_rows(tmp: Path) -> list[list[str]]:
    import _acc_images as im
    from _acc_metrics import box_agreement

    path = REAL / "yolov8n_320n.onnx"
    dense_model = onnx.load(str(path))
    photos = im.YOLO_EVAL_WIDE
    halves = (photos[0::2], photos[1::2])
    rows: list[list[str]] = []
    for k, (own, other) in enumerate(((halves[1], halves[0]), (halves[0], halves[1]))):
        inputs = [im.yolo_input(v) for v in im.wide_eval_views(own, R.YOLO_AUGMENTED)]
        dense = outputs(dense_model, inputs)
        for label, names in (("the grid's usual images", im.YOLO_CALIB), ("the other half's photographs", other)):
            folder = R._npy_folder(tmp / f"yolo{k}_{len(rows)}",
                                   [im.yolo_input(v) for v in im.calibration_views(names, R.CALIB_COUNT)])
            out = tmp / f"yolo{k}.onnx"
            secs = _prune(path, folder, "images:1x3x320x320", out)
            a = box_agreement(dense, outputs(onnx.load(str(out)), inputs))
            rows.append([", ".join(own), label, f"{a.f1:.3f} ({a.matched} of {a.dense} dense / {a.pruned} pruned boxes)",
                         f"{secs:.0f}"])
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default=",".join(PARTS), help="comma-separated: " + ",".join(PARTS))
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    if not parts or any(p not in PARTS for p in parts):
        ap.error(f"choose parts from {', '.join(PARTS)}")
    command = "python benchmarks/bounds.py " + " ".join(argv if argv is not None else sys.argv[1:])
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        makers: dict[str, tuple[str, Sequence[str], Callable[[], list[list[str]]]]] = {
            "noise": ("The dense model against itself with input noise (grey levels of the 0–255 range)",
                      ("model, metric", "noise σ", f"mean of {DRAWS} draws", "range"), noise_rows),
            "rec-calib": (f"PP-OCRv4 rec at {BUDGET:g}× MACs by number of calibration lines",
                          ("calibration lines", "recipe", "vs ground truth", "time to prune s", "load 1-min"),
                          lambda: rec_calib_rows(tmp)),
            "yolo-domain": (f"YOLOv8n at {BUDGET:g}× MACs, default recipe, by calibration domain",
                            ("evaluated on", "calibrated on", "box F1 vs dense", "time to prune s"),
                            lambda: yolo_domain_rows(tmp)),
        }
        for part in parts:
            title, head, make = makers[part]
            table = md_table(head, make())
            print(f"{title}\n{table}\n", flush=True)
            if not args.no_write:
                replace_block(README, f"<!-- bounds-{part}:begin -->", f"<!-- bounds-{part}:end -->",
                              f"{environment()}, at commit {commit()}, with\n\n    {command}\n\n{table}",
                              f"{title} (`benchmarks/bounds.py`)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
