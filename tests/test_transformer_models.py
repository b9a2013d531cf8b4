"""Every model in models/transformers/ matches its manifest entry and runs in onnxruntime on feeds
built from the manifest's input recipes; the trained models still score what the manifest records."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

TRANSFORMERS_DIR = Path(__file__).resolve().parent.parent / "models" / "transformers"
sys.path.insert(0, str(TRANSFORMERS_DIR))
from zookit import MANIFEST, custom_ops, lm_perplexity, make_feeds, session  # noqa: E402

MANIFEST_DATA: dict[str, Any] = json.loads(MANIFEST.read_text())
ENTRIES: list[dict[str, Any]] = MANIFEST_DATA["models"]
BY_NAME = {e["name"]: e for e in ENTRIES}
DIGITS_TEST = TRANSFORMERS_DIR.parent / "digits" / "test.npz"


def test_manifest_lists_every_file() -> None:
    assert {e["file"] for e in ENTRIES} == {p.name for p in TRANSFORMERS_DIR.glob("*.onnx")}
    assert len(BY_NAME) == len(ENTRIES), "duplicate names"
    assert sum(p.stat().st_size for p in TRANSFORMERS_DIR.glob("*.onnx")) < 15_000_000


def test_every_arch_has_both_exporters_or_a_recorded_skip() -> None:
    done = {(e["arch"], e["variant"]) for e in ENTRIES} | {(s["arch"], s["variant"]) for s in MANIFEST_DATA["skipped"]}
    for arch in ("bert", "gpt2", "llama", "vit"):
        assert {(arch, "torchscript"), (arch, "dynamo"), (arch, "ort-fused")} <= done, arch
    assert {("llama", "genai"), ("bert", "tf2onnx")} <= done


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["name"] for e in ENTRIES])
def test_model_runs_on_its_feed_recipe(entry: dict[str, Any]) -> None:
    path = TRANSFORMERS_DIR / entry["file"]
    assert path.stat().st_size == entry["size_bytes"], "manifest is stale: re-run the script that wrote this entry"
    model = onnx.load(str(path))
    assert custom_ops(model) == entry["custom_ops"]
    if entry["onnx_checker"] == "ok":
        onnx.checker.check_model(model, full_check=True)
    else:  # e.g. SimplifiedLayerNormalization in the default domain: the manifest must say so truthfully
        with pytest.raises(onnx.checker.ValidationError):
            onnx.checker.check_model(model, full_check=True)
    sess = session(path)
    assert [o.name for o in sess.get_outputs()] == [o["name"] for o in entry["outputs"]]
    outputs = sess.run(None, make_feeds(entry["inputs"], entry["dims"]))
    for out, spec in zip(outputs, entry["outputs"], strict=True):
        want = [entry["dims"].get(d) if isinstance(d, str) else d for d in spec["shape"]]
        assert all(w is None or w == got for w, got in zip(want, out.shape, strict=True)), (spec, out.shape)
        assert np.all(np.isfinite(out)), f"{entry['name']}: non-finite {spec['name']}"


def test_trained_lm_heldout_perplexity_matches_manifest() -> None:
    entry = BY_NAME["lm_llama"]
    heldout = np.load(TRANSFORMERS_DIR / entry["quality"]["heldout"])["input_ids"]
    assert heldout.dtype == np.int64 and heldout.shape == (128, 128)
    ppl = lm_perplexity(session(TRANSFORMERS_DIR / entry["file"]), heldout)
    assert ppl == pytest.approx(entry["quality"]["heldout_perplexity"], rel=1e-3)
    assert ppl < 8.0, "a trained byte-level model of Python source is far below uniform (256)"


def test_trained_vit_accuracy_matches_manifest() -> None:
    entry = BY_NAME["vit_digits"]
    data = np.load(DIGITS_TEST)
    logits = session(TRANSFORMERS_DIR / entry["file"]).run(["logits"], {"pixel_values": data["x"]})[0]
    acc = float((logits.argmax(1) == data["y"]).mean())
    assert abs(acc - entry["quality"]["test_accuracy"]) <= 1 / len(data["y"])
