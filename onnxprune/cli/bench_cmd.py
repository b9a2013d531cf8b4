"""`onnxprune bench MODEL [--vs OTHER]`: ONNX Runtime latency, A/B speed ratio, size and peak memory."""

from __future__ import annotations

import os
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from onnxprune.calib.source import CalibrationSource
from onnxprune.io.inputs import check_shapes, parse_shapes
from onnxprune.io.model_io import check_paths, load_model, write_json
from onnxprune.io.types import Shapes
from onnxprune.measure.bench import (
    DEFAULT_REPEAT,
    DEFAULT_WARMUP,
    MemoryResult,
    interleaved_latency,
    latency,
    model_file_size,
    peak_memory,
    same_inputs,
)
from onnxprune.measure.compare import human_bytes


def _shapes_text(batch: int, shapes: Shapes) -> str:
    return f"batch {batch}: " + ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in shapes.items())


def _mem(m: MemoryResult | None) -> str:
    return human_bytes(m.growth_bytes) if m is not None else "-"


@click.command("bench")
@click.argument("model")
@click.option("--vs", "other", default=None, help="Second model: interleaved A/B runs and a speed ratio.")
@click.option("--batch", "batches", type=int, multiple=True,
              help="Batch size (repeatable; sets dim 0 of dynamic-batch inputs, also over --shapes); "
                   "default: dim 0 of --shapes, else 1.")
@click.option("--threads", type=int, default=0, show_default=True, help="ORT intra-op threads (0 = ORT default).")
@click.option("--warmup", type=int, default=DEFAULT_WARMUP, show_default=True, help="Untimed runs first.")
@click.option("--repeat", type=int, default=DEFAULT_REPEAT, show_default=True, help="Timed runs (pairs with --vs).")
@click.option("--shapes", multiple=True, help="Dynamic input shape, NAME:1x3x224x224 (repeatable).")
@click.option("--memory/--no-memory", default=True, show_default=True,
              help="Measure peak RSS growth in a subprocess per model and batch.")
@click.option("--json", "json_out", default=None, help="Write the results as JSON to this file.")
@click.option("--data", default=None, metavar="PATH",
              help="Time on these samples (the --calib formats: .npz keyed by input name, .npy, a folder) instead "
                   "of random inputs: the first --batch rows, repeated when the data holds fewer.")
def command(model: str, other: str | None, batches: tuple[int, ...], threads: int, warmup: int, repeat: int,
            shapes: tuple[str, ...], memory: bool, json_out: str | None, data: str | None) -> None:
    """Benchmark MODEL in ONNX Runtime (CPU, graph optimisation on, as deployed)."""
    check_paths(models={"MODEL": model, "--vs": other}, outputs={"--json": json_out})
    shape_map = parse_shapes(shapes)
    graphs = {p: load_model(p, load_external_data=False) for p in (model, other) if p is not None}  # one-line errors
    for g in graphs.values():
        check_shapes(g, shape_map)  # --shapes that do not fit the model: one line
    roles = {"A": model} if other is None else {"A": model, "B": other}
    sizes = {r: model_file_size(p) for r, p in roles.items()}
    doc: dict[str, Any] = {"models": {r: {"path": p, "size_bytes": sizes[r]} for r, p in roles.items()},
                           "threads": threads, "warmup": warmup, "repeat": repeat, "cpu_count": os.cpu_count(),
                           "results": []}
    table = Table(title=f"ONNX Runtime CPU latency (threads={threads or 'ORT default'}, warmup={warmup}, "
                        f"repeat={repeat})")
    for col in ("model", "batch", "median", "p90", "peak RSS +"):
        table.add_column(col, justify="left" if col == "model" else "right", no_wrap=True)
    if other is not None:
        table.add_column("speedup", justify="right", no_wrap=True)
        table.add_column("p10-p90", justify="right", no_wrap=True)
    shown: list[str] = []
    default_batch = next((v[0] for v in shape_map.values() if v), 1)
    source = CalibrationSource.of(data, graphs[model], shapes=shape_map)
    for batch in batches or (default_batch,):
        feed = source.timing_feed(batch)
        mem = {r: peak_memory(p, batch=batch, threads=threads, shapes=shape_map,
                              feed=feed if r == "A" or same_inputs(graphs[model], graphs[p]) else None)
               if memory else None for r, p in roles.items()}
        entry: dict[str, Any] = {"batch": batch, "memory": {r: m.to_dict() if m else None for r, m in mem.items()}}
        if other is None:
            res = latency(model, batch=batch, threads=threads, warmup=warmup, repeat=repeat, shapes=shape_map,
                          feed=feed)
            entry["latency"] = res.to_dict()
            shown.append(_shapes_text(batch, res.input_shapes))
            table.add_row("A", str(batch), f"{res.latency.median_ms:.3f} ms", f"{res.latency.p90_ms:.3f} ms",
                          _mem(mem["A"]))
        else:
            ab = interleaved_latency(model, other, batch=batch, threads=threads, warmup=warmup, repeat=repeat,
                                     shapes=shape_map, feed=feed)
            entry["ab"] = ab.to_dict()
            shown.append(_shapes_text(batch, ab.input_shapes))
            table.add_row("A", str(batch), f"{ab.a.median_ms:.3f} ms", f"{ab.a.p90_ms:.3f} ms",
                          _mem(mem["A"]), "", "")
            table.add_row("B", str(batch), f"{ab.b.median_ms:.3f} ms", f"{ab.b.p90_ms:.3f} ms",
                          _mem(mem["B"]), f"{ab.speedup:.2f}x",
                          f"{ab.speedup_p10:.2f}-{ab.speedup_p90:.2f}")
        doc["results"].append(entry)
    console = Console()
    console.print(table)
    click.echo(f"A = {model} ({human_bytes(sizes['A'])})")
    if other is not None:
        click.echo(f"B = {other} ({human_bytes(sizes['B'])})")
        click.echo("speedup = median over interleaved pairs of t_A / t_B (> 1: B is faster)")
    click.echo("inputs: " + "; ".join(shown) + (f" (samples of {data})" if data else
                                                  " (random; dynamic dims other than batch: 64 unless --shapes)"))
    if json_out:
        write_json(json_out, doc)
