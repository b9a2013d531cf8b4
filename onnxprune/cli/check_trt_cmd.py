"""`onnxprune check-trt MODEL`: will this model build with TensorRT, and will 2:4 sparsity pay off? CPU only."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from onnxprune.errors import EXIT_VERIFY_FAILED, OnnxPruneError
from onnxprune.io import load_model
from onnxprune.tensorrt.preflight import DEFAULT_MIN_MACS, check_trt


@click.command("check-trt")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write the report as JSON here.")
@click.option("--round-to", type=click.IntRange(min=1), default=8, show_default=True,
              help="Channel multiple tensor cores want: 8 for FP16, 16 or 32 for INT8.")
@click.option("--min-macs", type=click.IntRange(min=0), default=DEFAULT_MIN_MACS, show_default=True,
              help="Layers below this many MACs per image are reported as too small to gain from sparsity.")
@click.option("--trt-version", default=None, metavar="X.Y",
              help="TensorRT version you will build with (e.g. 8.6 for JetPack 6.0); default: newest table.")
def command(model: str, json_out: str | None, round_to: int, min_macs: int, trt_version: str | None) -> None:
    """Check MODEL against TensorRT's ONNX operator support and 2:4 sparsity layout.

    Exits 4 when a finding would stop the TensorRT parser or builder.
    """
    m = load_model(model)
    report = check_trt(m, round_to=round_to, min_macs=min_macs or None, target=trt_version, name=Path(model).name)
    report.render()
    if json_out:
        try:
            Path(json_out).write_text(report.to_json() + "\n")
        except OSError as exc:
            raise OnnxPruneError(f"--json {json_out}: cannot write ({exc.strerror or exc})") from None
    if not report.ok:
        sys.exit(EXIT_VERIFY_FAILED)
