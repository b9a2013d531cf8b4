"""Where the time goes after structured pruning: ONNX Runtime's per-node kernel times, dense vs pruned.

The model is pruned to `--target-macs` (l2, uniform, `--round-to auto`, no reconstruction: the
shapes are what matter), both models run `--runs` times with ORT's profiler on (one intra-op
thread, graph optimisation on), and kernel times are summed per op type: the Conv kernels
(Conv, FusedConv, NchwcConv) against the rest, which does not shrink with MACs the same way
(elementwise ops scale with channels, about sqrt of the MAC ratio; fixed-size ops not at all).
The "ceiling" is the speedup with every Conv kernel at 1 / MACs kept and the rest as measured.

    python benchmarks/profile_ops.py models/real/yolov8n_320n.onnx --shape images:1x3x320x320
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from onnxprune.api import prune
from onnxprune.measure.model_stats import model_stats

CONV_KERNELS = frozenset({"Conv", "FusedConv", "NchwcConv"})


def kernel_times(path: Path, feed: dict[str, np.ndarray], runs: int, folder: Path,
                 ) -> tuple[Counter[str], Counter[str]]:
    """Mean microseconds per run from ORT's profile: per op type, and per Conv kernel node."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.enable_profiling = True
    so.log_severity_level = 3
    so.profile_file_prefix = str(folder / path.stem)
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    for _ in range(runs):
        sess.run(None, feed)
    events = json.loads(Path(sess.end_profiling()).read_text())
    out: Counter[str] = Counter()
    nodes: Counter[str] = Counter()
    for e in events:
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"):
            out[e["args"]["op_name"]] += e["dur"] / runs
            if e["args"]["op_name"] in CONV_KERNELS:
                nodes[str(e["name"]).removesuffix("_kernel_time")] += e["dur"] / runs
    return out, nodes


def parse_shape(text: str) -> tuple[str, tuple[int, ...]]:
    name, _, dims = text.rpartition(":")
    if not name or not dims:
        raise SystemExit(f"--shape {text!r}: expected NAME:1x3x224x224")
    return name, tuple(int(d) for d in dims.split("x"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--shape", required=True, help="input NAME:DIMS, e.g. images:1x3x320x320")
    ap.add_argument("--target-macs", type=float, default=0.5)
    ap.add_argument("--runs", type=int, default=150)
    ap.add_argument("--nodes", type=int, default=0, help="also list the N slowest dense Conv kernels")
    args = ap.parse_args()
    name, shape = parse_shape(args.shape)
    shapes = {name: shape}
    feed = {name: np.random.default_rng(0).random(shape, dtype=np.float32)}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        res = prune(onnx.load(str(args.model)), target_macs=args.target_macs, round_to="auto", shapes=shapes,
                    reconstruct=False)
        pruned = folder / "pruned.onnx"
        onnx.save(res.model, str(pruned))
        kept = model_stats(res.model, shapes=shapes).macs / model_stats(onnx.load(str(args.model)), shapes=shapes).macs
        (dense, dnodes), (small, pnodes) = (kernel_times(args.model, feed, args.runs, folder),
                                            kernel_times(pruned, feed, args.runs, folder))
    td, tp = sum(dense.values()), sum(small.values())
    cd = sum(v for k, v in dense.items() if k in CONV_KERNELS)
    cp = sum(v for k, v in small.items() if k in CONV_KERNELS)
    print(f"{args.model.name}: MACs kept {kept:.3f}; kernel time per run (us, 1 thread, {args.runs} runs)")
    print(f"  total  dense {td:8.0f}  pruned {tp:8.0f}  speedup {td / tp:.2f}")
    print(f"  conv   dense {cd:8.0f} ({cd / td:.0%})  pruned {cp:8.0f}  speedup {cd / max(cp, 1e-9):.2f}")
    print(f"  rest   dense {td - cd:8.0f} ({(td - cd) / td:.0%})  pruned {tp - cp:8.0f}  "
          f"speedup {(td - cd) / max(tp - cp, 1e-9):.2f}")
    print(f"  ceiling with conv at 1/MACs kept and the rest as measured: {td / (cd * kept + tp - cp):.2f} "
          f"(target 0.85/MACs kept = {0.85 / kept:.2f})")
    for op in sorted(set(dense) | set(small), key=lambda k: -dense.get(k, 0.0))[:12]:
        d, p = dense.get(op, 0.0), small.get(op, 0.0)
        print(f"  {op:20s} {d:8.0f} {p:8.0f}  {d / p if p else float('inf'):.2f}")
    if args.nodes:
        print("  Conv kernels (dense us, pruned us, speedup; '-': the pruned model runs it under another name)")
    for node, d in dnodes.most_common(args.nodes):
        p = pnodes.get(node)
        print(f"  {node[:60]:60s} {d:7.0f} " + (f"{p:7.0f}  {d / p:.2f}" if p else "      -"))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
