"""`onnxprune prune MODEL -o OUT --ratio R`: structured channel pruning."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console

from onnxprune.api import PruneResult, prune
from onnxprune.calib.source import CalibConfig, calib_options, timing_feed
from onnxprune.cli.options import (
    approximate_option,
    grouped_option,
    keep_option,
    model_argument,
    model_with_shapes,
    round_to_option,
    shapes_option,
    target_option,
)
from onnxprune.errors import OnnxPruneError
from onnxprune.io.model_io import check_paths, write_json
from onnxprune.io.progress import rich_progress
from onnxprune.measure.compare import compare_dict, compare_table
from onnxprune.measure.curves import DEFAULT_METRIC, DEFAULT_SAMPLES, METRICS, held_feeds, load_labelled
from onnxprune.measure.model_stats import model_stats
from onnxprune.pipeline.decisions import group_decisions
from onnxprune.pipeline.schedule import SCHEDULES, Gate, StepsResult, prune_in_steps
from onnxprune.planning.allocation import ALLOCATIONS
from onnxprune.planning.cpu_profile import channel_multiple
from onnxprune.planning.latency_search import LatencyOptions, require_sizes
from onnxprune.planning.plan import Plan
from onnxprune.scoring.importance import criteria


def _loop_options(fn: Any) -> Any:
    """Flags of the user's loop: sensitivity curves, latency budget, steps and their thresholds."""
    for deco in reversed([
        click.option("--sensitivity", "sensitivity", type=click.Path(dir_okay=False), default=None, metavar="S.json",
                     help="Curves from `onnxprune sensitivity --json`: a --target-* budget is split into per-group "
                          "ratios with the least total error. With --steps, each later step re-measures the curves "
                          "on its own model (same grid, samples and criterion, on --calib)."),
        click.option("--sensitivity-error", type=click.Choice(METRICS), default=DEFAULT_METRIC, show_default=True,
                     help="Which error of the curves the allocation minimises."),
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
        click.option("--steps", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Prune in K steps, re-fitting (with --calib) and checking after each."),
        click.option("--schedule", type=click.Choice(SCHEDULES), default="geometric", show_default=True,
                     help="geometric: each step removes the same share of what is left; linear: the same amount."),
        click.option("--min-cosine", type=float, default=None,
                     help="Stop (keep the last good step) when any output's cosine vs the original falls below this."),
        click.option("--max-acc-drop", type=float, default=None,
                     help="Stop when accuracy drops by more than this many points (needs --data/--labels)."),
        click.option("--data", default=None, help="Labelled data for --max-acc-drop: .npz with labels under 'y'."),
        click.option("--labels", default=None, help="Class ids for --data, or else for the calibration samples."),
        click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bars on stderr."),
    ]):
        fn = deco(fn)
    return fn


@click.command("prune")
@model_argument
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=str),
              help="Where to write the pruned model (never the input).")
@click.option("--ratio", type=float, default=0.3, show_default=True,
              help="Fraction of each prunable group's channels to remove, in [0, 1).")
@click.option("--criterion", type=click.Choice(criteria()), default="l2", show_default=True)
@round_to_option
@target_option
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
@click.option("--head-floor", type=click.FloatRange(0.0), default=None, metavar="F",
              help="Re-fit the layers producing a final Sigmoid's logits (a detector's class scores) weighted by "
                   "the sigmoid's slope plus F, e.g. 0.01: rows near the decision threshold count most.")
