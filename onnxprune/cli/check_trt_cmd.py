"""`onnxprune check-trt MODEL`: will this model build with TensorRT, and will 2:4 sparsity pay off? CPU only."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from onnxprune.deploy.tensorrt.build_options import parse_version
from onnxprune.deploy.tensorrt.preflight import DEFAULT_MIN_MACS, check_trt
from onnxprune.errors import EXIT_VERIFY_FAILED
from onnxprune.io.model_io import check_paths, load_model, write_atomic


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
    if trt_version is not None:
        parse_version(trt_version, what="--trt-version")
    check_paths(models={"MODEL": model}, outputs={"--json": json_out})
    m = load_model(model)
    report = check_trt(m, round_to=round_to, min_macs=min_macs or None, target=trt_version, name=Path(model).name)
    report.render()
    if json_out:
        write_atomic(json_out, report.to_json() + "\n")
    if not report.ok:
        sys.exit(EXIT_VERIFY_FAILED)
