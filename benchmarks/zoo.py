"""Structured pruning over the whole zoo, with onnxsim 0.8.1's structured pruner side by side.

Per model, at R=0.3 (L2 magnitude): groups found / prunable / blocked, params and MACs kept,
the oracle's verdict, seconds to prune, and ONNX Runtime CPU latency of the original file vs the
pruned model (graph optimisation on, batch 1, interleaved A/B pairs, median of per-pair ratios).
onnxsim: `onnxsim.pruning.apply_structured_pruning(model, sparsity=0.3)` on the same file, its
MACs kept and whether its result runs with the original output shapes.

    .venv/bin/python benchmarks/zoo.py            # writes the table into benchmarks/README.md
    .venv/bin/python benchmarks/zoo.py --only resnet_ts --no-latency
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.append(str(ROOT / "benchmarks"))  # for _readme; after tests/, whose zoo.py this folder shadows

from _readme import replace_block  # noqa: E402
from zoo import ZooEntry, zoo_entries  # noqa: E402

from onnxprune.api import analyse, prune  # noqa: E402
from onnxprune.bench import interleaved_latency  # noqa: E402
from onnxprune.errors import OnnxPruneError  # noqa: E402
from onnxprune.inputs import random_inputs  # noqa: E402
from onnxprune.runtime import run  # noqa: E402
from onnxprune.stats import model_stats  # noqa: E402

RATIO = 0.3
BEGIN, END = "<!-- zoo:begin -->", "<!-- zoo:end -->"


@dataclass
class Row:
    name: str
    groups: str = "-"
    params_kept: str = "-"
    macs_kept: str = "-"
    verify: str = "-"
    seconds: str = "-"
    latency: str = "-"
    onnxsim_macs: str = "-"
    onnxsim_note: str = ""

    def cells(self) -> list[str]:
        return [self.name, self.groups, self.params_kept, self.macs_kept, self.verify, self.seconds, self.latency,
                self.onnxsim_macs, self.onnxsim_note]


def _out_shapes(model: onnx.ModelProto, entry: ZooEntry) -> dict[str, tuple[int, ...]]:
    return {k: v.shape for k, v in run(model, random_inputs(model, shapes=entry.shapes)).items()}


def ours(entry: ZooEntry, row: Row, *, latency: bool, repeat: int) -> None:
    t0 = time.perf_counter()
    dg = analyse(str(entry.path), shapes=entry.shapes)
    blocked = sum(1 for g in dg.groups if g.blocked)
    row.groups = f"{len(dg.groups)}/{len(dg.prunable)}/{blocked}"
    try:
        result = prune(dg.model, ratio=RATIO, verify=True, shapes=entry.shapes, dg=dg)
    except OnnxPruneError as exc:
        row.verify = f"declined: {str(exc)[:60]}"
        return
    seconds = time.perf_counter() - t0
    before = model_stats(onnx.load(str(entry.path)), shapes=entry.shapes)
    after = model_stats(result.model, shapes=entry.shapes)
    row.params_kept = f"{after.params / before.params:.2f}"
    row.macs_kept = f"{after.macs / before.macs:.2f}" if before.macs else "-"
    assert result.verify is not None
    row.verify = f"PASS {result.verify.max_rel_error:.0e}"
    row.seconds = f"{seconds:.1f}"
    if latency:
        ab = interleaved_latency(str(entry.path), result.model, batch=1, warmup=3, repeat=repeat,
                                 shapes=entry.shapes)
        row.latency = f"{ab.a.median_ms:.2f} → {ab.b.median_ms:.2f} ms ({ab.speedup:.2f}×)"


def onnxsim_side(entry: ZooEntry, row: Row) -> None:
    try:
        from onnxsim.pruning import apply_structured_pruning
    except ImportError:
        row.onnxsim_note = "onnxsim not installed"
        return
    original = onnx.load(str(entry.path))
    try:
        pruned = apply_structured_pruning(original, sparsity=RATIO)
    except Exception as exc:  # noqa: BLE001 - report whatever the peer raises
        row.onnxsim_note = f"error: {type(exc).__name__}"
        return
    try:
        before = model_stats(original, shapes=entry.shapes)
        after = model_stats(pruned, shapes=entry.shapes)
        ok = _out_shapes(pruned, entry) == _out_shapes(original, entry)
    except Exception as exc:  # noqa: BLE001
        row.onnxsim_note = f"result does not run: {type(exc).__name__}"
        return
    kept = after.macs / before.macs if before.macs else 1.0
    row.onnxsim_macs = f"{kept:.2f}"
    row.onnxsim_note = ("untouched" if kept >= 0.999 else "pruned") + ("" if ok else ", output shapes differ")


def table(rows: list[Row]) -> str:
    head = ["model", "groups found/prunable/blocked", "params kept", "MACs kept", "verify (max rel err)",
            "prune s", "ORT latency orig → pruned (speedup)", "onnxsim MACs kept", "onnxsim"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    ours_reduced = sum(1 for r in rows if r.macs_kept not in ("-",) and float(r.macs_kept) < 1.0)
    sim_reduced = sum(1 for r in rows if r.onnxsim_macs not in ("-",) and float(r.onnxsim_macs) < 0.999)
    lines.append("")
    lines.append(f"MACs reduced at R={RATIO}: onnxprune {ours_reduced}/{len(rows)} models, "
                 f"onnxsim {sim_reduced}/{len(rows)} models.")
    return "\n".join(lines)


def write_readme(text: str, command: str) -> None:
    replace_block(ROOT / "benchmarks" / "README.md", BEGIN, END,
                  f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {_cpus()} CPUs, "
                  f"Python {platform.python_version()}, with `{command}`.\n\n{text}",
                  "Structured pruning over the zoo (`benchmarks/zoo.py`)")


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--no-latency", action="store_true")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    rows: list[Row] = []
    for entry in zoo_entries():
        if args.only and entry.name not in args.only:
            continue
        row = Row(entry.name)
        try:
            ours(entry, row, latency=not args.no_latency, repeat=args.repeat)
        except Exception as exc:  # noqa: BLE001 - a benchmark reports, it does not stop
            row.verify = f"ERROR {type(exc).__name__}: {str(exc)[:60]}"
            traceback.print_exc()
        onnxsim_side(entry, row)
        print(" | ".join(row.cells()), flush=True)
        rows.append(row)
    text = table(rows)
    print(text)
    if not args.no_write and not args.only:
        write_readme(text, "make bench  (.venv/bin/python benchmarks/zoo.py)")


if __name__ == "__main__":
    main()
