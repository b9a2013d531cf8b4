"""Task-aware fidelity (issue 24 part 2): does judging the curves, and weighting the re-fit, by what the
task reads keep the task's answer better than the per-channel output error?

For each real model at 0.7x MACs: one set of sensitivity curves (criterion l2, ratios 0.1-0.6, 16
calibration samples; every error is recorded in the same pass) allocates the budget by `channel_error`
(the default) or by `auto` (the error each output's kind calls for, `onnxprune.measure.output_kinds`);
channels inside each group by obs; re-fitted unweighted or with the final Sigmoid/Softmax rows
weighted (prune(head_floor=0.01), `onnxprune.recovery.heads`). Calibration and evaluation data are
disjoint (benchmarks/_acc_images.py).

Task metrics against the dense model: YOLOv8n box F1, PP-OCRv4 det mask IoU at 0.3 (_acc_metrics.py);
PP-OCRv4 rec on 64 text-line-shaped strips of the evaluation photographs (`line_views`): exact-line
agreement of the greedy CTC decode (blank 0, repeats collapsed) and the character error rate against
the dense decode (edit distance / dense characters, summed over the lines; above 1 when the pruned
model reads characters where the dense one reads none).

    .venv/bin/python benchmarks/task_fidelity.py [--models rec,yolo,det] [--rows channel_error:-,auto:-,...]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _acc_images as im
import numpy as np
import onnx
from _acc_common import REAL, md_table, outputs
from _acc_metrics import pooled_cosine
from _acc_real import (
    CASES,
    CURVE_RATIOS,
    CURVE_SAMPLES,
    HEAD_FLOOR,
    TARGET,
    RealCase,
    fidelity,
    write_calibration,
)
from _acc_text import edit_distance

from onnxprune.api import analyse, prune
from onnxprune.calib.source import CalibConfig
from onnxprune.measure.curves import SensitivityResult, sensitivity_curves
from onnxprune.measure.model_stats import model_stats

CRITERION = "obs"
REC_CALIB = 64
REC_EVAL = 64
REC_SHAPES: dict[str, tuple[int, ...]] = {"x": (1, 3, 48, 320)}
# (curves error, head_floor) per row: the default allocation, the task-aware one, each re-fitted plain and weighted.
UNIFORM = "uniform"  # a row's "error" that allocates uniformly, without curves
ROWS: tuple[tuple[str, float | None], ...] = (("channel_error", None), ("auto", None),
                                              ("channel_error", HEAD_FLOOR), ("auto", HEAD_FLOOR))


def ctc_greedy(probs: np.ndarray) -> list[tuple[int, ...]]:
    """Greedy CTC decode of [N, T, C]: argmax per position, repeats collapsed, blank (0) dropped."""
    out = []
    for row in np.argmax(probs, axis=-1):
        keep = np.concatenate([[True], row[1:] != row[:-1]]) & (row != 0)
        out.append(tuple(int(c) for c in row[keep]))
    return out


def text_agreement(dense: Sequence[np.ndarray], pruned: Sequence[np.ndarray]) -> tuple[float, float, str]:
    """Exact-line agreement, character error rate against the dense decode, and a note, of greedy decodes."""
    da = [t for p in dense for t in ctc_greedy(p)]
    pa = [t for p in pruned for t in ctc_greedy(p)]
    exact = float(np.mean([a == b for a, b in zip(da, pa, strict=True)]))
    chars = sum(len(a) for a in da)
    edits = sum(edit_distance(a, b) for a, b in zip(da, pa, strict=True))
    pos = float(np.mean([np.mean(np.argmax(a, -1) == np.argmax(b, -1)) for a, b in zip(dense, pruned, strict=True)]))
    return exact, edits / max(chars, 1), f"{len(da)} lines, {chars} dense characters, positions agree {pos:.3f}"


def rec_case() -> tuple[Path, dict[str, tuple[int, ...]], list[np.ndarray], CalibConfig, Path]:
    folder = Path(tempfile.mkdtemp(prefix="taskfid_"))
    calib = folder / "x_calib.npz"
    np.savez(calib, x=np.concatenate([im.rec_input(v) for v in im.line_views(im.OCR_CALIB, REC_CALIB)]))
    inputs = [im.rec_input(v) for v in im.line_views(im.OCR_EVAL, REC_EVAL, seed=1)]
    return REAL / "ppocrv4_rec.onnx", REC_SHAPES, inputs, CalibConfig(path=calib, batch=8), folder


def task_score(kind: str, case: RealCase | None, dense: Sequence[np.ndarray],
               pruned: Sequence[np.ndarray]) -> tuple[str, str]:
    if case is None:
        exact, cer, note = text_agreement(dense, pruned)
        return f"exact lines {exact:.3f}, CER {cer:.3f}", note
    fid = fidelity(case, dense, pruned)
    return f"{'box F1' if kind == 'yolo' else 'mask IoU'} {fid.score:.3f}", fid.detail


def run_model(kind: str, rows: Sequence[tuple[str, float | None]]) -> list[list[str]]:
    case = next((c for c in CASES if c.kind == kind), None) if kind != "rec" else None
    with tempfile.TemporaryDirectory() as tmp:
        if case is None:
            path, shapes, inputs, calibration, _ = rec_case()
            name = "PP-OCRv4 rec"
        else:
            path, shapes, name = case.path, dict(case.shapes), case.name
            inputs = im.eval_inputs(case.eval_names, case.prep, case.views)
            calibration = write_calibration(case, Path(tmp), case.calib_count)
        model = onnx.load(str(path))
        dense = outputs(model, inputs)
        dense_macs = model_stats(model, shapes=shapes).macs
        dg = analyse(model, shapes=shapes)
        start = time.perf_counter()
        curves: SensitivityResult | None = None
        if any(error != UNIFORM for error, _ in rows):
            curves = sensitivity_curves(dg, calibration=calibration, samples=CURVE_SAMPLES, ratios=CURVE_RATIOS,
                                        shapes=shapes)
        secs = time.perf_counter() - start
        kinds = "; ".join(f"{o['kind']} ({o['reason']})" for o in curves.outputs) if curves else "-"
        print(f"{name}: curves {secs:.0f} s, outputs: {kinds}", flush=True)
        out = []
        for error, floor in rows:
            start = time.perf_counter()
            alloc: dict[str, Any] = {} if error == UNIFORM else {"sensitivity": curves, "sensitivity_error": error}
            res = prune(dg.model, recipe="fast", dg=dg, criterion=CRITERION, shapes=shapes, calibration=calibration,
                        reconstruct=True, head_floor=floor, target_macs=TARGET, **alloc)
            secs_row = time.perf_counter() - start
            got = outputs(res.model, inputs)
            kept = model_stats(res.model, shapes=shapes).macs / dense_macs
            score, note = task_score(kind, case, dense, got)
            weighting = "none" if floor is None else f"head_floor={floor:g}"
            line = [name, error, weighting, f"{kept:.2f}", f"{pooled_cosine(dense, got):.4f}", score,
                    f"{note}{'; ' if note else ''}{secs_row:.0f} s"]
            print("  " + " | ".join(line), flush=True)
            out.append(line)
        if curves is not None:
            out[0][-1] += f"; curves {secs:.0f} s; outputs: {kinds}"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="rec,yolo,det")
    ap.add_argument("--rows", default=",".join(f"{e}:{'-' if f is None else f}" for e, f in ROWS),
                    help="error:head_floor pairs ('-': no weighting; error 'uniform': uniform ratios, no curves)")
    args = ap.parse_args()
    rows = [(e, None if f == "-" else float(f)) for e, f in (r.split(":") for r in args.rows.split(","))]
    table: list[list[str]] = []
    for kind in args.models.split(","):
        table += run_model(kind, rows)
    print(f"\nload average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {sys.argv[1:]}")
    print(md_table(["model", "curves error", "re-fit weighting", "MACs kept", "cosine", "task metric", "notes"],
                   table))


if __name__ == "__main__":
    main()
