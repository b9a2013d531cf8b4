"""INT8 after pruning: accuracy and ONNX Runtime CPU latency of prune -> (2:4) -> quantize.

    python benchmarks/quantize.py            # digits, YOLOv8n, PP-OCRv4 det; writes benchmarks/README.md
    python benchmarks/quantize.py --quick    # digits only, no latency (smoke test)

Every step reads the same calibration data (digits: models/digits/calib.npz; the real models: the
photographs of benchmarks/_acc_real.py). Metrics are against labels (digits) or against the dense
FP32 model's outputs (YOLOv8n box F1, PP-OCRv4 det mask IoU; benchmarks/_acc_metrics.py). INT8
rows are given for both placements: `--for ort` (what the latency column runs) and `--for tensorrt`
(measured here with ONNX Runtime executing the Q/DQ graph, as TensorRT's INT8 arithmetic is
simulated by it; no GPU on this machine). Latency: ONNX Runtime CPU, graph optimisation on (Q/DQ
fused into QLinearConv etc.), 1 intra-op thread, each model interleaved with the dense FP32 one
(`onnxprune.measure.bench.interleaved_latency`), speedup = median of the per-pair ratios.

`--modelopt-dir DIR`: also evaluate NVIDIA ModelOpt's INT8 models that benchmarks/modelopt_quantize.py
wrote into DIR (it runs in a ModelOpt venv; `--export-calib DIR` writes the calibration arrays it reads).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

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
from onnxprune.deploy.quantize import QuantizeOptions, quantize  # noqa: E402
from onnxprune.measure.bench import interleaved_latency  # noqa: E402
from onnxprune.passes.sparsify import sparsify  # noqa: E402

BEGIN, END = "<!-- quantize:begin -->", "<!-- quantize:end -->"
COMMAND = ".venv/bin/python benchmarks/quantize.py"
DIGITS_BATCH = 32
REPEAT, WARMUP = 200, 20
REAL_REPEAT, REAL_WARMUP = 40, 5


@dataclass
class Variant:
    label: str
    model: onnx.ModelProto
    macs: str  # MACs kept, as text
    int8_trt: onnx.ModelProto | None = None  # the same step quantized for TensorRT (metric only)


def q(model: onnx.ModelProto, calib: CalibConfig, target: str = "ort") -> onnx.ModelProto:
    return quantize(model, calibration=calib, options=QuantizeOptions(target=target)).model


def speed(dense: onnx.ModelProto, model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]], *, batch: int,
          repeat: int, warmup: int) -> str:
    ab = interleaved_latency(dense, model, batch=batch, threads=1, repeat=repeat, warmup=warmup, shapes=shapes)
    return f"{ab.b.median_ms:.3f} ms, {ab.speedup:.2f}× (p10–p90 {ab.speedup_p10:.2f}–{ab.speedup_p90:.2f})"


def digits_variants(quick: bool) -> tuple[list[Variant], onnx.ModelProto, CalibConfig]:
    from _acc_prune import StructuredPruner

    d = load_digits()
    calib = CalibConfig(path=d.calib_path, samples=128, batch=64)
    pruned = StructuredPruner(d.model, DIGITS_SHAPES, calib).at_macs(0.5, "l2", reconstruct=True)
    assert pruned.model is not None, pruned.note
    sparse = sparsify(d.model, pattern=(2, 4), calibration=calib).model
    kept = f"{pruned.macs_kept:.2f}"
    out = [Variant("dense FP32", d.model, "1.00"),
           Variant("dense INT8", q(d.model, calib), "1.00", q(d.model, calib, "tensorrt")),
           Variant("pruned 0.5× MACs (l2 + reconstruction) FP32", pruned.model, kept),
           Variant("pruned 0.5× MACs + INT8", q(pruned.model, calib), kept, q(pruned.model, calib, "tensorrt")),
           Variant("2:4 (magnitude + re-fit) FP32", sparse, "1.00 (0.5 on 2:4 hardware)"),
           Variant("2:4 + INT8", q(sparse, calib), "1.00 (0.5 on 2:4 hardware)", q(sparse, calib, "tensorrt"))]
    return out, d.model, calib


def digits_table(quick: bool) -> str:
    d = load_digits()
    variants, dense, _ = digits_variants(quick)
    rows = []
    for v in variants:
        acc = f"{100 * accuracy(v.model, d.x, d.y):.1f} %"
        trt = f"{100 * accuracy(v.int8_trt, d.x, d.y):.1f} %" if v.int8_trt is not None else "-"
        lat = "-" if quick else speed(dense, v.model, {"input": (DIGITS_BATCH, 1, 8, 8)}, batch=DIGITS_BATCH,
                                      repeat=REPEAT, warmup=WARMUP)
        rows.append(["digits", v.label, v.macs, acc, trt, lat])
        print("  " + " | ".join(rows[-1]), flush=True)
    return md_table(["model", "variant", "MACs kept", "test accuracy (INT8: --for ort)",
                     "INT8 --for tensorrt", f"ORT CPU latency, batch {DIGITS_BATCH} (speedup over dense FP32)"],
                    rows)


def real_variants(case: object, calib: CalibConfig, *, pruned: bool = True) -> list[Variant]:
    """Dense FP32 / INT8, and 0.7× MACs by the best recipe of benchmarks/accuracy.py (obs + sensitivity
    allocation + reconstruction with the score heads weighted) in FP32 and INT8."""
    import _acc_real as R
    from _acc_prune import StructuredPruner

    from onnxprune.measure.curves import sensitivity_curves

    model = onnx.load(str(case.path))  # type: ignore[attr-defined]
    dense = [Variant("dense FP32", model, "1.00"),
             Variant("dense INT8", q(model, calib), "1.00", q(model, calib, "tensorrt"))]
    if not pruned:
        return dense
    pruner = StructuredPruner(model, case.shapes, calib)  # type: ignore[attr-defined]
    curves = sensitivity_curves(pruner.dg, calibration=calib, samples=R.CURVE_SAMPLES, ratios=R.CURVE_RATIOS,
                                shapes=case.shapes)  # type: ignore[attr-defined]
    out = pruner.at_macs(R.TARGET, "obs", reconstruct=True, sensitivity=curves, head_floor=R.HEAD_FLOOR)
    assert out.model is not None, out.note
    kept = f"{out.macs_kept:.2f}"
    return [*dense,
            Variant("0.7× MACs (obs + sensitivity + reconstruction) FP32", out.model, kept),
            Variant("0.7× MACs + INT8", q(out.model, calib), kept, q(out.model, calib, "tensorrt"))]


def real_rows(extra: Callable[[str], list[Variant]] | None, *, pruned: bool = True) -> list[list[str]]:
    import _acc_images as im
    import _acc_real as R

    rows: list[list[str]] = []
    for case in R.CASES:
        if not case.path.exists():
            rows.append([case.name, "-", "n/a", "n/a", "n/a", f"{case.path.name} missing (make models)"])
            continue
        inputs = im.eval_inputs(case.eval_names, case.prep, case.views)
        with tempfile.TemporaryDirectory() as tmp:
            calib = R.write_calibration(case, Path(tmp), case.calib_count)
            variants = real_variants(case, calib, pruned=pruned) + (extra(case.kind) if extra else [])
        dense = variants[0].model
        ref = outputs(dense, inputs)
        for v in variants:
            fid = R.fidelity(case, ref, outputs(v.model, inputs))
            trt = "-"
            if v.int8_trt is not None:
                t = R.fidelity(case, ref, outputs(v.int8_trt, inputs))
                trt = f"{t.score:.3f} (cos {t.cosine:.4f})"
            lat = speed(dense, v.model, case.shapes, batch=1, repeat=REAL_REPEAT, warmup=REAL_WARMUP)
            rows.append([case.name, v.label, v.macs, f"{fid.score:.3f} (cos {fid.cosine:.4f})", trt, lat])
            print("  " + " | ".join(rows[-1]), flush=True)
    return rows


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


NOTES = """\
INT8: `onnxprune quantize` (ONNX Runtime's `quantize_static`, per-channel symmetric INT8 weights, min/max
activation ranges on the same calibration samples as the pruning step; score heads FP32). `--for ort`:
Q/DQ around Conv/Gemm/MatMul, UINT8 activations. `--for tensorrt`: INT8 symmetric, Q/DQ on layer inputs
and residual skip inputs only, FP32 biases. Metrics of INT8 rows: digits, test accuracy; YOLOv8n, box F1
against the dense FP32 model's boxes; PP-OCRv4 det, mask IoU against the dense FP32 model's map (cosine of
the raw outputs in brackets). Latency rows run the `--for ort` model."""


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="digits only, no latency, nothing written")
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument("--modelopt-dir", type=Path, default=None)
    ap.add_argument("--export-calib", type=Path, default=None)
    ap.add_argument("--dense-real", action="store_true",
                    help="YOLOv8n / PP-OCRv4 det: dense FP32 and INT8 only (no 0.7× pruning: its sensitivity "
                         "curves take minutes)")
    args = ap.parse_args(argv)
    if args.export_calib:
        export_calibration(args.export_calib)
        return
    start = time.perf_counter()
    with blas_threads(1):
        parts = ["### Digits: accuracy and latency", digits_table(args.quick)]
        if not args.quick:
            rows = real_rows(modelopt_variants(args.modelopt_dir) if args.modelopt_dir else None,
                             pruned=not args.dense_real)
            head = ["model", "variant", "MACs kept", "box F1 / mask IoU vs dense FP32 (INT8: --for ort)",
                    "INT8 --for tensorrt", "ORT CPU latency, batch 1 (speedup over dense FP32)"]
            parts += ["### YOLOv8n and PP-OCRv4 det: fidelity and latency", md_table(head, rows)]
    parts += [NOTES, f"Whole run: {time.perf_counter() - start:.0f} s."]
    text = "\n\n".join(parts)
    print(text)
    if not args.quick and not args.no_write:
        command = " ".join([COMMAND, *(argv if argv is not None else sys.argv[1:])])
        replace_block(README, BEGIN, END, f"{environment()}, with\n\n    {command}\n\n{text}",
                      "INT8 after pruning (`benchmarks/quantize.py`)")


if __name__ == "__main__":
    main()
