"""ORT-fused and GenAI transformer files (models/transformers): onnxprune against onnxsim 0.8.1's pruners.

For each file: onnxprune at --ratio 0.3 --round-to 1 --verify (l2), and onnxsim's
`apply_structured_pruning` (FFN channels) and `apply_attention_head_pruning` (heads) at sparsity 0.3.
Prints a markdown table: what each removed (heads left per attention op, weights whose shape
changed), params and MACs kept (onnxprune.measure.model_stats), whether the result runs in ONNX Runtime on the
manifest's feeds (models/transformers/zookit.make_feeds) and the cosine of its first output to the
dense model's. No torch needed.

    python benchmarks/fused.py [NAME ...]
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "models" / "transformers"))

from zookit import MANIFEST, make_feeds  # type: ignore[import-not-found]  # noqa: E402

from onnxprune.api import prune  # noqa: E402
from onnxprune.measure.model_stats import model_stats  # noqa: E402

NAMES = ("bert_ort_fused", "bert_ort_fused_mha", "gpt2_ort_fused", "vit_ort_fused", "llama_ort_fused",
         "llama_genai", "llama_genai_mha")
RATIO = 0.3
ATTENTION = ("Attention", "MultiHeadAttention", "GroupQueryAttention")


def _outputs(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 4
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return [np.asarray(o) for o in sess.run(None, feeds)]


def _heads(model: onnx.ModelProto) -> str:
    counts = [next((a.i for a in n.attribute if a.name == "num_heads"), 0) for n in model.graph.node
              if n.op_type in ATTENTION]
    return "/".join(map(str, counts)) or "—"


def _changed(dense: onnx.ModelProto, pruned: onnx.ModelProto) -> int:
    """Float weights read with another shape than the dense model's (a weight sliced for one reader is a copy)."""
    before = {t.name: tuple(t.dims) for t in dense.graph.initializer}
    readers = {x for n in pruned.graph.node for x in n.input}
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    return sum(1 for t in pruned.graph.initializer if t.name in readers and t.data_type in floats and
               before.get(t.name.split("__pruned")[0], tuple(t.dims)) != tuple(t.dims))


def row(name: str, tool: str, make: Callable[[], tuple[onnx.ModelProto, str]], dense: onnx.ModelProto,
        feeds: dict[str, np.ndarray], want: list[np.ndarray]) -> str:
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, note = make()
    except Exception as exc:  # noqa: BLE001 - a competitor's failure is a result
        return f"| {name} | {tool} | raises {type(exc).__name__}: {str(exc).splitlines()[0][:80]} | | | | | |"
    seconds = time.perf_counter() - start
    try:
        got = _outputs(model, feeds)
        runs = all(np.isfinite(g).all() and g.shape == w.shape for g, w in zip(got, want, strict=True))
        a, b = got[0].ravel().astype(np.float64), want[0].ravel().astype(np.float64)
        cosine = f"{float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))):.4f}"
        ran = "yes" if runs else "no (shapes or NaN)"
    except Exception as exc:  # noqa: BLE001
        ran, cosine = f"no: {str(exc).splitlines()[0].split('Status Message: ')[-1][:70]}", "—"
    base, st = model_stats(dense), model_stats(model)
    macs = f"{st.macs / base.macs:.1%}" if ran == "yes" else "—"  # stats need a model shapes can be inferred on
    return (f"| {name} | {tool} | heads {_heads(model)}, {_changed(dense, model)} weights resized{note} | "
            f"{st.params / base.params:.1%} | {macs} | {ran} | {cosine} | {seconds:.1f} |")


def main(names: list[str]) -> None:
    import onnxsim.pruning as sim  # a dev dependency

    entries = {e["name"]: e for e in json.loads(MANIFEST.read_text())["models"]}
    print("| file | tool | removed | params kept | MACs kept | runs in ORT | cosine (output 0) | s |")
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        entry = entries[name]
        path = ROOT / "models" / "transformers" / entry["file"]
        dense = onnx.load(str(path))
        feeds = make_feeds(entry["inputs"], entry["dims"])
        want = _outputs(dense, feeds)

        def ours(path: Path = path) -> tuple[onnx.ModelProto, str]:
            r = prune(str(path), ratio=RATIO, round_to=1, verify=True)
            assert r.verify is not None
            return r.model, f"; {r.channels[0]} of {r.channels[1]} prunable channels; oracle " + (
                "PASS" if r.verify.ok else "FAIL")

        print(row(name, "onnxprune", ours, dense, feeds, want))
        for fn in ("apply_structured_pruning", "apply_attention_head_pruning"):
            def theirs(fn: str = fn, path: Path = path) -> tuple[onnx.ModelProto, str]:
                return getattr(sim, fn)(onnx.load(str(path)), sparsity=RATIO), ""

            print(row(name, f"onnxsim {fn.removeprefix('apply_')}", theirs, dense, feeds, want))


if __name__ == "__main__":
    main(sys.argv[1:] or list(NAMES))
