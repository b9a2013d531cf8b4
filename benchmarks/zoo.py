"""Structured pruning over the whole zoo, with onnxsim 0.8.1's structured pruner side by side.

Per model, at R=0.3 (L2 magnitude, `--round-to auto` as the CLI defaults to): groups found /
prunable / blocked, the share of the prunable channels removed (requested 0.30 → achieved),
params and MACs kept, the oracle's verdict, seconds to prune, and ONNX Runtime CPU latency of the
original file vs the pruned model (graph optimisation on, batch 1, interleaved A/B pairs, median
of per-pair ratios). onnxsim: `onnxsim.pruning.apply_structured_pruning(model, sparsity=0.3)` on
the same file, its MACs kept and whether its result runs with the original output shapes.

Then the coverage under each CPU profile `--round-to auto` can mean (ONNXPRUNE_CPU=avx512, avx2,
none: blocks of 16, 8, exact counts): per model the achieved channel share, the MACs kept and the
verdict, and per profile how many models prune (something removed, verify PASS).

    .venv/bin/python benchmarks/zoo.py            # writes the tables into benchmarks/README.md
    .venv/bin/python benchmarks/zoo.py --only resnet_ts --no-latency --profiles avx512
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.append(str(ROOT / "benchmarks"))  # for _readme; after tests/, whose zoo.py this folder shadows

from _readme import replace_block  # noqa: E402
from zoo import ZooEntry, zoo_entries  # noqa: E402

from onnxprune.api import analyse, prune  # noqa: E402
from onnxprune.errors import OnnxPruneError  # noqa: E402
from onnxprune.graph.dependency import DependencyGraph  # noqa: E402
from onnxprune.io.inputs import random_inputs  # noqa: E402
from onnxprune.io.runtime import run  # noqa: E402
from onnxprune.measure.bench import interleaved_latency  # noqa: E402
from onnxprune.measure.model_stats import model_stats  # noqa: E402
from onnxprune.planning.cpu_profile import CPU_ENV, PROFILES, ort_cpu_profile  # noqa: E402

RATIO = 0.3
BEGIN, END = "<!-- zoo:begin -->", "<!-- zoo:end -->"
DEFAULT = "default"  # this machine's profile, from /proc/cpuinfo (ONNXPRUNE_CPU unset)


@dataclass
class Outcome:
    """One model pruned at RATIO under one CPU profile."""

    channels: float | None = None  # achieved share of the prunable channels
    macs_kept: float | None = None
    params_kept: float | None = None
    verify: str = "-"
    seconds: float = 0.0
    pruned: object = None  # the pruned model (for the latency of the default profile)

    @property
    def passed(self) -> bool:
        return self.verify.startswith("PASS") and bool(self.channels)

    def cell(self) -> str:
        if self.channels is None:
            return self.verify
        return f"{self.channels:.2f} / {self.macs_kept:.2f} / {self.verify.split()[0]}"


@dataclass
class Row:
    name: str
    groups: str = "-"
    latency: str = "-"
    onnxsim_macs: str = "-"
    onnxsim_note: str = ""
    runs: dict[str, Outcome] = field(default_factory=dict)  # profile -> outcome

    def cells(self, profile: str) -> list[str]:
        o = self.runs.get(profile, Outcome())
        num = (lambda v: "-" if v is None else f"{v:.2f}")  # noqa: E731
        channels = "-" if o.channels is None else f"{RATIO:.2f} → {o.channels:.2f}"
        return [self.name, self.groups, channels, num(o.params_kept), num(o.macs_kept), o.verify,
                f"{o.seconds:.1f}" if o.channels is not None else "-", self.latency, self.onnxsim_macs,
                self.onnxsim_note]


def _out_shapes(model: onnx.ModelProto, entry: ZooEntry) -> dict[str, tuple[int, ...]]:
    return {k: v.shape for k, v in run(model, random_inputs(model, shapes=entry.shapes)).items()}


def forced(profile: str) -> None:
    """Make `--round-to auto` mean `profile` (DEFAULT: this machine's /proc/cpuinfo)."""
    if profile == DEFAULT:
        os.environ.pop(CPU_ENV, None)
    else:
        os.environ[CPU_ENV] = profile


def ours(entry: ZooEntry, dg: DependencyGraph, profile: str) -> Outcome:
    """Prune at RATIO with round_to "auto" under `profile`, verified."""
    forced(profile)
    out = Outcome()
    t0 = time.perf_counter()
    try:
        result = prune(dg.model, ratio=RATIO, round_to="auto", verify=True, shapes=entry.shapes, dg=dg)
    except OnnxPruneError as exc:
        out.verify = f"declined: {str(exc)[:80]}"
        return out
    out.seconds = time.perf_counter() - t0
    before = model_stats(onnx.load(str(entry.path)), shapes=entry.shapes)
    after = model_stats(result.model, shapes=entry.shapes)
    removed, prunable = result.channels
    out.channels = removed / max(prunable, 1)
    out.params_kept = after.params / before.params
    out.macs_kept = after.macs / before.macs if before.macs else None
    assert result.verify is not None
    out.verify = f"PASS {result.verify.max_rel_error:.0e}"
    out.pruned = result.model
    return out


def latency_of(entry: ZooEntry, row: Row, outcome: Outcome, *, repeat: int) -> None:
    if outcome.pruned is None:
        return
    ab = interleaved_latency(str(entry.path), outcome.pruned, batch=1, warmup=3, repeat=repeat, shapes=entry.shapes)
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


def summary(rows: list[Row], profile: str) -> str:
    """'44/45 models (97.8 %) prune with verify PASS; channels removed 0.02–0.30 (median 0.28)'."""
    runs = [r.runs[profile] for r in rows if profile in r.runs]
    passed = [o for o in runs if o.passed]
    shares = sorted(o.channels for o in passed if o.channels is not None)
    spread = "" if not shares else (f"; channels removed {shares[0]:.2f}–{shares[-1]:.2f} "
                                    f"(median {shares[len(shares) // 2]:.2f})")
    return (f"{len(passed)}/{len(runs)} models ({100 * len(passed) / max(len(runs), 1):.1f} %) prune with "
            f"verify PASS{spread}")


def main_table(rows: list[Row], profile: str) -> str:
    head = ["model", "groups found/prunable/blocked", "channels removed (requested → achieved)", "params kept",
            "MACs kept", "verify (max rel err)", "prune s", "ORT latency orig → pruned (speedup)",
            "onnxsim MACs kept", "onnxsim"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r.cells(profile)) + " |" for r in rows]
    ours_reduced = sum(1 for r in rows if (r.runs.get(profile) or Outcome()).macs_kept not in (None,)
                       and (r.runs[profile].macs_kept or 1.0) < 1.0)
    sim_reduced = sum(1 for r in rows if r.onnxsim_macs not in ("-",) and float(r.onnxsim_macs) < 0.999)
    lines += ["", f"MACs reduced at R={RATIO}: onnxprune {ours_reduced}/{len(rows)} models, "
                  f"onnxsim {sim_reduced}/{len(rows)} models. onnxprune: {summary(rows, profile)}."]
    return "\n".join(lines)


