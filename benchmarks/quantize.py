"""INT8 after pruning: accuracy and ONNX Runtime CPU latency of prune -> (2:4) -> quantize.

    python benchmarks/quantize.py                 # digits, YOLOv8n, PP-OCRv4 det; writes benchmarks/README.md
    python benchmarks/quantize.py --models yolo   # one model: its own block of benchmarks/README.md
    python benchmarks/quantize.py --quick         # digits only, no latency, nothing written (smoke test)

Every step reads the same calibration data (digits: models/digits/calib.npz; the real models: the
photographs of benchmarks/_acc_real.py). Metrics are against labels (digits) or against the dense
FP32 model's outputs (YOLOv8n box F1, PP-OCRv4 det mask IoU; benchmarks/_acc_metrics.py), on the
evaluation images of benchmarks/accuracy.py and on WIDE_VIEWS more crops of them (never calibration
images). INT8 rows give both placements: `--for ort`, run in ONNX Runtime's INT8 kernels (graph
optimisation on: what the latency column runs), and `--for tensorrt`, its Q/DQ graph run as written
(TensorRT's INT8 arithmetic simulated in FP32; no GPU here). `--keep-sensitive` rows leave the
KEEP_SENSITIVE layers FP32 whose quantization harms the output most (measured on calibration samples).
Latency: ONNX Runtime CPU, 1 intra-op thread, each model interleaved with the dense FP32 one
(`onnxprune.measure.bench.interleaved_latency`), speedup = median of the per-pair ratios; the 1-minute load
average of the machine is read before and after each row. Then ONNX Runtime's per-op kernel times
(benchmarks/profile_ops.py) of dense FP32 against dense INT8, where the INT8 time goes.

`--modelopt-dir DIR`: also evaluate NVIDIA ModelOpt's INT8 models that benchmarks/modelopt_quantize.py
wrote into DIR (it runs in a ModelOpt venv; `--export-calib DIR` writes the calibration arrays it reads).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from _acc_common import (  # noqa: E402
    DIGITS_SHAPES,
    README,
    accuracy,
    blas_threads,
    environment,
    load_digits,
    md_table,
    outputs,
)
from _readme import replace_block  # noqa: E402

from onnxprune.calib.source import CalibConfig  # noqa: E402
from onnxprune.deploy.quantize import QuantizeOptions, QuantizeResult, quantize  # noqa: E402
from onnxprune.measure.bench import interleaved_latency  # noqa: E402
from onnxprune.passes.sparsify import sparsify  # noqa: E402

MODELS = ("digits", "yolo", "ocr")
HEAD = ["model", "variant", "MACs kept", "accuracy / box F1 / mask IoU vs dense FP32 (INT8: --for ort)",
        "INT8 --for tensorrt", "batch", "ORT CPU latency (speedup over dense FP32)", "load"]
COMMAND = ".venv/bin/python benchmarks/quantize.py"
PRUNED_FP32 = "0.7× MACs (obs + sensitivity + reconstruction) FP32"
SCAN_SHOWN = 4  # layers of each --keep-sensitive scan named below the table
KEEP_SENSITIVE = 2  # the --keep-sensitive budget of the rows that use it, the same for every model
DIGITS_BATCH = 32
DIGITS_REPEAT, REAL_REPEAT, OCR_REPEAT, WARMUP = 300, 100, 40, 10
NOISY = 0.15  # a speedup whose p10-p90 spread exceeds this share of it is marked noisy
WIDE_VIEWS = {"yolo": 160, "ocr": 48}
PROFILE_RUNS = {"digits": 200, "yolo": 30, "ocr": 8}
NOISE_ROW = "dense FP32, inputs + 1 grey level of noise (the metric's resolution)"


@dataclass
class Variant:
    label: str
    model: onnx.ModelProto          # FP32, or INT8 --for ort: the metric column and the latency
    macs: str                       # MACs kept, as text
    trt: onnx.ModelProto | None = None  # the same step quantized --for tensorrt (metric only)
    int8: bool = False
    kept: str = ""                  # the layers --keep-sensitive left FP32, for the notes


def q(model: onnx.ModelProto, calib: CalibConfig, target: str, keep: int = 0) -> QuantizeResult:
    return quantize(model, calibration=calib, options=QuantizeOptions(target=target, keep_sensitive=keep))


def int8(label: str, model: onnx.ModelProto, calib: CalibConfig, macs: str, keep: int = 0) -> Variant:
    """`label` quantized for both targets (with `keep` sensitive layers left FP32)."""
    ort, trt = q(model, calib, "ort", keep), q(model, calib, "tensorrt", keep)
    kept = ""
    if keep:
        kept = "; ".join(f"--for {r.options.target}: kept " + (", ".join(
            f"{t.node} (#{s.scan.rank(t.node)})" for t in s.taken) or "none") +
            f", output error on {s.scan.samples} calibration samples {s.scan.base:.3g} -> {s.error:.3g}; scan: " +
            ", ".join(f"{layer.node} {layer.error:.3g}" for layer in s.scan.layers[:SCAN_SHOWN])
            for r in (ort, trt) if (s := r.sensitive) is not None)
    return Variant(label + (f" --keep-sensitive {keep}" if keep else ""), ort.model, macs, trt.model, True, kept)


@dataclass
class Speed:
    cell: str
    load: str


def speed(dense: onnx.ModelProto, model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]], *, batch: int,
          repeat: int) -> Speed:
    before = os.getloadavg()[0]
    ab = interleaved_latency(dense, model, batch=batch, threads=1, repeat=repeat, warmup=WARMUP, shapes=shapes)
    after = os.getloadavg()[0]
    noisy = " **noisy**" if ab.speedup_p90 - ab.speedup_p10 > NOISY * ab.speedup else ""
    return Speed(f"{ab.b.median_ms:.2f} ms, {ab.speedup:.2f}× (p10–p90 {ab.speedup_p10:.2f}–{ab.speedup_p90:.2f})"
                 f"{noisy}", f"{before:.1f}–{after:.1f}")


# ------------------------------------------------------------------------------------------ digits


def digits_variants() -> list[Variant]:
    from _acc_prune import StructuredPruner

    d = load_digits()
    calib = CalibConfig(path=d.calib_path, samples=128, batch=64)
    pruned = StructuredPruner(d.model, DIGITS_SHAPES, calib).at_macs(0.5, "l2", reconstruct=True)
    assert pruned.model is not None, pruned.note
    sparse = sparsify(d.model, pattern=(2, 4), calibration=calib).model
    kept, nm = f"{pruned.macs_kept:.2f}", "1.00 (0.5 on 2:4 hardware)"
    return [Variant("dense FP32", d.model, "1.00"),
            int8("dense INT8", d.model, calib, "1.00"),
            Variant("pruned 0.5× MACs (l2 + reconstruction) FP32", pruned.model, kept),
            int8("pruned 0.5× MACs + INT8", pruned.model, calib, kept),
            Variant("2:4 (magnitude + re-fit) FP32", sparse, nm),
            int8("2:4 + INT8", sparse, calib, nm)]


def digits_rows(quick: bool) -> tuple[list[list[str]], list[Variant]]:
    d = load_digits()
    variants = digits_variants()
    rows = []
    for v in variants:
        acc = f"{100 * accuracy(v.model, d.x, d.y, optimize=v.int8):.1f} %"
        trt = f"{100 * accuracy(v.trt, d.x, d.y):.1f} %" if v.trt is not None else "-"
        lat = Speed("-", "-") if quick else speed(variants[0].model, v.model, {"input": (DIGITS_BATCH, 1, 8, 8)},
                                                  batch=DIGITS_BATCH, repeat=DIGITS_REPEAT)
        rows.append(["digits", v.label, v.macs, acc, trt, str(DIGITS_BATCH), lat.cell, lat.load])
        print("  " + " | ".join(rows[-1]), flush=True)
    return rows, variants


# ------------------------------------------------------------------------------------ real models


def real_variants(case: object, calib: CalibConfig, *, pruned: bool = True) -> list[Variant]:
    """Dense FP32 / INT8, and 0.7× MACs by the best one-step recipe of benchmarks/accuracy.py (obs +
    sensitivity allocation + reconstruction with the score heads weighted) in FP32 and INT8; the INT8
    steps also with --keep-sensitive."""
    import _acc_real as R
    from _acc_prune import StructuredPruner

    from onnxprune.measure.curves import sensitivity_curves

    model = onnx.load(str(case.path))  # type: ignore[attr-defined]
    out = [Variant("dense FP32", model, "1.00"), int8("dense INT8", model, calib, "1.00"),
           int8("dense INT8", model, calib, "1.00", KEEP_SENSITIVE)]
    if not pruned:
        return out
    pruner = StructuredPruner(model, case.shapes, calib)  # type: ignore[attr-defined]
    curves = sensitivity_curves(pruner.dg, calibration=calib, samples=R.CURVE_SAMPLES, ratios=R.CURVE_RATIOS,
                                shapes=case.shapes)  # type: ignore[attr-defined]
    small = pruner.at_macs(R.TARGET, "obs", reconstruct=True, sensitivity=curves, head_floor=R.HEAD_FLOOR)
    assert small.model is not None, small.note
    kept = f"{small.macs_kept:.2f}"
    return [*out, Variant(PRUNED_FP32, small.model, kept),
            int8("0.7× MACs + INT8", small.model, calib, kept),
            int8("0.7× MACs + INT8", small.model, calib, kept, KEEP_SENSITIVE)]


def wide_inputs(case: object) -> list[np.ndarray]:
    """WIDE_VIEWS random crops / flips of the evaluation images (and the other bundled photographs),
    at the calibration size: more boxes / text than the evaluation views, none from a calibration image."""
    import _acc_images as im

    views = im.calibration_views(case.eval_names + im.OTHER_PHOTOS, WIDE_VIEWS[case.kind], seed=7)  # type: ignore[attr-defined]
    return [case.calib_prep(v) for v in views]  # type: ignore[attr-defined]


def score(case: object, refs: Sequence[list[np.ndarray]], sets: Sequence[list[np.ndarray]],
          model: onnx.ModelProto, *, optimize: bool) -> str:
    """`evaluation views / wide views` fidelity (box F1 or mask IoU) against the dense outputs `refs`."""
    import _acc_real as R

    fids = [R.fidelity(case, ref, outputs(model, x, optimize=optimize))  # type: ignore[arg-type]
            for ref, x in zip(refs, sets, strict=True)]
    return f"{fids[0].score:.3f} / {fids[1].score:.3f}"


def noise_cell(case: object, dense: onnx.ModelProto, refs: Sequence[list[np.ndarray]],
               sets: Sequence[list[np.ndarray]]) -> str:
    """The dense model against itself with one grey level of N(0, 1) noise on its inputs, mean over
    R.NOISE_DRAWS draws (benchmarks/accuracy.py's noise floor): what an imperceptible change moves the metric."""
    import _acc_real as R

    step = R.grey_level(case)  # type: ignore[arg-type]
    means = []
    for ref, inputs in zip(refs, sets, strict=True):
        scores = []
        for seed in range(R.NOISE_DRAWS):
            rng = np.random.default_rng(seed)
            noisy = [(x + rng.standard_normal(x.shape, dtype=np.float32) * step).astype(np.float32) for x in inputs]
            scores.append(R.fidelity(case, ref, outputs(dense, noisy)).score)  # type: ignore[arg-type]
        means.append(float(np.mean(scores)))
    return f"{means[0]:.3f} / {means[1]:.3f}"


def real_rows(case: Any, extra: Callable[[str], list[Variant]] | None, *, pruned: bool = True,
              ) -> tuple[list[list[str]], list[Variant]]:
    import _acc_images as im
    import _acc_real as R

    if not case.path.exists():
        return [[case.name, "-", "n/a", "n/a", "n/a", "n/a", f"{case.path.name} missing (make models)", "-"]], []
    sets = (im.eval_inputs(case.eval_names, case.prep, case.views), wide_inputs(case))
    with tempfile.TemporaryDirectory() as tmp:
        calib = R.write_calibration(case, Path(tmp), case.calib_count)
        variants = real_variants(case, calib, pruned=pruned) + (extra(case.kind) if extra else [])
    dense = variants[0].model
    refs = [outputs(dense, x) for x in sets]
    repeat = OCR_REPEAT if case.kind == "ocr" else REAL_REPEAT
    rows = [[case.name, NOISE_ROW, "1.00", noise_cell(case, dense, refs, sets), "-", "1", "-", "-"]]
    print("  " + " | ".join(rows[-1]), flush=True)
    for v in variants:
        trt = score(case, refs, sets, v.trt, optimize=False) if v.trt is not None else "-"
        lat = speed(dense, v.model, case.shapes, batch=1, repeat=repeat)
        rows.append([case.name, v.label, v.macs, score(case, refs, sets, v.model, optimize=v.int8), trt, "1",
                     lat.cell, lat.load])
        print("  " + " | ".join(rows[-1]), flush=True)
    return rows, variants


def modelopt_variants(folder: Path) -> Callable[[str], list[Variant]]:
    def load(kind: str) -> list[Variant]:
        path = folder / f"{kind}_modelopt.onnx"
        return [Variant("dense INT8, NVIDIA ModelOpt (TensorRT placement)", onnx.load(str(path)), "1.00")] \
            if path.exists() else []

    return load


def export_calibration(folder: Path) -> None:
    """The calibration arrays benchmarks/modelopt_quantize.py reads (same samples as the rows above)."""
    import _acc_real as R

    folder.mkdir(parents=True, exist_ok=True)
    for case in R.CASES:
        R.write_calibration(case, folder, case.calib_count)
        (folder / f"{case.input}_calib.npz").rename(folder / f"{case.kind}_calib.npz")
    print(f"wrote {', '.join(p.name for p in sorted(folder.glob('*_calib.npz')))} into {folder}")


# --------------------------------------------------------------------------------------- profile


def profile_table(models: dict[str, tuple[onnx.ModelProto, onnx.ModelProto, dict[str, tuple[int, ...]]]]) -> str:
    """ONNX Runtime's kernel time per op type (1 thread, graph optimisation on), dense FP32 against dense
    INT8 --for ort, the ten op types that take most of either."""
    from profile_ops import kernel_times

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for kind, (fp32, int8_model, shapes) in models.items():
            feed = {k: np.random.default_rng(0).random(v, dtype=np.float32) for k, v in shapes.items()}
            times = []
            for name, m in (("fp32", fp32), ("int8", int8_model)):
                path = folder / f"{kind}_{name}.onnx"
                onnx.save(m, str(path))
                times.append(kernel_times(path, feed, PROFILE_RUNS[kind], folder)[0])
            a, b = times
            top = sorted(set(a) | set(b), key=lambda k: -max(a.get(k, 0.0), b.get(k, 0.0)))[:10]
            rows.append([kind, "**all**", f"{sum(a.values()):.0f}", f"{sum(b.values()):.0f}"])
            rows += [[kind, op, f"{a.get(op, 0.0):.0f}", f"{b.get(op, 0.0):.0f}"] for op in top]
    return md_table(["model", "op type (ORT kernel)", "dense FP32 µs / run", "dense INT8 --for ort µs / run"], rows)


# ----------------------------------------------------------------------------------------- report


def verdicts(rows: Sequence[Sequence[str]]) -> str:
    """The issue's targets against the measured rows."""
    def cell(model: str, label: str, col: int) -> str | None:
        return next((r[col] for r in rows if r[0].startswith(model) and r[1] == label), None)

    def pct(text: str | None) -> float | None:
        return None if text is None or "%" not in text else float(text.split(" %")[0])

    def first(text: str | None) -> float | None:
        return None if text is None or text in ("-", "n/a") else float(text.split(" / ")[0])

    out = []
    fp, d8, d8t = (pct(cell("digits", lab, c)) for lab, c in (("dense FP32", 3), ("dense INT8", 3), ("dense INT8", 4)))
    if fp is not None and d8 is not None and d8t is not None:
        ok = min(d8, d8t) >= fp - 1.0
        out.append(f"- digits INT8 within 1 point of FP32: **{'met' if ok else 'not met'}** ({d8:.1f} % --for ort, "
                   f"{d8t:.1f} % --for tensorrt, FP32 {fp:.1f} %)")
    p8, p8t = (pct(cell("digits", "pruned 0.5× MACs + INT8", c)) for c in (3, 4))
    if p8 is not None and p8t is not None:
        out.append(f"- digits pruned 0.5× + INT8 ≥ 98.5 %: **{'met' if min(p8, p8t) >= 98.5 else 'not met'}** "
                   f"({p8:.1f} % --for ort, {p8t:.1f} % --for tensorrt)")
    pruned_fp32 = first(cell("YOLO", PRUNED_FP32, 3))
    if pruned_fp32 is not None:
        out.append(f"- YOLOv8n 0.7× MACs FP32, before INT8: box F1 {pruned_fp32:.3f} (INT8 starts from there)")
    for label in ("0.7× MACs + INT8", f"0.7× MACs + INT8 --keep-sensitive {KEEP_SENSITIVE}"):
        f_ort, f_trt = (first(cell("YOLO", label, c)) for c in (3, 4))
        if f_ort is None or f_trt is None:
            continue
        met = [t for t, f in (("--for ort", f_ort), ("--for tensorrt", f_trt)) if f >= 0.85]
        out.append(f"- YOLOv8n box F1 ≥ 0.85 at {label}: **{'met' if len(met) == 2 else 'not met'}"
                   f"{' with ' + met[0] if len(met) == 1 else ''}** ({f_ort:.3f} --for ort, {f_trt:.3f} --for tensorrt)")
    return "Targets of the issue (INT8 --for ort in ONNX Runtime's kernels; --for tensorrt simulated):\n\n" + \
        "\n".join(out) if out else ""


NOTES = f"""\
INT8: `onnxprune quantize` (ONNX Runtime's `quantize_static`, per-channel symmetric INT8 weights, min/max
activation ranges on the same calibration samples as the pruning step; score heads FP32). `--for ort`:
Q/DQ around Conv/Gemm/MatMul, UINT8 activations, run with graph optimisation on (QLinearConv etc.).
`--for tensorrt`: INT8 symmetric, Q/DQ on layer inputs and residual skip inputs only, FP32 biases, the
Q/DQ graph run as written. `--keep-sensitive {KEEP_SENSITIVE}`: the {KEEP_SENSITIVE} layers whose quantization harms the
output most (each INT8 layer left FP32 alone, output error on 16 calibration samples) stay FP32; which,
below the table. Metrics: digits, test accuracy (models/digits/test.npz); YOLOv8n, box F1 against
the dense FP32 model's boxes; PP-OCRv4 det, mask IoU against the dense FP32 map at 0.3. Real models:
on the evaluation views of benchmarks/accuracy.py / on {WIDE_VIEWS['yolo']} (YOLOv8n) or {WIDE_VIEWS['ocr']} (PP-OCRv4 det) more
crops of those images at the calibration size. Latency rows run the FP32 or `--for ort` model;
"load" is the machine's 1-minute load average before–after the row (2 cores; other jobs ran); a
speedup whose p10–p90 spread is over {100 * NOISY:.0f} % of it is marked **noisy**."""


def model_rows(kind: str, args: argparse.Namespace) -> tuple[list[list[str]], list[Variant], dict[str, tuple[int, ...]]]:
    """The rows of one model, its variants, and the input shapes its latency ran at."""
    if kind == "digits":
        rows, variants = digits_rows(args.quick)
        return rows, variants, {"input": (DIGITS_BATCH, 1, 8, 8)}
    import _acc_real as R

    case = next(c for c in R.CASES if c.kind == kind)
    extra = modelopt_variants(args.modelopt_dir) if args.modelopt_dir else None
    rows, variants = real_rows(case, extra, pruned=not args.dense_real)
    return rows, variants, case.shapes


def block(kind: str) -> tuple[str, str]:
    return f"<!-- quantize-{kind}:begin -->", f"<!-- quantize-{kind}:end -->"


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="digits only, no latency, nothing written")
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument("--models", default=",".join(MODELS),
                    help=f"comma-separated, of {', '.join(MODELS)}: each writes its own block of benchmarks/README.md")
    ap.add_argument("--modelopt-dir", type=Path, default=None)
    ap.add_argument("--export-calib", type=Path, default=None)
    ap.add_argument("--dense-real", action="store_true",
                    help="YOLOv8n / PP-OCRv4 det: dense FP32 and INT8 only (no 0.7× pruning: its sensitivity "
                         "curves take minutes)")
    args = ap.parse_args(argv)
    if args.export_calib:
        export_calibration(args.export_calib)
        return
    kinds = ["digits"] if args.quick else args.models.split(",")
    if unknown := set(kinds) - set(MODELS):
        ap.error(f"unknown model(s) {', '.join(sorted(unknown))}; choose from {', '.join(MODELS)}")
    write = not args.quick and not args.no_write
    command = " ".join([COMMAND, *(argv if argv is not None else sys.argv[1:])])
    for kind in kinds:
        start, load0 = time.perf_counter(), os.getloadavg()
        with blas_threads(1):
            rows, variants, shapes = model_rows(kind, args)
            parts = [md_table(HEAD, rows), verdicts(rows)]
            fp32_notes = [f"- {v.label}: {v.kept}" for v in variants if v.kept]
            if fp32_notes:
                parts.append("Layers `--keep-sensitive` left FP32 (rank in its scan), and the scan's most harmful "
                             "layers (output error with each alone FP32):\n\n" + "\n".join(fp32_notes))
            if not args.quick and len(variants) > 1:
                parts += [f"Where the time goes, {kind} (ORT kernel times per op type, 1 thread):",
                          profile_table({kind: (variants[0].model, variants[1].model, shapes)})]
        load1 = os.getloadavg()
        parts.append(f"Run: {time.perf_counter() - start:.0f} s; load average (1 / 5 / 15 min) "
                     f"{load0[0]:.1f} / {load0[1]:.1f} / {load0[2]:.1f} at the start, "
                     f"{load1[0]:.1f} / {load1[1]:.1f} / {load1[2]:.1f} at the end.")
        text = "\n\n".join(p for p in parts if p)
        print(text)
        if write:
            begin, end = block(kind)
            replace_block(README, begin, end, f"{environment()}, with\n\n    {command}\n\n{text}",
                          f"INT8 after pruning: {kind} (`benchmarks/quantize.py`)")
    if write:
        replace_block(README, *block("notes"), NOTES, "INT8 after pruning (`benchmarks/quantize.py`)")


if __name__ == "__main__":
    main()
