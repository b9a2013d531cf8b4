"""The fixed per-run cost of each zoo net, and the best speedup width pruning could then give.

Structured (width) pruning keeps every node: it shrinks tensors, not the graph. So the part of a
run that does not depend on tensor sizes (session and per-node dispatch, kernel setup) stays. Each
zoo architecture of `models/build_zoo.py` is exported at several input sizes s (same modules and
seeds as the zoo, dynamic batch), the dense model's median latency is measured at each (ONNX
Runtime CPU, graph optimisation on), and T(s) = F + V × s² is fitted on the sizes up to half the
target size. F is the fixed cost. Even if every size-dependent part fell exactly with the MACs, a
model keeping a fraction m of the MACs would run at most T / (F + m × (T − F)) times faster at
the target size; where that bound is below the project's target 0.85 / m, no width plan can meet
it on this host. Needs torch for the exports (`pip install -e '.[bench]'`).

    python benchmarks/fixed_cost.py                      # native zoo size (64) and 224, writes README
    python benchmarks/fixed_cost.py --only resnet --size 64 --no-write
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import latency as latency_bench  # noqa: E402
from _readme import replace_block  # noqa: E402

from onnxprune.io import runtime  # noqa: E402
from onnxprune.measure.bench import bench_feed  # noqa: E402

BEGIN, END = "<!-- fixed-cost:begin -->", "<!-- fixed-cost:end -->"
FIT_SIZES = (16, 24, 32, 48, 64, 96)
SIZES = (64, 224)
BATCHES = (1, 8)
ROUND_SECONDS = 0.08  # one burst of runs of one (size, batch)


def fit_fixed_cost(sizes: Sequence[int], times_ms: Sequence[float]) -> tuple[float, float]:
    """(F, V) of the least-squares line T = F + V × s² (F clipped at 0)."""
    if len(sizes) < 2 or len(sizes) != len(times_ms):
        raise ValueError("need at least two (size, time) pairs")
    slope, intercept = np.polyfit(np.square(np.asarray(sizes, float)), np.asarray(times_ms, float), 1)
    return max(float(intercept), 0.0), float(slope)


def speedup_bound(total_ms: float, fixed_ms: float, macs_kept: float) -> float:
    """Best speedup when everything but the fixed cost falls with the MACs kept."""
    fixed = min(max(fixed_ms, 0.0), total_ms)
    return total_ms / (fixed + macs_kept * (total_ms - fixed))


def measure(arch: str, sizes: Sequence[int], folder: Path, *, threads: int, rounds: int,
            ) -> dict[tuple[int, int], float]:
    """Dense median ms per (size, batch); sizes the architecture cannot take are left out.

    The sizes are timed round-robin, `rounds` times a burst of about ROUND_SECONDS each, and each
    point is the median over its bursts' medians: drift on a shared host then moves all sizes alike
    instead of bending the fit."""
    sessions: dict[tuple[int, int], tuple[Any, dict[str, np.ndarray], int]] = {}
    for s in sizes:
        try:
            (model,) = latency_bench.deploy_models([arch], s, folder)
        except Exception as exc:  # noqa: BLE001 - e.g. a neck whose concat needs s % 32 == 0
            print(f"{arch} at {s}: not exported ({str(exc).splitlines()[0][:80]})", file=sys.stderr)
            continue
        proto = onnx.load(str(model.path))
        for b in BATCHES:
            sess = runtime.session(str(model.path), optimize=True, threads=threads)
            feed = bench_feed(proto, batch=b)
            one = min(_burst(sess, feed, 3))
            sessions[(s, b)] = (sess, feed, max(3, int(ROUND_SECONDS / max(one, 1e-6))))
    medians: dict[tuple[int, int], list[float]] = {k: [] for k in sessions}
    for _ in range(rounds):
        for key, (sess, feed, n) in sessions.items():
            medians[key].append(float(np.median(_burst(sess, feed, n))))
    return {k: 1e3 * float(np.median(v)) for k, v in medians.items()}


def _burst(sess: Any, feed: dict[str, np.ndarray], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        sess.run(None, feed)
        out.append(time.perf_counter() - t0)
    return out


def rows_for(arch: str, times: dict[tuple[int, int], float], size: int, macs_kept: float) -> list[list[str]]:
    rows = []
    target = latency_bench.EFFICIENCY / macs_kept
    for b in BATCHES:
        fit = [s for s in FIT_SIZES if s <= size // 2 and (s, b) in times]
        if len(fit) < 2 or (size, b) not in times:
            continue
        fixed, _ = fit_fixed_cost(fit, [times[(s, b)] for s in fit])
        total = times[(size, b)]
        bound = speedup_bound(total, fixed, macs_kept)
        verdict = "**below target**: unreachable by width pruning" if bound < target else "not bounded by it"
        rows.append([f"{arch}@{size}", str(b), " / ".join(f"{s}: {times[(s, b)]:.3f}" for s in fit),
                     f"{total:.3f}", f"{fixed:.3f} ({fixed / total:.0%})", f"{bound:.2f}×", f"{target:.2f}×", verdict])
    return rows


def table(rows: list[list[str]], threads: int) -> str:
    head = ["net@size", "batch", "dense ms at fit sizes", "dense ms at size", "fixed cost F ms (share)",
            f"bound at {latency_bench.TARGET_MACS}× MACs", "target", "verdict"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return (f"ONNX Runtime CPU, {threads} intra-op thread(s), median over round-robin bursts (each point: the median of its bursts' medians); F from a "
            f"least-squares line in s² over the fit sizes (up to half the size).\n\n" + "\n".join(lines))


def write_block(text: str, command: str) -> None:
    env = f"Measured {time.strftime('%Y-%m-%d')} on {latency_bench.platform.machine()} ({latency_bench.cpu_name()})"
    replace_block(latency_bench.README, BEGIN, END, f"{env}, with\n\n    {command}\n\n{text}",
                  "Fixed cost per run (`benchmarks/fixed_cost.py`)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", help="zoo architecture (repeatable)")
    ap.add_argument("--size", type=int, action="append", help=f"target input size (repeatable; default {SIZES})")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=15, help="round-robin bursts per (size, batch)")
    ap.add_argument("--no-write", action="store_true", help="print only, leave benchmarks/README.md alone")
    args = ap.parse_args()
    sizes = tuple(args.size or SIZES)
    archs = [a for a in latency_bench.DEPLOY_ARCHS if not args.only or a in args.only]
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="onnxprune-fixed-") as tmp:
        for arch in archs:
            needed = sorted({*(s for s in FIT_SIZES if s <= max(sizes) // 2), *sizes})
            times = measure(arch, needed, Path(tmp), threads=args.threads, rounds=args.rounds)
            for size in sizes:
                rows += rows_for(arch, times, size, latency_bench.TARGET_MACS)
            print(f"{arch}: done", file=sys.stderr, flush=True)
    text = table(rows, args.threads)
    print(text)
    if not args.no_write:
        write_block(text, f"{latency_bench._python()} benchmarks/fixed_cost.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