def coverage_table(rows: list[Row], profiles: list[str]) -> str:
    head = ["model", *(f"{p}: channels / MACs kept / verify" for p in profiles)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join([r.name, *(r.runs[p].cell() if p in r.runs else "-" for p in profiles)]) + " |"
              for r in rows]
    lines.append("")
    lines += [f"- {p}: {summary(rows, p)}." for p in profiles]
    return "\n".join(lines)


def write_readme(text: str, command: str) -> None:
    replace_block(ROOT / "benchmarks" / "README.md", BEGIN, END,
                  f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {_cpus()} CPUs "
                  f"({_machine()}), Python {platform.python_version()}, with `{command}`.\n\n{text}",
                  "Structured pruning over the zoo (`benchmarks/zoo.py`)")


def _machine() -> str:
    forced(DEFAULT)
    return ort_cpu_profile().describe()


def _cpus() -> int:
    return os.cpu_count() or 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--no-latency", action="store_true")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--profiles", nargs="*", default=[DEFAULT, *PROFILES], choices=[DEFAULT, *PROFILES],
                    help="CPU profiles to prune under; the first one fills the main table (latency, onnxsim)")
    args = ap.parse_args()
    rows: list[Row] = []
    first = args.profiles[0]
    for entry in zoo_entries():
        if args.only and entry.name not in args.only:
            continue
        row = Row(entry.name)
        try:
            dg = analyse(str(entry.path), shapes=entry.shapes)
            row.groups = f"{len(dg.groups)}/{len(dg.prunable)}/{sum(1 for g in dg.groups if g.blocked)}"
            for profile in args.profiles:
                row.runs[profile] = ours(entry, dg, profile)
            if not args.no_latency:
                latency_of(entry, row, row.runs[first], repeat=args.repeat)
        except Exception as exc:  # noqa: BLE001 - a benchmark reports, it does not stop
            row.runs.setdefault(first, Outcome(verify=f"ERROR {type(exc).__name__}: {str(exc)[:60]}"))
            traceback.print_exc()
        for o in row.runs.values():
            o.pruned = None  # the latency is measured: free the model
        onnxsim_side(entry, row)
        print(" | ".join([*row.cells(first), *(f"{p}: {o.cell()}" for p, o in row.runs.items())]), flush=True)
        rows.append(row)
    forced(DEFAULT)
    text = (f"### `--round-to auto` on this machine ({first})\n\n{main_table(rows, first)}\n\n"
            f"### Coverage under each CPU profile (`ONNXPRUNE_CPU`), R={RATIO}\n\n"
            f"Each cell: share of the prunable channels removed (requested {RATIO:.2f}) / MACs kept / oracle.\n\n"
            f"{coverage_table(rows, args.profiles)}")
    print(text)
    if not args.no_write and not args.only:
        write_readme(text, "make bench  (.venv/bin/python benchmarks/zoo.py)")


if __name__ == "__main__":
    main()
