"""Every transformer file of models/transformers: what onnxprune removes, and onnxsim 0.8.1 beside it.

Per file: onnxprune `prune` at --target-params P (default 0.7; `--heads auto`, l2, `--round-to`
1 by default since these files are narrow), verified by the oracle; onnxsim's
`apply_structured_pruning` (FFN channels) and `apply_attention_head_pruning` (heads) at sparsity
1 − P. For each result: what was removed per unit kind (whole heads / KV groups, head_dim
channels, other channels), `num_heads` of each fused attention op, params and MACs kept
(onnxprune.measure.model_stats), whether it runs in ONNX Runtime on the manifest's feeds and the
cosine of its first output to the dense one (random-init files: how much moved, not accuracy),
seconds to prune, and ORT CPU latency dense vs pruned (graph optimisation on, batch 1, runs
interleaved, median of per-pair ratios). Hidden width and depth are not removed yet (issue 21).
No torch needed.

    python benchmarks/transformers.py                  # all files; writes the table into benchmarks/README.md
    python benchmarks/transformers.py bert_ort_fused   # some files; prints only
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "models" / "transformers"))
sys.path.append(str(ROOT / "benchmarks"))

from _readme import replace_block  # noqa: E402
from zookit import MANIFEST, make_feeds  # type: ignore[import-not-found]  # noqa: E402

from onnxprune.api import prune  # noqa: E402
from onnxprune.errors import OnnxPruneError  # noqa: E402
from onnxprune.measure.bench import interleaved_latency  # noqa: E402
from onnxprune.measure.model_stats import model_stats  # noqa: E402

ATTENTION = ("Attention", "MultiHeadAttention", "GroupQueryAttention")
BEGIN, END = "<!-- transformers:begin -->", "<!-- transformers:end -->"
KIND_WORDS = {"head": "heads", "head_dim": "head_dim ch.", "channel": "channels"}


def _outputs(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 4
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return [np.asarray(o) for o in sess.run(None, feeds)]


def _heads(model: onnx.ModelProto) -> str:
    counts = [next((a.i for a in n.attribute if a.name == "num_heads"), 0) for n in model.graph.node
              if n.op_type in ATTENTION]
    return "/".join(map(str, counts))


def _ours(path: Path, keep: float, round_to: int) -> tuple[onnx.ModelProto, str]:
    r = prune(str(path), target_params=keep, round_to=round_to, verify=True)
    assert r.verify is not None
    removed: Counter[str] = Counter()
    for g in r.to_json()["groups"]:  # `removed` counts channels; a head is a slot of channels_per_slot
        removed[g["kind"]] += g["removed"] // (g["channels_per_slot"] if g["kind"] == "head" else 1)
    parts = [f"{n} {KIND_WORDS.get(k, k)}" for k, n in removed.items() if n]
    return r.model, ", ".join(parts or ["nothing"]) + "; oracle " + ("PASS" if r.verify.ok else "FAIL")


def row(name: str, tool: str, make: Callable[[], tuple[onnx.ModelProto, str]], dense: onnx.ModelProto,
        feeds: dict[str, np.ndarray], want: list[np.ndarray], *, latency: bool) -> str:
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, removed = make()
    except OnnxPruneError as exc:
        return f"| {name} | {tool} | refused: {str(exc).splitlines()[0][:90]} | | | | | | |"
    except Exception as exc:  # noqa: BLE001 - a competitor's failure is a result
        return f"| {name} | {tool} | raises {type(exc).__name__}: {str(exc).splitlines()[0][:80]} | | | | | | |"
    seconds = time.perf_counter() - start
    heads = _heads(model)
    removed = removed + (f"; num_heads {heads}" if heads else "")
    try:
        got = _outputs(model, feeds)
        runs = all(np.isfinite(g).all() and g.shape == w.shape for g, w in zip(got, want, strict=True))
        a, b = got[0].ravel().astype(np.float64), want[0].ravel().astype(np.float64)
        cosine = f"{float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))):.4f}"
        ran = "yes" if runs else "no (shapes or NaN)"
    except Exception as exc:  # noqa: BLE001
        return (f"| {name} | {tool} | {removed} | | | no: "
                f"{str(exc).splitlines()[0].split('Status Message: ')[-1][:70]} | | {seconds:.1f} | |")
    base, st = model_stats(dense), model_stats(model)
    macs = f"{st.macs / base.macs:.1%}" if base.macs else "—"
    speed = ""
    if latency and ran == "yes":
        ab = interleaved_latency(dense, model, feed=feeds, repeat=40)
        speed = f"{ab.a.median_ms:.2f} → {ab.b.median_ms:.2f} ms ({ab.speedup:.2f}×)"
    return (f"| {name} | {tool} | {removed} | {st.params / base.params:.1%} | {macs} | "
            f"{ran} | {cosine} | {seconds:.1f} | {speed} |")


def table(names: list[str], *, keep: float, round_to: int, latency: bool) -> list[str]:
    import onnxsim.pruning as sim  # a dev dependency

    entries = {e["name"]: e for e in json.loads(MANIFEST.read_text())["models"]}
    lines = ["| file | tool | removed | params kept | MACs kept | runs in ORT | cosine (output 0) | s | "
             "ORT latency dense → pruned |", "|---|---|---|---|---|---|---|---|---|"]
    for name in names:
        entry = entries[name]
        path = ROOT / "models" / "transformers" / entry["file"]
        dense = onnx.load(str(path))
        feeds = make_feeds(entry["inputs"], entry["dims"])
        want = _outputs(dense, feeds)
        lines.append(row(name, "onnxprune", lambda p=path: _ours(p, keep, round_to), dense, feeds, want,
                         latency=latency))
        print(lines[-1], flush=True)
        for fn in ("apply_structured_pruning", "apply_attention_head_pruning"):
            def theirs(fn: str = fn, path: Path = path) -> tuple[onnx.ModelProto, str]:
                return getattr(sim, fn)(onnx.load(str(path)), sparsity=round(1 - keep, 6)), "—"

            lines.append(row(name, f"onnxsim {fn.removeprefix('apply_')}", theirs, dense, feeds, want,
                             latency=latency))
            print(lines[-1], flush=True)
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="manifest names (default: every file)")
    ap.add_argument("--keep", type=float, default=0.7, help="params to keep (onnxprune --target-params)")
    ap.add_argument("--round-to", type=int, default=1)
    ap.add_argument("--no-latency", action="store_true")
    args = ap.parse_args(argv)
    every = [e["name"] for e in json.loads(MANIFEST.read_text())["models"]]
    names = args.names or every
    lines = table(names, keep=args.keep, round_to=args.round_to, latency=not args.no_latency)
    if args.names:
        return
    command = "    .venv/bin/python benchmarks/transformers.py" + (
        f" --keep {args.keep}" if args.keep != 0.7 else "") + (
        f" --round-to {args.round_to}" if args.round_to != 1 else "") + (" --no-latency" if args.no_latency else "")
    head = (f"Measured {time.strftime('%Y-%m-%d')} on {platform.processor() or platform.machine()} "
            f"(this repository's benchmark host), onnxruntime {ort.__version__}, with\n\n{command}\n")
    replace_block(ROOT / "benchmarks" / "README.md", BEGIN, END, head + "\n" + "\n".join(lines),
                  "Transformer files against onnxsim 0.8.1 (`benchmarks/transformers.py`)")


if __name__ == "__main__":
    main()
