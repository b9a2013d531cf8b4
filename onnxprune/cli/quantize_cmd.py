"""`onnxprune quantize`: static INT8 with Q/DQ nodes (ONNX Runtime's quantizer, our calibration sources)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from onnxprune.calib.source import CalibConfig
from onnxprune.cli.calib_options import calib_options
from onnxprune.cli.options import model_with_shapes, shapes_option
from onnxprune.deploy.quantize import (
    DEFAULT_PERCENTILE,
    METHODS,
    TARGETS,
    QuantizeOptions,
    QuantizeResult,
    quantize,
)
from onnxprune.deploy.sensitive import DEFAULT_SAMPLES
from onnxprune.io.model_io import check_note, check_paths, save_model, write_json
from onnxprune.io.progress import rich_progress


def _table(result: QuantizeResult, title: str) -> Table:
    table = Table(title=title)
    for col in ("layer", "op", "precision", "why"):
        table.add_column(col, overflow="fold")
    for d in result.layers:
        table.add_row(d.node, d.op_type, "[green]INT8[/]" if d.int8 else "[yellow]FP32[/]", d.reason)
    return table


@click.command("quantize")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Where to write the INT8 model.")
@click.option("--for", "target", type=click.Choice(TARGETS), default="ort", show_default=True,
              help="ort: Q/DQ around Conv/Gemm/MatMul that ONNX Runtime fuses into its INT8 kernels (UINT8 "
                   "activations). tensorrt: TensorRT's explicit-quantization placement (INT8 symmetric, Q/DQ on "
                   "layer inputs and residual skip inputs only, FP32 biases); 2:4 weights stay 2:4.")
@click.option("--calib-method", "method", type=click.Choice(METHODS), default="minmax", show_default=True,
              help="Activation ranges: min/max, entropy (KL, 512 bins) or a percentile of the histogram.")
@click.option("--percentile", type=click.FloatRange(50.0, 100.0, min_open=True), default=DEFAULT_PERCENTILE,
              show_default=True, help="With --calib-method percentile: the percentile kept.")
@click.option("--quantize-heads", is_flag=True,
              help="Also quantize a detector's score heads (the layers before a final Sigmoid), kept FP32 by default.")
@click.option("--keep-sensitive", "keep_sensitive", type=click.IntRange(min=0), default=0, show_default=True,
              metavar="N", help="Leave FP32 the N layers whose quantization harms the output most: each INT8 layer "
                                f"is left FP32 alone and the output error measured on the first {DEFAULT_SAMPLES} "
                                "calibration samples (one quantizer run per layer).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bars on stderr.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), default=None,
              help="Write the per-layer INT8 / FP32 report as JSON.")
@click.option("--keep", "keep", multiple=True, metavar="PATTERN",
              help="Leave FP32 the nodes whose name matches this fnmatch pattern (repeatable), e.g. "
                   "'/model.0/*'. A pattern matching no node is an error.")
@shapes_option
@calib_options
def command(model: str, output: str, target: str, method: str, percentile: float, quantize_heads: bool,
            keep_sensitive: int, progress: bool, report_path: str | None, keep: tuple[str, ...], shapes: tuple[str, ...], calib: CalibConfig) -> None:
    """Quantize MODEL to static INT8 (per-channel symmetric weights, Q/DQ nodes) and write OUTPUT.

    Layers stay FP32 by name (--keep), as a detector's score heads, or measured (--keep-sensitive).
    Calibration reads the same sources as prune and sparsify (--calib); without it, random inputs (a
    warning, poor ranges).
    """
    check_paths(models={"MODEL": model}, inputs={"--calib": calib.path},
                outputs={"-o": output, "--report": report_path})
    src, shp = model_with_shapes(model, shapes)
    options = QuantizeOptions(target=target, method=method, keep=keep, quantize_heads=quantize_heads,
                              percentile=percentile, keep_sensitive=keep_sensitive)
    with rich_progress(enabled=progress) as bar:
        result = quantize(src, calibration=calib, options=options, shapes=shp, progress=bar)
    save_model(result.model, output)
    console = Console()
    console.print(_table(result, f"{Path(output).name}: INT8 Q/DQ for {target}"))
    for note in result.notes:
        console.print(note, markup=False, highlight=False)
    console.print(result.summary(), markup=False, highlight=False)
    if report_path:
        write_json(report_path, result.to_dict())
    checked = check_note(result.model)
    click.echo(f"wrote {output}" + (f", after {checked}" if checked else ""))