@_loop_options
@calib_options
@shapes_option
@approximate_option
@keep_option
@grouped_option
def command(model: str, output: str, ratio: float, criterion: str, round_to: str | None, target: str, verify: bool,
            plan_in: str | None, save_plan: str | None, report_path: str | None, shapes: tuple[str, ...],
            allocation: str, target_macs: float | None, target_params: float | None, calib: CalibConfig,
            approximate: tuple[str, ...], reconstruct: bool | None, head_floor: float | None, keep: tuple[str, ...],
            grouped: str,
            **loop: Any) -> None:
    """Remove a fraction of the channels of every prunable group of MODEL."""
    if not 0.0 <= ratio < 1.0:
        raise OnnxPruneError(f"--ratio {ratio} is outside [0, 1)")
    multiple = channel_multiple(round_to, target=target)
    if sum(t is not None for t in (target_macs, target_params, loop["target_latency"])) > 1:
        raise OnnxPruneError("give at most one of --target-macs, --target-params and --target-latency")
    if loop["sensitivity"] and not (target_macs or target_params or loop["target_latency"]):
        raise OnnxPruneError("--sensitivity needs a budget: --target-macs, --target-params or --target-latency")
    check_paths(models={"MODEL": model},
                inputs={"--plan": plan_in, "--sensitivity": loop["sensitivity"], "--calib": calib.path,
                        "--data": loop["data"], "--labels": loop["labels"]},
                outputs={"-o": output, "--report": report_path, "--save-plan": save_plan})
    original, shp = model_with_shapes(model, shapes)
    timing = _latency_options(loop, original, calib)
    if loop["measure_latency"]:
        require_sizes(original, shp, option="--measure-latency", feed=timing.feed)
    steps: StepsResult | None = None
    with rich_progress(enabled=loop["progress"]) as bar:
        kwargs: dict[str, Any] = dict(
            ratio=ratio, criterion=criterion, round_to=multiple.value, prefer_round_to=multiple.prefer, verify=verify,
            shapes=shp, calibration=calib,
            allocation=allocation, target_macs=target_macs, target_params=target_params, approximate=approximate,
            reconstruct=reconstruct, head_floor=head_floor, keep=keep, grouped=grouped, progress=bar,
            sensitivity=loop["sensitivity"],
            sensitivity_error=loop["sensitivity_error"], target_latency=loop["target_latency"],
            latency=timing, time_multiples=loop["time_multiples"])
        gate = _gate(original, calib, shp, loop)
        if loop["steps"] > 1 or gate.active:
            if plan_in:
                raise OnnxPruneError("--plan replays one plan: it cannot be combined with --steps/--min-cosine/"
                                     "--max-acc-drop")
            steps = prune_in_steps(original, steps=loop["steps"], schedule=loop["schedule"], gate=gate,
                                   decisions=report_path is not None, **kwargs)
            result = steps.result
        else:
            result = prune(original, plan=Plan.load(plan_in) if plan_in else None, **kwargs)
    dense = result.dg.model if steps is None else steps.original
    before, after = model_stats(dense, shapes=shp), model_stats(result.model, shapes=shp)
    latency_ms = _latency(dense, result, loop, shp, timing)
    result.save(output)
    console = Console()
    console.print(compare_table(before, after, latency_ms=latency_ms, title=f"{Path(model).name} -> {Path(output).name}"))
    groups = result.dg.groups
    click.echo(f"groups: {len(groups)} found, {len(result.dg.prunable)} prunable, "
               f"{sum(1 for g in groups if g.blocked)} blocked; {result.removed_slots} channel slots removed "
               f"in {result.seconds:.1f}s")
    asked = None if plan_in or target_macs or target_params or loop["target_latency"] else ratio
    removal = _removal(result, steps, asked=asked, macs_kept=after.macs / max(before.macs, 1),
                       params_kept=after.params / max(before.params, 1))
    click.echo(_removal_line(removal))
    budget = result.target is not None  # a budget plan was made (not when the dense model already meets it)
    race = None if result.choice is None else result.choice.race
    both_landed = race is not None and not race.completion  # both multiples landed the budget and were timed
    click.echo(multiple.describe(used=result.plan.round_to, budget=budget, timed=both_landed) if plan_in is None
               else f"replayed plan (made with round-to {result.plan.round_to})")
    if race is not None:
        click.echo(race.describe())
    elif result.choice is not None and result.choice.race_skipped is not None:
        click.echo(f"multiples not timed: {result.choice.race_skipped}")
    if result.target is not None:
        last = None if steps is None or len(steps.steps) == 1 else len(steps.steps)
        # With steps, the last step's own budget is a fraction of the model that step started from.
        click.echo(result.target.describe() if last is None else
                   f"step {last} alone: " + result.target.describe(of=f"step {last - 1}'s model"))
        if not result.target.ok and result.plan.round_to > 1 and plan_in is None:
            why = "cannot shrink narrow groups further" if result.target.achieved > result.target.target \
                else "change the MACs in coarse steps"
            click.echo(f"note: multiples of {result.plan.round_to} {why}; --round-to 1 lands closer to the budget, "
                       f"though ONNX Runtime may run odd channel counts slower")
    if result.choice is not None and result.choice.latency is not None:
        click.echo(result.choice.latency.describe())
    # With steps, the last step's curves were re-measured on the model before it (schedule.remeasured).
    curves_from = loop["sensitivity"] if steps is None or len(steps.steps) == 1 \
        else f"curves re-measured on step {len(steps.steps) - 1}'s model (step 1: {loop['sensitivity']})"
    if result.choice is not None and result.choice.allocation is not None:
        click.echo(f"sensitivity: per-group ratios from {curves_from}; predicted "
                   f"{result.choice.allocation.error} {result.choice.allocation.predicted_error:.3g} (sum over groups)")
    if steps is not None:
        for rec in steps.steps:
            cos = "" if rec.min_cosine is None else f", min cosine {rec.min_cosine:.4f}"
            acc = "" if rec.acc_drop is None else f", accuracy drop {rec.acc_drop:.2f} points"
            click.echo(f"step {rec.step}: MACs {rec.macs_kept:.1%}, params {rec.params_kept:.1%} of the original"
                       f"{cos}{acc}{'' if rec.passed else ' — FAILED'}")
        click.echo(steps.describe())
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
            "model": model, "output": output, "ratio": ratio, "criterion": criterion,
            "round_to": result.plan.round_to,
            "round_to_reason": multiple.why(used=result.plan.round_to, budget=budget, timed=both_landed)
            if plan_in is None else f"replayed plan {plan_in}",
            "round_to_race": _race_json(result),
            "allocation": allocation, "target": None if result.target is None else {
                "metric": result.target.metric, "target": result.target.target,
                "achieved": result.target.achieved},
            "compare": compare_dict(before, after),
            "inputs": result.dg.inputs_json(),
            "removal": removal,
            "verify": None if result.verify is None else result.verify.to_json(),
            "reconstruct": None if result.reconstruction is None else result.reconstruction.to_json(),
            "plan": result.plan.to_json(),
            "groups": [g.to_json() | d for g, d in zip(groups, group_decisions(result), strict=True)],
            "latency_ms": None if latency_ms is None else {"before": latency_ms[0], "after": latency_ms[1]},
            "latency_search": None if result.choice is None or result.choice.latency is None
            else result.choice.latency.to_json(),
            "sensitivity": None if result.choice is None or result.choice.allocation is None
            else {"file": loop["sensitivity"], "curves": curves_from, **result.choice.allocation.to_json()},
            "steps": None if steps is None else steps.to_json(),
        }
        write_json(report_path, report)


