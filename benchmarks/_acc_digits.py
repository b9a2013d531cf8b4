"""The digits model: structured pruning at MACs targets, sparsity rows, and the calibration timing row."""

from __future__ import annotations

import inspect
import time
from collections.abc import Sequence

import onnx
from _acc_common import DIGITS_SHAPES, Digits, acc_cell, accuracy, blas_threads, md_table, pct
from _acc_prune import MAGNITUDE, StructuredPruner, calibrated_criteria, missing_features

from onnxprune.calib.source import CalibConfig
from onnxprune.measure.model_stats import MAC_OPS
from onnxprune.passes.sparsify import sparsify

TARGETS = (0.75, 0.5, 0.25, 0.15)
CALIB_SAMPLES = 128
CALIB_BATCH = 64
SPARSITY_ROWS: tuple[tuple[str, float | None, tuple[int, int] | None], ...] = (
    ("unstructured 50 %", 0.5, None), ("unstructured 70 %", 0.7, None), ("2:4", None, (2, 4)))
SPARSITY_METHODS = ("magnitude", "wanda", "sparsegpt")
# Left out of the global-allocation rows to save time: bn-scale is l2 on this BN-folded export, l1 ~ l2.
GLOBAL_SKIP = ("l1", "bn-scale")


def calib_config(d: Digits, samples: int = CALIB_SAMPLES) -> CalibConfig:
    return CalibConfig(path=d.calib_path, samples=samples, batch=CALIB_BATCH)


def structured_rows(d: Digits, pruner: StructuredPruner, crits: Sequence[str], allocations: Sequence[str],
                    targets: Sequence[float]) -> list[list[str]]:
    rows: list[list[str]] = []
    for alloc in allocations:
        for crit in crits:
            if alloc != "uniform" and crit in GLOBAL_SKIP:
                continue
            for recon in (False, True):
                cells = [crit, "yes" if recon else "no", alloc]
                for t in targets:
                    out = pruner.at_macs(t, crit, reconstruct=recon, allocation=alloc)
                    acc = accuracy(out.model, d.x, d.y) if out.model is not None else None
                    cells.append(acc_cell(acc, out.macs_kept, out.note))
                    print(f"  {crit:12s} recon={recon!s:5s} {alloc:7s} target {t}: {cells[-1]} "
                          f"[{out.how}, {out.seconds:.1f}s]", flush=True)
                rows.append(cells)
    return rows


def allocations() -> list[str]:
    """"uniform", plus "global" once prune() takes allocation=."""
    return ["uniform"] + ([] if missing_features("l2", reconstruct=False, allocation="global") else ["global"])


def structured_table(d: Digits, *, quick: bool, global_rows: bool = True) -> str:
    dense = accuracy(d.model, d.x, d.y)
    pruner = StructuredPruner(d.model, DIGITS_SHAPES, calib_config(d))
    crits = ["l2"] if quick else list(MAGNITUDE) + calibrated_criteria()
    targets = (0.5,) if quick else TARGETS
    allocs = ["uniform"] if quick or not global_rows else allocations()
    rows = structured_rows(d, pruner, crits, allocs, targets)
    head = ["criterion", "reconstruct", "allocation", *(f"MACs {t}" for t in targets)]
    return (f"Dense test accuracy: **{pct(dense)}** ({len(d.y)} images, ONNX Runtime).\n\n"
            + md_table(head, rows))


def weight_sparsity(model: onnx.ModelProto) -> float:
    """Fraction of zeros over every Conv/Gemm/MatMul weight initializer (including skipped ones)."""
    inits = {t.name: t for t in model.graph.initializer}
    zeros = total = 0
    for node in model.graph.node:
        if node.op_type in MAC_OPS and len(node.input) > 1 and node.input[1] in inits:
            w = onnx.numpy_helper.to_array(inits[node.input[1]])
            zeros, total = zeros + int((w == 0).sum()), total + w.size
    return zeros / total if total else 0.0


def refit_options() -> tuple[bool | None, ...]:
    """(False, True) once sparsify() takes refit=; (None,) before (no such column)."""
    return (False, True) if "refit" in inspect.signature(sparsify).parameters else (None,)


def sparsify_cell(d: Digits, frac: float | None, pattern: tuple[int, int] | None, method: str,
                  refit: bool | None) -> list[str]:
    extra = {} if refit is None else {"refit": refit}
    start = time.perf_counter()
    try:
        res = sparsify(d.model, sparsity=frac, pattern=pattern, method=method, calibration=calib_config(d),
                       **extra)
    except Exception as exc:  # noqa: BLE001 - a benchmark reports, it does not stop
        return [f"n/a (error: {type(exc).__name__}: {str(exc)[:60]})", "n/a", "-"]
    secs = time.perf_counter() - start
    return [pct(accuracy(res.model, d.x, d.y)), pct(weight_sparsity(res.model)), f"{secs:.1f}"]


def sparsity_rows(d: Digits, methods: Sequence[str], refits: Sequence[bool | None]) -> list[list[str]]:
    rows: list[list[str]] = []
    for label, frac, pattern in SPARSITY_ROWS:
        for method in methods:
            for refit in refits:
                flag = [] if refit is None else ["yes" if refit else "no"]
                rows.append([label, method, *flag, *sparsify_cell(d, frac, pattern, method, refit)])
                print("  " + " | ".join(rows[-1]), flush=True)
    return rows


def sparsity_table(d: Digits, *, quick: bool) -> str:
    refits = (False,) if quick and refit_options() != (None,) else refit_options()
    rows = sparsity_rows(d, ("magnitude",) if quick else SPARSITY_METHODS, refits)
    head = ["pattern", "method", *(["refit"] if refits != (None,) else []), "test accuracy",
            "weight sparsity", "seconds"]
    note = (f"Calibration: {CALIB_SAMPLES} samples of `models/digits/calib.npz`; weight sparsity is over "
            "all Conv/Gemm weights, including those sparsify leaves alone (the 1-channel stem conv).")
    return md_table(head, rows) + "\n\n" + note


def timed_reconstruction(pruner: StructuredPruner, threads: int | None) -> tuple[float, str]:
    with blas_threads(threads):
        start = time.perf_counter()
        out = pruner.at_macs(0.5, "l2", reconstruct=True)
        return time.perf_counter() - start, out.note if out.model is None else ""


def timing_row(d: Digits) -> list[str]:
    """Seconds to prune to 0.5x MACs with calibration + reconstruction on 128 samples, vs without."""
    what = f"digits, l2 @0.5 MACs, calibrate + reconstruct, {CALIB_SAMPLES} samples"
    why = missing_features("l2", reconstruct=True, allocation="uniform")
    if why:
        return [what, "n/a (" + "; ".join(why) + ")", "< 30 s"]
    pruner = StructuredPruner(d.model, DIGITS_SHAPES, calib_config(d))
    plain = pruner.at_macs(0.5, "l2")  # also warms up the caches, so only the prune itself is timed below
    secs, note = timed_reconstruction(pruner, None)
    if note:
        return [what, f"n/a ({note})", "< 30 s"]
    one, _ = timed_reconstruction(pruner, 1)
    return [what, f"{secs:.1f} s (1 BLAS thread: {one:.1f} s; prune alone {plain.seconds:.2f} s)", "< 30 s"]
