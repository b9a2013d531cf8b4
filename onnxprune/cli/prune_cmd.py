"""`onnxprune prune MODEL -o OUT --ratio R`: structured channel pruning.

The command builds a `PruneConfig` from its flags, runs `api.prune` and formats the result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from onnxprune.api import PruneResult, prune
from onnxprune.calib.source import CalibConfig
from onnxprune.cli.calib_options import calib_options
from onnxprune.cli.options import (
    approximate_option,
    grouped_option,
    heads_option,
    keep_option,
    model_argument,
    model_with_shapes,
    round_to_option,
    sectioned,
    shapes_option,
    target_option,
)
from onnxprune.config import (
    AnalysisOptions,
    CheckOptions,
    DepthOptions,
    LatencyConfig,
    PruneConfig,
    RecipeOptions,
    RecoveryOptions,
    RoundingOptions,
    ScoringOptions,
    StepOptions,
    budget_of,
)
from onnxprune.errors import OnnxPruneError
from onnxprune.io.model_io import check_note, check_paths, write_json
from onnxprune.io.progress import rich_progress
from onnxprune.measure.bench import LatencyOptions
from onnxprune.measure.compare import print_compare
from onnxprune.measure.curves import DEFAULT_METRIC, METRICS
from onnxprune.pipeline.stages import timing_options
from onnxprune.planning.depth import FILLS as BLOCK_FILLS
from onnxprune.planning.depth import SCORES as BLOCK_SCORES
from onnxprune.planning.latency_search import require_sizes
from onnxprune.planning.plan import Plan
from onnxprune.planning.planner import ALLOCATIONS
from onnxprune.planning.steps import SCHEDULES
from onnxprune.recovery.distill import DistillOptions
from onnxprune.scoring.catalog import criteria

SECTIONS = {
    "Budget (one of)": ("ratio", "target_macs", "target_params", "target_latency"),
    "Scoring and allocation": ("fast", "criterion", "allocation", "sensitivity", "sensitivity_error"),
    "Rounding for the runtime": ("round_to", "target", "time_multiples"),
    "Calibration data": ("calib_path", "calib_samples", "calib_batch", "image_size", "mean", "std", "bgr", "nhwc",
                         "scale"),
    "Depth (approximate)": ("drop_blocks", "block_fill", "block_score"),
    "Recovery": ("reconstruct", "head_floor", "refit_damp", "distill", "distill_steps", "distill_time", "distill_lr"),
    "Checks and steps": ("verify", "steps", "schedule", "min_cosine", "max_acc_drop", "data", "labels"),
    "Analysis": ("shapes", "approximate", "keep", "grouped", "heads"),
    "Latency": ("latency_batch", "latency_threads", "latency_repeat", "measure_latency"),
    "Output": ("output", "plan_in", "save_plan", "report_path", "progress"),
}


class BlockCount(click.ParamType):
    """--drop-blocks: a count >= 0, or auto."""

    name = "N|auto"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        text = str(value).strip().lower()
        if text == "auto":
            return text
        if text.isdigit():
            return int(text)
        self.fail(f"{value!r} is not a count >= 0 or auto", param, ctx)


def _loop_options(fn: Any) -> Any:
    for deco in reversed([
        click.option("--sensitivity", "sensitivity", type=click.Path(dir_okay=False), default=None, metavar="S.json",
                     help="Curves from `onnxprune sensitivity --json`: a --target-* budget is split into per-group "
                          "ratios with the least total error. With --steps, each later step re-measures the curves "
                          "on its own model (same grid, samples and criterion, on --calib)."),
        click.option("--sensitivity-error", type=click.Choice(METRICS), default=DEFAULT_METRIC, show_default=True,
                     help="Which error of the curves the allocation minimises; auto: the one each output's kind "
                          "calls for (threshold for sigmoid scores and maps, margin for softmax sequences and "
                          "classifiers, channel_error otherwise)."),
        click.option("--target-latency", type=click.FloatRange(0.0, min_open=True), default=None, metavar="MS",
                     help="Search the MAC budget until ONNX Runtime latency is about MS milliseconds (within 3 %)."),
        click.option("--latency-batch", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Batch size the latency is measured at."),
        click.option("--latency-threads", type=click.IntRange(min=0), default=0, show_default=True,
                     help="ONNX Runtime intra-op threads for latency (0 = default)."),
        click.option("--latency-repeat", type=click.IntRange(min=1), default=30, show_default=True,
                     help="Timed runs per latency measurement (median); in the --target-latency search, "
                          "pairs interleaved with the dense model."),
        click.option("--time-multiples/--no-time-multiples", default=True, show_default=True,
                     help="With --round-to auto on an AVX2 CPU, a --target-macs/--target-params budget that "
                          "multiples of 16 and of 8 both land: time both pruned models (interleaved, --latency-* "
                          "options) and keep 16 unless 8 runs more than 5 % faster; where only 8 lands, time it "
                          "against the 16 plan completed with blocks of 8 the same way. Off: 16 where it lands, "
                          "else 8, untimed."),
        click.option("--measure-latency", is_flag=True,
                     help="Measure the latency before and after (interleaved A/B) and add it to the table."),
        click.option("--steps", type=click.IntRange(min=1), default=None,
                     help="Prune in K steps, re-fitting (with --calib) and checking after each. Default: the "
                          "recipe's (2 below 0.6 of the MACs/params with --calib, else 1)."),
        click.option("--schedule", type=click.Choice(SCHEDULES), default="geometric", show_default=True,
                     help="geometric: each step removes the same share of what is left; linear: the same amount."),
        click.option("--min-cosine", type=float, default=None,
                     help="Stop (keep the last good step) when any output's cosine vs the original falls below this."),
        click.option("--max-acc-drop", type=float, default=None,
                     help="Stop when accuracy drops by more than this many points (needs --data/--labels)."),
        click.option("--data", default=None, help="Labelled data for --max-acc-drop: .npz with labels under 'y'."),
        click.option("--labels", default=None, help="Class ids for --data, or else for the calibration samples."),
        click.option("--distill", is_flag=True,
                     help="After the re-fit, fine-tune the pruned weights on the --calib data with the original "
                          "as teacher (outputs and the pruned layers' features); keeps the best weights on held-out "
                          "samples. Needs PyTorch: pip install 'onnxprune[distill]'."),
        click.option("--distill-steps", type=click.IntRange(min=1), default=300, show_default=True,
                     help="Optimiser steps of --distill at most."),
        click.option("--distill-time", type=click.FloatRange(0.0, min_open=True), default=300.0, show_default=True,
                     metavar="SECONDS", help="Training time of --distill at most."),
        click.option("--distill-lr", type=click.FloatRange(0.0, min_open=True), default=1e-3, show_default=True,
                     help="Adam learning rate of --distill."),
        click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bars on stderr."),
    ]):
        fn = deco(fn)
    return fn


@click.command("prune", cls=sectioned(SECTIONS))
@model_argument
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=str),
              help="Where to write the pruned model (never the input).")
@click.option("--ratio", type=float, default=0.3, show_default=True,
              help="Fraction of each prunable group's channels to remove, in [0, 1).")
@click.option("--criterion", type=click.Choice(criteria()), default=None,
              help="How channels are ranked inside a group. Default: the recipe's (obs with --calib, else l2).")
@click.option("--fast", is_flag=True,
              help="The quick path: l2 order, uniform allocation, one step, the re-fit as --reconstruct says. "
                   "Without it, --calib and a --target-* budget run the quality recipe: obs order, allocation "
                   "by sensitivity curves measured on the data, a weighted re-fit, 2 steps below 0.6.")
@round_to_option
@target_option
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Check the result against the original with the removed channels made dead.")
@click.option("--plan", "plan_in", type=click.Path(exists=True, dir_okay=False), help="Replay a saved plan.")
@click.option("--save-plan", type=click.Path(dir_okay=False), help="Write the plan as JSON.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), help="Write every figure as JSON.")
@click.option("--allocation", type=click.Choice(ALLOCATIONS), default=None,
              help="uniform: every group loses --ratio; global: one ranking of all channels by normalised score; "
                   "curves: per-group shares from sensitivity curves (--sensitivity, or measured on --calib). "
                   "Default: the recipe's (curves with --calib and a --target-* budget, else uniform).")
@click.option("--target-macs", type=click.FloatRange(0.0, 1.0, min_open=True), default=None, metavar="F",
              help="Keep this fraction of the original MACs (within 3 %) instead of --ratio.")
@click.option("--target-params", type=click.FloatRange(0.0, 1.0, min_open=True), default=None, metavar="F",
              help="Keep this fraction of the original parameters (within 3 %) instead of --ratio.")
@click.option("--reconstruct/--no-reconstruct", default=None,
              help="Re-fit the pruned layers by least squares to the original's outputs on the calibration "
                   "data (default: on with --calib, off without).")
@click.option("--head-floor", type=click.FloatRange(0.0), default=None, metavar="F",
              help="Re-fit the layers producing a final Sigmoid's logits (a detector's class scores, a segmentation "
                   "map) weighted by the sigmoid's slope plus F, e.g. 0.01, and a final Softmax's by the slope at "
                   "its top-2 logit gap: rows near the decision count most.")
@click.option("--refit-damp", type=click.FloatRange(0.0), default=None, metavar="F",
              help="Fix the re-fit's ridge damping (relative to the mean of diag(XᵀX), towards 0) instead of "
                   "choosing it per layer, towards the pruned weights, on calibration samples the fit did not "
                   "see (the default); e.g. 1e-3, the fixed value before that choice.")
@click.option("--drop-blocks", type=BlockCount(), default="0", show_default=True, metavar="N|auto",
              help="Also drop the N residual blocks (a transformer layer's attention or MLP, a ResNet block) "
                   "with the lowest block influence on the calibration data. Approximate: the oracle checks "
                   "the width part only; the report gives the fidelity on the calibration data. "
                   "--ratio 0 drops blocks alone; --target-macs/--target-params count the dropped blocks. "
                   "auto (with --target-macs/--target-params): try 0, 1, 2, ... blocks, the width part landing "
                   "the rest, and keep the split whose outputs stay closest on the calibration data.")
@click.option("--block-fill", type=click.Choice(BLOCK_FILLS), default="mean", show_default=True,
              help="What replaces a dropped block's branch: its per-channel calibration mean, or nothing.")
@click.option("--block-score", type=click.Choice(BLOCK_SCORES), default="bi", show_default=True,
              help="bi: ShortGPT's block influence, 1 - cos(block input, block output); measured: the output "
                   "error with that block alone dropped (one run per block).")
@_loop_options
@calib_options
@shapes_option
@approximate_option
@keep_option
@grouped_option
@heads_option
def command(model: str, output: str, ratio: float, criterion: str | None, fast: bool, round_to: str | None,
            target: str, verify: bool,
            plan_in: str | None, save_plan: str | None, report_path: str | None, shapes: tuple[str, ...],
            allocation: str | None, target_macs: float | None, target_params: float | None, calib: CalibConfig,
            approximate: tuple[str, ...], reconstruct: bool | None, head_floor: float | None,
            refit_damp: float | None, keep: tuple[str, ...],
            grouped: str, heads: str, drop_blocks: int | str, block_fill: str, block_score: str, **loop: Any) -> None:
    """Remove a fraction of the channels of every prunable group of MODEL."""
    _check_tuning(click.get_current_context(), {"drop_blocks": drop_blocks, "distill": loop["distill"]})
    check_paths(models={"MODEL": model},
                inputs={"--plan": plan_in, "--sensitivity": loop["sensitivity"], "--calib": calib.path,
                        "--data": loop["data"], "--labels": loop["labels"]},
                outputs={"-o": output, "--report": report_path, "--save-plan": save_plan})
    config = PruneConfig(
        budget=budget_of(ratio=ratio, target_macs=target_macs, target_params=target_params,
                         target_latency=loop["target_latency"]),
        rounding=RoundingOptions(round_to, target, None, loop["time_multiples"]),
        scoring=ScoringOptions(criterion or "l2", allocation or "uniform", loop["sensitivity"],
                               loop["sensitivity_error"]),
        calibration=calib,
        depth=DepthOptions(drop_blocks, block_fill, block_score),
        recovery=RecoveryOptions(reconstruct, head_floor, _distill_options(loop), refit_damp),
        checks=CheckOptions(verify, min_cosine=loop["min_cosine"], max_acc_drop=loop["max_acc_drop"],
                            data=loop["data"], labels=loop["labels"]),
        steps=StepOptions(loop["steps"] or 1, loop["schedule"]),
        latency=LatencyConfig(LatencyOptions(batch=loop["latency_batch"], threads=loop["latency_threads"],
                                             repeat=loop["latency_repeat"]), loop["measure_latency"]),
        recipe=RecipeOptions.of("fast" if fast else "auto", criterion=criterion, allocation=allocation,
                                steps=loop["steps"], head_floor=head_floor),
    )
    original, shp = model_with_shapes(model, shapes)
    config = config.replace(analysis=AnalysisOptions(shp, approximate, grouped, keep, heads))
    if config.latency.measure:
        require_sizes(original, shp, option="--measure-latency", feed=timing_options(config, original).feed)
    with rich_progress(enabled=loop["progress"]) as bar:
        result = prune(original, config, plan=Plan.load(plan_in) if plan_in else None, progress=bar)
    result.save(output)
    _print(result, title=f"{Path(model).name} -> {Path(output).name}")
    if save_plan:
        result.plan.save(save_plan)
    if report_path:
        write_json(report_path, {"model": model, "output": output, **result.to_json()})


# Options that only tune another one: given without it, they would silently do nothing.
TUNING = {"drop_blocks": ("block_fill", "block_score"), "distill": ("distill_steps", "distill_time", "distill_lr")}


def _check_tuning(ctx: click.Context, values: dict[str, Any]) -> None:
    for main, tuning in TUNING.items():
        given = [n for n in tuning if ctx.get_parameter_source(n) == click.core.ParameterSource.COMMANDLINE]
        if given and not values[main]:
            flags = ", ".join("--" + n.replace("_", "-") for n in given)
            raise OnnxPruneError(f"{flags} only tune --{main.replace('_', '-')}, which was not given")


def _distill_options(loop: dict[str, Any]) -> DistillOptions | None:
    if not loop.pop("distill"):
        return None
    return DistillOptions(steps=loop.pop("distill_steps"), time_budget=loop.pop("distill_time"),
                          lr=loop.pop("distill_lr"))


def _print(result: PruneResult, *, title: str) -> None:
    before, after = result.stats
    print_compare(before, after, latency_ms=result.latency_ms, title=title)
    groups = result.dg.groups
    click.echo(f"groups: {len(groups)} found, {len(result.dg.prunable)} prunable, "
               f"{sum(1 for g in groups if g.blocked)} blocked; {result.removed_slots} channel slots removed "
               f"in {result.seconds:.1f}s")
    click.echo(_removal_line(result.removal()))
    if result.recipe is not None:
        click.echo(result.recipe.describe())
    choice, steps = result.choice, result.steps
    click.echo(f"channel counts rounded to multiples of {result.plan.round_to}: {result.round_to_reason()}"
               if choice is not None else f"replayed plan (made with round-to {result.plan.round_to})")
    short = _short_of_ratio(result.removal(), result.plan.round_to)
    if short:
        click.echo(short)
    if choice is not None and choice.race is not None:
        click.echo(choice.race.describe())
    elif choice is not None and choice.race_skipped is not None:
        click.echo(f"multiples not timed: {choice.race_skipped}")
    if result.target is not None:
        last = len(steps.steps) if result.stepped and steps is not None else None
        # With steps, the last step's own budget is a fraction of the model that step started from.
        click.echo(result.target.describe() if last is None else
                   f"step {last} alone: " + result.target.describe(of=f"step {last - 1}'s model"))
        if not result.target.ok and result.plan.round_to > 1:
            why = "cannot shrink narrow groups further" if result.target.achieved > result.target.target \
                else "change the MACs in coarse steps"
            click.echo(f"note: multiples of {result.plan.round_to} {why}; --round-to 1 lands closer to the budget, "
                       f"though ONNX Runtime may run odd channel counts slower")
    if choice is not None and choice.latency is not None:
        click.echo(choice.latency.describe())
    if choice is not None and choice.allocation is not None:
        click.echo(f"sensitivity: per-group ratios from {result.curves_from()}; predicted "
                   f"{choice.allocation.error} {choice.allocation.predicted_error:.3g} (sum over groups)")
    if steps is not None:
        for rec in steps.steps:
            cos = "" if rec.min_cosine is None else f", min cosine {rec.min_cosine:.4f}"
            acc = "" if rec.acc_drop is None else f", accuracy drop {rec.acc_drop:.2f} points"
            click.echo(f"step {rec.step}: MACs {rec.macs_kept:.1%}, params {rec.params_kept:.1%} of the original"
                       f"{cos}{acc}{'' if rec.passed else ' — FAILED'}")
        click.echo(steps.describe())
    verdict = result.verify_line()
    if verdict is not None:
        click.echo(verdict)
    checked = check_note(result.model)
    if checked:
        click.echo(f"written after {checked}")
    if result.reconstruction is not None:
        click.echo(result.reconstruction.describe())
    if result.fidelity is not None:
        f = result.fidelity
        worst = max((o.rel_l2_error for o in f.outputs), default=0.0)
        click.echo(f"fidelity (approximate groups, not proven): against the dense model on {f.num_samples} "
                   f"{f.source} samples, min output cosine {f.min_cosine:.4f}, max relative L2 error {worst:.2e}")
    if result.distillation is not None:
        click.echo(result.distillation.describe())
    for note in result.notes:
        if "approximate" in note or note.startswith(("depth", "sensitivity curves measured")):
            click.echo(f"note: {note}")


def _short_of_ratio(r: dict[str, Any], round_to: int) -> str:
    """Why a --ratio run removed clearly less than asked: whole blocks do not fit narrow groups."""
    asked = r["channels_requested"]
    if asked is None or round_to <= 1 or r["steps"] or r["channels_achieved"] >= asked - 0.05:
        return ""
    return (f"note: groups too narrow to lose a whole block of {round_to} channels and keep one keep all of theirs; "
            f"--round-to {round_to // 2 if round_to > 2 else 1} or 1 removes closer to the request")


def _removal_line(r: dict[str, Any]) -> str:
    """'removed X of Y prunable channels (requested R, achieved r); MACs kept m' (PruneResult.removal)."""
    got = f"achieved {r['channels_achieved']:.1%}"
    channels = (f"removed {r['channels_removed']} of {r['channels_prunable']} prunable channels" if not r["steps"]
                else f"removed {r['channels_achieved']:.1%} of the prunable channels in "
                f"{r['steps']} steps")
    asked = "" if r["channels_requested"] is None else f"requested {r['channels_requested']:.1%}, "
    kept = f"MACs kept {r['macs_kept']:.1%}"
    budget = r["budget"]
    if budget is not None:
        kept += (f" (requested {budget['requested']:.1%})" if budget["metric"] == "macs" else
                 f", params kept {r['params_kept']:.1%} (requested {budget['requested']:.1%})")
    return f"{channels} ({asked}{got}); {kept}"
