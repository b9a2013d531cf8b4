"""Helpers shared by the scripts in models/transformers/ (needs only onnx + numpy, so the TF venv can use it).

The manifest (``manifest.json`` next to this file) lists every committed model. Each script writes
its own entries through :func:`update_manifest`, which replaces the entries it owns and keeps the rest.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.defs
import onnxruntime as ort

HERE = Path(__file__).resolve().parent
MANIFEST = HERE / "manifest.json"
RTOL = 1e-3
ATOL = 1e-4


def _dims(vi: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in vi.type.tensor_type.shape.dim]


def _dtype(vi: onnx.ValueInfoProto) -> str:
    return onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type).name


def custom_ops(model: onnx.ModelProto) -> dict[str, list[str]]:
    """Ops outside the standard ONNX opset, by domain. An op in the default domain that ONNX does not
    define (ORT's SimplifiedLayerNormalization) is listed under "ai.onnx"."""
    found: dict[str, set[str]] = {}
    for node in model.graph.node:
        domain = node.domain or "ai.onnx"
        if domain == "ai.onnx" and onnx.defs.has(node.op_type):
            continue
        found.setdefault(domain, set()).add(node.op_type)
    return {d: sorted(ops) for d, ops in sorted(found.items())}


def checker_status(model: onnx.ModelProto) -> str:
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        return "fails: " + str(exc).strip().splitlines()[0][:200]
    return "ok"


def describe(path: Path, feeds: dict[str, dict[str, Any]], dims: dict[str, int]) -> dict[str, Any]:
    """Manifest fields read from the file; ``feeds`` maps each graph input to its recipe."""
    model = onnx.load(str(path))
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    missing = {i.name for i in inputs} ^ set(feeds)
    assert not missing, f"{path.name}: feed recipes do not match the graph inputs: {sorted(missing)}"
    opsets = {(o.domain or "ai.onnx"): o.version for o in model.opset_import}
    named = {d for vi in (*inputs, *model.graph.output) for d in _dims(vi) if isinstance(d, str)}
    unset = {d for i in inputs for d in _dims(i) if isinstance(d, str)} - set(dims)
    assert not unset, f"{path.name}: no value for the dynamic input dims {sorted(unset)}"
    dims = {k: v for k, v in dims.items() if k in named}
    return {
        "file": path.name,
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "opset": opsets["ai.onnx"],
        "opset_imports": dict(sorted(opsets.items())),
        "ir_version": model.ir_version,
        "onnx_checker": checker_status(model),
        "inputs": [{"name": i.name, "shape": _dims(i), "dtype": _dtype(i), "feed": feeds[i.name]} for i in inputs],
        "outputs": [{"name": o.name, "shape": _dims(o), "dtype": _dtype(o)} for o in model.graph.output],
        "dims": dims,
        "custom_ops": custom_ops(model),
        "op_types": sorted({f"{n.domain}::{n.op_type}" if n.domain else n.op_type for n in model.graph.node}),
        "nodes": len(model.graph.node),
        "size_bytes": path.stat().st_size,
    }


def make_feeds(inputs: list[dict[str, Any]], dims: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    """Valid feeds from manifest input recipes (tests/test_transformer_models.py uses this too)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in inputs:
        shape = tuple(dims[d] if isinstance(d, str) else d for d in spec["shape"])
        dtype = np.dtype(spec["dtype"])
        fill = spec["feed"]["fill"]
        if fill == "token_ids":
            arr = rng.integers(0, spec["feed"]["high"], size=shape)
        elif fill == "ones":
            arr = np.ones(shape)
        elif fill == "zeros":
            arr = np.zeros(shape)
        elif fill == "positions":
            arr = np.broadcast_to(np.arange(shape[-1]), shape)
        elif fill == "normal":
            arr = rng.standard_normal(shape)
        elif fill == "uniform":
            arr = rng.uniform(spec["feed"]["low"], spec["feed"]["high"], size=shape)
        else:
            raise ValueError(f"unknown feed recipe {fill!r} for input {spec['name']}")
        feeds[spec["name"]] = np.ascontiguousarray(arr, dtype=dtype)
    return feeds


def assert_close(name: str, got: list[np.ndarray], want: list[np.ndarray], *, rtol: float = RTOL, atol: float = ATOL) -> None:
    assert len(got) == len(want), (name, len(got), len(want))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(w, np.float32), rtol=rtol, atol=atol, err_msg=name)


def update_manifest(entries: list[dict[str, Any]], skipped: list[dict[str, str]], *, owner: str, info: dict[str, Any],
                    archs: set[str] | None = None) -> None:
    """Replace the entries written by ``owner`` (a script name), only those of ``archs`` if given, and
    keep the others; atomic write."""
    old: dict[str, Any] = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {}

    def replaced(e: dict[str, Any]) -> bool:
        return e.get("generator") == owner and (archs is None or e["arch"] in archs)

    keep = [e for e in old.get("models", []) if not replaced(e)]
    keep_skipped = [s for s in old.get("skipped", []) if not replaced(s)]
    generators = {**old.get("generators", {}), owner: info}
    manifest = {
        "note": (
            "string entries in a shape are dynamic dims; 'dims' gives the values to use for them. "
            "'feed' says what each input holds: token_ids = integers in [0, high); ones / zeros; "
            "positions = 0..n-1 along the last axis; normal = standard normal; uniform = U[low, high)."
        ),
        "generators": dict(sorted(generators.items())),
        "models": sorted(keep + [{**e, "generator": owner} for e in entries], key=lambda e: e["name"]),
        "skipped": sorted(keep_skipped + [{**s, "generator": owner} for s in skipped], key=lambda s: (s["arch"], s["variant"])),
    }
    tmp = MANIFEST.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, MANIFEST)


def session(path: Path) -> ort.InferenceSession:
    """CPU session with graph optimisation off, so what runs is the graph as stored."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def lm_perplexity(sess: ort.InferenceSession, input_ids: np.ndarray, *, batch: int = 32) -> float:
    """exp(mean next-byte cross-entropy) of an ONNX LM (input ``input_ids`` -> first output logits)."""
    total, count = 0.0, 0
    for start in range(0, len(input_ids), batch):
        ids = input_ids[start : start + batch]
        logits = sess.run(None, {"input_ids": ids})[0][:, :-1].astype(np.float64)
        logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
        picked = np.take_along_axis(logits, ids[:, 1:, None], axis=-1)[..., 0]
        total += float((logz - picked).sum())
        count += picked.size
    return float(np.exp(total / count))


DIGITS_TEST = HERE.parent / "digits" / "test.npz"


def heldout_perplexity(sess: ort.InferenceSession, *, windows: int = 64) -> float:
    """lm_llama's held-out measure: perplexity on the first `windows` windows of lm_heldout.npz."""
    ids = np.load(HERE / "lm_heldout.npz")["input_ids"][:windows]
    return float(lm_perplexity(sess, ids, batch=16))


def digits_accuracy(sess: ort.InferenceSession, input_name: str) -> float:
    """Test accuracy (%) of a digits classifier (vit_digits, digits_resnet) on models/digits/test.npz."""
    test = np.load(DIGITS_TEST)
    logits = sess.run(None, {input_name: test["x"].astype(np.float32)})[0]
    return float(100.0 * (logits.argmax(1) == test["y"]).mean())
