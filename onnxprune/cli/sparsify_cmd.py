"""`onnxprune sparsify`: zero weights unstructured or N:M (magnitude, Wanda, SparseGPT)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from onnxprune.calib.source import CalibConfig
from onnxprune.cli.calib_options import calib_options
from onnxprune.deploy.tensorrt.profile import tensorrt_profile
from onnxprune.errors import OnnxPruneError
from onnxprune.io.model_io import check_note, check_paths, load_model, save_model, write_json
from onnxprune.passes.sparsify import DEFAULT_MIN_REDUCTION, SparsifyPass, parse_pattern
from onnxprune.sparsity.compliance import nm_report, report_json, report_table
from onnxprune.sparsity.methods import METHODS


@click.command("sparsify")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Where to write the sparse model.")
@click.option("--sparsity", type=click.FloatRange(0.0, 1.0, max_open=True), default=None,
              help="Unstructured: zero this fraction of every output row (e.g. 0.5).")
@click.option("--pattern", default=None, metavar="N:M",
              help="N:M structured sparsity on the TensorRT axis (e.g. 2:4).")
@click.option("--method", type=click.Choice(METHODS), default="magnitude", show_default=True,
              help="magnitude: |W|; wanda: |W|·‖X‖ (calibration); sparsegpt: OBS updates (calibration).")
@click.option("--one-shot", is_flag=True,
              help="sparsegpt: collect all Grams in one pass instead of layer by layer on the sparsified model.")
@click.option("--refit/--no-refit", default=None,
              help="Least-squares re-fit of the kept weights of every output row to the dense layer output "
                   "(layer by layer on the sparsified model). Default: on when --calib is given.")
@click.option("--min-reduction", type=click.IntRange(0), default=DEFAULT_MIN_REDUCTION, show_default=True,
              help="Leave weights whose output rows (C/g·kh·kw or K) are shorter alone, e.g. a 1-channel 3x3 stem.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), default=None,
              help="Write the per-weight sparsity / N:M compliance report as JSON.")
@click.option("--for", "target", type=click.Choice(["ort", "tensorrt"]), default="ort", show_default=True,
              help="tensorrt: the 2:4 pattern on the input-channel axis that sparse tensor cores run "
                   "(the default pattern; other patterns and unstructured sparsity are refused).")
@calib_options
def command(model: str, output: str, sparsity: float | None, pattern: str | None, method: str, one_shot: bool,
            refit: bool | None, min_reduction: int, report_path: str | None, target: str, calib: CalibConfig) -> None:
    """Zero weights of MODEL's Conv/Gemm/MatMul layers and write the result to OUTPUT.

    Give --sparsity or --pattern. wanda, sparsegpt and --refit read calibration data (--calib);
    without it they run on random inputs and warn. With --calib the kept weights are re-fitted
    (--no-refit to turn off), also for magnitude.
    """
    if target == "tensorrt":
        profile = tensorrt_profile()
        if sparsity is not None or (pattern is not None and pattern.replace(" ", "") != profile.pattern):
            raise OnnxPruneError(f"--for tensorrt: TensorRT's sparse tensor cores run only the {profile.pattern} "
                                 "pattern; drop --sparsity/--pattern or use --for ort")
        pattern = profile.pattern
    if (sparsity is None) == (pattern is None):
        raise click.UsageError("give exactly one of --sparsity and --pattern")
    pat = parse_pattern(pattern) if pattern else None
    check_paths(models={"MODEL": model}, inputs={"--calib": calib.path},
                outputs={"-o": output, "--report": report_path})
    src = load_model(model)
    refit = calib.path is not None if refit is None else refit
    needs_data = method != "magnitude" or refit
    pass_ = SparsifyPass(sparsity=sparsity, pattern=pat, method=method, calibration=calib if needs_data else None,
                         sequential=not one_shot, refit=refit, min_reduction=min_reduction)
    result = pass_(src)
    save_model(result.model, output)
    n, m = pat or (2, 4)
    rows = nm_report(result.model, n=n, m=m)
    console = Console()
    console.print(report_table(rows, title=f"{Path(output).name}: {method}"))
    for note in result.notes:
        console.print(note, markup=False, highlight=False)
    if report_path:
        write_json(report_path, report_json(rows))
    checked = check_note(result.model)
    click.echo(f"wrote {output}" + (f", after {checked}" if checked else ""))
