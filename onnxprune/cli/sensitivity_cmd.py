"""`onnxprune sensitivity MODEL --calib D`: each group's output error (and accuracy) against its ratio alone."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from onnxprune.api import analyse
from onnxprune.calib.source import CalibConfig, CalibrationSource
from onnxprune.cli.calib_options import calib_options
from onnxprune.cli.options import (
    approximate_option,
    grouped_option,
    heads_option,
    keep_option,
    model_argument,
    model_with_shapes,
    round_to_option,
    shapes_option,
    target_option,
)
from onnxprune.errors import OnnxPruneError
from onnxprune.graph.keep import keep_layers
from onnxprune.io.model_io import check_paths
from onnxprune.io.progress import rich_progress
from onnxprune.measure.compare import sensitivity_table
from onnxprune.measure.curves import (
    DEFAULT_METRIC,
    DEFAULT_RATIOS,
    DEFAULT_SAMPLES,
    FILLS,
    METRICS,
    load_labelled,
    require_metric,
    sensitivity_curves,
)
from onnxprune.pipeline.analyse import rotate_for_pruning
from onnxprune.planning.rounding import finer_round_to, rounding_policy
from onnxprune.scoring.catalog import criteria


def parse_ratios(text: str) -> list[float]:
    try:
        out = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise OnnxPruneError(f"--ratios {text!r}: give comma-separated fractions, e.g. 0.1,0.2,0.5") from None
    if not out or any(not 0.0 < r < 1.0 for r in out):
        raise OnnxPruneError(f"--ratios {text!r}: every ratio must be in (0, 1)")
    return out


@click.command("sensitivity")
@model_argument
@click.option("--ratios", default=",".join(f"{r:g}" for r in DEFAULT_RATIOS), show_default=True,
              help="Comma-separated ratios of one group's channels to remove, each in (0, 1).")
@click.option("--criterion", type=click.Choice(criteria()), default="l2", show_default=True,
              help="Which channels of a group go first (lowest score).")
@round_to_option
@target_option
@click.option("--samples", type=click.IntRange(min=1), default=DEFAULT_SAMPLES, show_default=True,
              help="Calibration samples the errors are measured on.")
@click.option("--data", default=None, help="Labelled test data for accuracy: .npz with labels under 'y' (or --labels).")
@click.option("--labels", default=None,
              help="Class ids (.npy, or key 'y' of a .npz): for --data, or else for the calibration samples in order.")
@click.option("--label-output", default=None, help="Output scored against the labels (default: first [N, C] output).")
@click.option("--error", "error", type=click.Choice(METRICS), default=DEFAULT_METRIC, show_default=True,
              help="Error shown in the table and plot.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Write the curves as JSON (input of prune --sensitivity).")
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="Write a PNG of the curves (matplotlib).")
@click.option("--fill", type=click.Choice(FILLS), default="zero", show_default=True,
              help="What a masked channel reads while measuring: 0, or its mean on the calibration samples "
                   "(the error left once its mean is folded into the next bias), or refit: 0 with its consumers "
                   "re-fitted by least squares, as reconstruction does.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bars on stderr.")
@calib_options
@shapes_option
@approximate_option
@keep_option
@grouped_option
@heads_option
def command(model: str, ratios: str, criterion: str, round_to: str | None, target: str, samples: int,
            data: str | None, labels: str | None, label_output: str | None, error: str, json_out: str | None, plot: str | None,
            fill: str, progress: bool, calib: CalibConfig, shapes: tuple[str, ...], approximate: tuple[str, ...],
            keep: tuple[str, ...], grouped: str, heads: str) -> None:
    """Measure, for every prunable group of MODEL alone, the output error at each pruning ratio."""
    grid = parse_ratios(ratios)
    multiple = rounding_policy(round_to, target=target)
    if plot is not None:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            raise OnnxPruneError("--plot needs matplotlib: pip install 'onnxprune[plot]'")
    check_paths(models={"MODEL": model}, inputs={"--calib": calib.path, "--data": data, "--labels": labels},
                outputs={"--json": json_out, "--plot": plot})
    proto, shp = model_with_shapes(model, shapes)
    source = CalibrationSource.of(calib, proto, shapes=shp)
    dg = keep_layers(analyse(proto, shapes=shp, approximate=approximate, grouped=grouped, heads=heads,
                             calibration=source), keep)  # kept groups are not measured
    rotated = None
    if "rotate" in approximate:  # measured on the model the prune run slices, in its order
        dg, rotated = rotate_for_pruning(dg, shapes=shp, approximate=approximate, grouped=grouped, heads=heads,
                                         keep=keep, calibration=source)
    require_metric(dg, error)
    with rich_progress(enabled=progress) as bar:
        labelled = load_labelled(dg.model, data=data, labels=labels, calibration=source, samples=samples,
                                 output=label_output, shapes=shp)
        result = sensitivity_curves(dg, calibration=source, ratios=grid, criterion=criterion, samples=samples,
                                    round_to=multiple.value, shapes=shp, labelled=labelled, model_name=model,
                                    progress=bar, fill=fill,
                                    scores=rotated.group_scores(dg) if rotated is not None else None)
    result.rotated = rotated is not None and bool(rotated.scores)
    console = Console()
    console.print(sensitivity_table(result, error=error, title=f"{Path(model).name}: {error} per group and ratio",
                                    width=console.width))
    acc = "" if result.dense_accuracy is None else \
        f"; dense accuracy {100 * result.dense_accuracy:.2f}% on {result.accuracy_samples} labelled samples"
    click.echo(f"{len(result.curves)} groups x {len(grid)} ratios on {result.samples} calibration samples "
               f"in {result.seconds:.1f}s{acc}")
    click.echo(multiple.describe())
    for note in rotated.notes if rotated is not None else ():
        click.echo(f"note: {note}")
    click.echo("outputs: " + "; ".join(f"{o['name']}: {o['kind']} ({o['reason']})" for o in result.outputs))
    flat = [c for c in result.curves if not any(p.removed for p in c.points)]
    if flat and multiple.value > 1:
        click.echo(f"note: {len(flat)} of {len(result.curves)} groups lose no whole block of {multiple.value} "
                   f"channels at these ratios (a group keeps at least one block): their curves stay at 0; "
                   f"{finer_round_to(multiple.value)} measures them")
    if json_out:
        result.save(json_out)
        click.echo(f"curves written to {json_out} (use: onnxprune prune MODEL --sensitivity {json_out} --target-macs F)")
    if plot:
        from onnxprune.measure.curves_plot import plot_curves

        plot_curves(result, plot, error=error)
        click.echo(f"plot written to {plot}")
