"""`onnxprune prune MODEL -o OUT --ratio R`: structured channel pruning."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console

from onnxprune.allocation import ALLOCATIONS
from onnxprune.api import prune
from onnxprune.calibration import CalibConfig, calib_options, echo_calibration_warnings
from onnxprune.cli.options import approximate_option, model_argument, parsed_shapes, shapes_option
from onnxprune.errors import OnnxPruneError
from onnxprune.io import check_distinct_paths, load_model
from onnxprune.plan import Plan
from onnxprune.report import compare_dict, compare_table
from onnxprune.scoring.base import criteria
from onnxprune.stats import model_stats


@click.command("prune")
@model_argument
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=str),
              help="Where to write the pruned model (never the input).")
@click.option("--ratio", type=float, default=0.3, show_default=True,
              help="Fraction of each prunable group's channels to remove, in [0, 1).")
@click.option("--criterion", type=click.Choice(criteria()), default="l2", show_default=True)
@click.option("--round-to", type=int, default=1, show_default=True,
              help="Keep channel counts at multiples of N (8/16/32 suit tensor cores).")
@click.option("--for", "target", type=click.Choice(["ort", "tensorrt"]), default="ort", show_default=True,
              help="tensorrt: round channel counts to multiples of 8 unless --round-to says otherwise.")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Check the result against the original with the removed channels made dead.")
@click.option("--plan", "plan_in", type=click.Path(exists=True, dir_okay=False), help="Replay a saved plan.")
@click.option("--save-plan", type=click.Path(dir_okay=False), help="Write the plan as JSON.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), help="Write every figure as JSON.")
@click.option("--allocation", type=click.Choice(ALLOCATIONS), default="uniform", show_default=True,
              help="uniform: every group loses --ratio; global: one ranking of all channels by normalised score.")
@click.option("--target-macs", type=click.FloatRange(0.0, 1.0, min_open=True), default=None, metavar="F",
              help="Keep this fraction of the original MACs (within 3 %) instead of --ratio.")
@click.option("--target-params", type=click.FloatRange(0.0, 1.0, min_open=True), default=None, metavar="F",
              help="Keep this fraction of the original parameters (within 3 %) instead of --ratio.")
@click.option("--reconstruct/--no-reconstruct", default=None,
              help="Re-fit the pruned layers by least squares to the original's outputs on the calibration "
                   "data (default: on with --calib, off without).")
@calib_options
@shapes_option
@approximate_option
def command(model: str, output: str, ratio: float, criterion: str, round_to: int, target: str, verify: bool,
            plan_in: str | None, save_plan: str | None, report_path: str | None, shapes: tuple[str, ...],
            allocation: str, target_macs: float | None, target_params: float | None, calib: CalibConfig,
            approximate: tuple[str, ...], reconstruct: bool | None) -> None:
    """Remove a fraction of the channels of every prunable group of MODEL."""
    if not 0.0 <= ratio < 1.0:
        raise OnnxPruneError(f"--ratio {ratio} is outside [0, 1)")
    if round_to < 1:
        raise OnnxPruneError(f"--round-to {round_to} must be at least 1")
    if target_macs is not None and target_params is not None:
        raise OnnxPruneError("give at most one of --target-macs and --target-params")
    check_distinct_paths(model, output)
    if target == "tensorrt" and round_to == 1:
        round_to = 8
    shp = parsed_shapes(shapes)
    original = load_model(model)
    with echo_calibration_warnings():
        result = prune(original, ratio=ratio, criterion=criterion, round_to=round_to, verify=verify, shapes=shp,
                       plan=Plan.load(plan_in) if plan_in else None, calibration=calib, allocation=allocation,
                       target_macs=target_macs, target_params=target_params, approximate=approximate,
                       reconstruct=reconstruct)
    before, after = model_stats(result.dg.model, shapes=shp), model_stats(result.model, shapes=shp)
    result.save(output)
    console = Console()
    console.print(compare_table(before, after, title=f"{Path(model).name} -> {Path(output).name}"))
    groups = result.dg.groups
    click.echo(f"groups: {len(groups)} found, {len(result.dg.prunable)} prunable, "
               f"{sum(1 for g in groups if g.blocked)} blocked; {result.removed_slots} channel slots removed "
               f"in {result.seconds:.1f}s")
    if result.target is not None:
        click.echo(result.target.describe())
    if result.verify is not None:
        click.echo(result.verify.describe())
    if result.reconstruction is not None:
        click.echo(result.reconstruction.describe())
    for note in result.notes:
        if "approximate" in note:
            click.echo(f"note: {note}")
    if save_plan:
        result.plan.save(save_plan)
    if report_path:
        report = {
            "model": model, "output": output, "ratio": ratio, "criterion": criterion, "round_to": round_to,
            "allocation": allocation, "target": None if result.target is None else {
                "metric": result.target.metric, "target": result.target.target,
                "achieved": result.target.achieved},
            "compare": compare_dict(before, after),
            "verify": None if result.verify is None else {
                "ok": result.verify.ok, "max_rel_error": result.verify.max_rel_error},
            "reconstruct": None if result.reconstruction is None else result.reconstruction.to_json(),
            "plan": result.plan.to_json(),
            "groups": [g.to_json() | {"removed": len(result.plan.removals.get(g.id, []))} for g in groups],
        }
        Path(report_path).write_text(json.dumps(report, indent=1))