def _removal(result: PruneResult, steps: StepsResult | None, *, asked: float | None, macs_kept: float,
             params_kept: float) -> dict[str, Any]:
    """Requested and achieved: channels (a share of the prunable ones) and MACs / params kept."""
    removed, prunable = result.channels
    achieved = removed / max(prunable, 1) if steps is None or len(steps.steps) == 1 else steps.channels_removed
    target = result.target if steps is None or len(steps.steps) == 1 else None  # steps: of step k's model
    return {"channels_removed": removed, "channels_prunable": prunable, "steps": None if steps is None
            else len(steps.steps), "channels_requested": asked, "channels_achieved": achieved,
            "macs_kept": macs_kept, "params_kept": params_kept,
            "budget": None if target is None else {"metric": target.metric, "requested": target.target}}


def _removal_line(r: dict[str, Any]) -> str:
    """'removed X of Y prunable channels (requested R, achieved r); MACs kept m' (see `_removal`)."""
    got = f"achieved {r['channels_achieved']:.1%}"
    channels = (f"removed {r['channels_removed']} of {r['channels_prunable']} prunable channels" if not r["steps"]
                else f"removed {r['channels_achieved']:.1%} of the prunable channels in {r['steps']} steps")
    asked = "" if r["channels_requested"] is None else f"requested {r['channels_requested']:.1%}, "
    kept = f"MACs kept {r['macs_kept']:.1%}"
    budget = r["budget"]
    if budget is not None:
        kept += (f" (requested {budget['requested']:.1%})" if budget["metric"] == "macs" else
                 f", params kept {r['params_kept']:.1%} (requested {budget['requested']:.1%})")
    return f"{channels} ({asked}{got}); {kept}"


def _race_json(result: PruneResult) -> dict[str, object] | None:
    """The report's view of multiple_race: the timing, why it was skipped, or None (not asked / not relevant)."""
    choice = result.choice
    if choice is None or (choice.race is None and choice.race_skipped is None):
        return None
    return choice.race.to_json() if choice.race is not None else {"skipped": choice.race_skipped}


def _latency_options(loop: dict[str, Any], model: Any, calib: CalibConfig) -> LatencyOptions:
    """How latency is measured; on the first --calib samples when given and anything is timed."""
    batch = loop["latency_batch"]
    timed = loop["measure_latency"] or loop["target_latency"] is not None or loop["time_multiples"]
    return LatencyOptions(batch=batch, threads=loop["latency_threads"], repeat=loop["latency_repeat"],
                          feed=timing_feed(model, calib, batch=batch) if timed else None)


def _gate(model: Any, calib: CalibConfig, shapes: Any, loop: dict[str, Any]) -> Gate:
    """Thresholds checked after each step: cosine on the calibration samples, accuracy on labelled data."""
    if loop["min_cosine"] is None and loop["max_acc_drop"] is None and loop["steps"] == 1:
        return Gate()
    feeds = held_feeds(model, calib, samples=DEFAULT_SAMPLES, shapes=shapes) if calib.path is not None else None
    labelled = load_labelled(model, data=loop["data"], labels=loop["labels"], calibration=calib, shapes=shapes)
    if loop["max_acc_drop"] is not None and labelled is None:
        raise OnnxPruneError("--max-acc-drop needs labelled data: --data test.npz (labels under 'y') or --labels")
    return Gate(loop["min_cosine"], loop["max_acc_drop"], feeds, labelled)


def _latency(dense: Any, result: Any, loop: dict[str, Any], shapes: Any,
             timing: LatencyOptions) -> tuple[float, float] | None:
    """(before, after) ms: the latency search's measurements, or an interleaved A/B with --measure-latency."""
    if loop["measure_latency"]:
        from onnxprune.measure.bench import interleaved_latency

        ab = interleaved_latency(dense, result.model, batch=timing.batch, threads=timing.threads,
                                 repeat=timing.repeat, shapes=shapes, feed=timing.feed)
        return ab.a.median_ms, ab.b.median_ms
    search = result.choice.latency if result.choice is not None else None
    return None if search is None else (search.dense_ms, search.achieved_ms)
