"""`onnxprune inspect MODEL`: the channel dependency groups, and why blocked ones are blocked."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from onnxprune.calib.source import CalibConfig
from onnxprune.cli.calib_options import calib_options
from onnxprune.cli.options import (
    approximate_option,
    grouped_option,
    heads_option,
    model_argument,
    model_with_shapes,
    shapes_option,
)
from onnxprune.graph.groups import UNIT_KINDS, Group
from onnxprune.io.input_values import describe_rules, infer_rules
from onnxprune.pipeline.analyse import analyse_model, centre_for_rotation
from onnxprune.pipeline.depth import analysed_blocks


def unit_count(g: Group) -> str:
    """"64", "96 hidden", "64 (16 slots × 4)", "64 (4 heads × 16)": a group's channels and what one slot holds."""
    if g.width == 1 and g.kind in ("channel", "hidden"):
        return str(g.size) + (" hidden" if g.kind == "hidden" else "")
    unit = "KV groups" if g.shared_kv else {"head": "heads", "head_dim": "head_dim slots"}.get(g.kind, "slots")
    return f"{g.channels} ({g.size} {unit} × {g.width})"


@click.command("inspect")
@model_argument
@shapes_option
@approximate_option
@grouped_option
@heads_option
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of a table.")
@click.option("--all", "show_all", is_flag=True, help="List every group (default: the first 60).")
@calib_options
def command(model: str, shapes: tuple[str, ...], approximate: tuple[str, ...], grouped: str, heads: str,
            as_json: bool, show_all: bool, calib: CalibConfig) -> None:
    """Show the channel groups of MODEL: coupled producers, channel counts, blocked reasons.

    The shapes come from one run on the first --calib samples, else on random inputs whose integer
    values are inferred from the graph (token ids below the vocabulary, masks of ones)."""
    proto, shp = model_with_shapes(model, shapes)
    dg = analyse_model(proto, shapes=shp, approximate=approximate, grouped=grouped, heads=heads, calibration=calib)
    notes: list[str] = []
    if "rotate" in approximate:  # what the prune run rotates: pre-LN LayerNorm streams first made RMSNorm ones
        dg, notes = centre_for_rotation(dg, shapes=shp, approximate=approximate, grouped=grouped, heads=heads,
                                        calibration=calib)
    units = {k: sum(1 for g in dg.prunable if g.kind == k) for k in UNIT_KINDS}
    summary = {
        "groups": len(dg.groups),
        "prunable": len(dg.prunable),
        "blocked": sum(1 for g in dg.groups if g.blocked),
        "approximate": sum(1 for g in dg.groups if g.prunable and g.approximate),
        "prunable_channels": sum(g.channels for g in dg.prunable),
        "prunable_slots": sum(g.size for g in dg.prunable),
        "grouped_conv": dg.analysis.grouped,
        "whole_group_convs": sorted(dg.analysis.whole_convs),
        "index_fallback_convs": sorted(dg.analysis.index_convs),
        "heads": dg.analysis.heads,
        "prunable_by_unit": units,
    }
    blocks = analysed_blocks(dg)
    summary["residual_blocks"] = len(blocks)
    if as_json:
        click.echo(json.dumps({"summary": summary, "inputs": dg.inputs_json(), "normalise": list(dg.normalised),
                               "rotate": notes,
                               "groups": [g.to_json() for g in dg.groups],
                               "blocks": [b.to_json() for b in blocks]}, indent=1))
        return
    table = Table(title=f"{model}: {summary['groups']} groups, {summary['prunable']} prunable")
    for col in ("id", "channels", "sources", "status", "reason"):
        table.add_column(col)
    shown = dg.groups if show_all else dg.groups[:60]
    for g in shown:
        srcs = ", ".join(g.sources[:3]) + (f" +{len(g.sources) - 3}" if len(g.sources) > 3 else "")
        status = "blocked" if g.blocked else "1 channel" if not g.prunable else (
            "approximate" if g.approximate else "prunable")
        reason = g.blocked[0] if g.blocked else g.approximate[0] if g.approximate else ""
        size = unit_count(g)
        table.add_row(str(g.id), size, srcs, status, reason)
    Console().print(table)
    if dg.analysis.whole_convs or dg.analysis.index_convs:
        click.echo(f"--grouped-conv {dg.analysis.grouped}: {len(dg.analysis.whole_convs)} grouped conv(s) lose whole "
                   f"groups" + (f", {len(dg.analysis.index_convs)} keep the index rule (whole groups collapse into "
                                f"one slot)" if dg.analysis.index_convs else ""))
    if dg.normalised:
        click.echo(f"normalise: {'; '.join(dg.normalised)}")
    for note in notes:
        click.echo(note)
    attention = {k: units[k] for k in ("head", "head_dim") if units[k]}
    if attention:
        click.echo(f"--heads {dg.analysis.heads}: prunable attention groups by unit: "
                   + ", ".join(f"{n} {k}" for k, n in attention.items()))
    if blocks:
        click.echo(f"residual blocks (--drop-blocks): {len(blocks)}: "
                   + ", ".join(f"{b.name} ({len(b.layers)} layers)" for b in blocks[:8])
                   + (f" +{len(blocks) - 8}" if len(blocks) > 8 else ""))
    click.echo(f"random input values: {describe_rules(infer_rules(dg.model), every=True)}")
    click.echo(f"shapes from one run on {dg.probe_inputs}")
    if len(shown) < len(dg.groups):
        click.echo(f"... {len(dg.groups) - len(shown)} more groups (--all to list them)")
