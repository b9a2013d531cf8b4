"""Every zoo model loads, passes onnx.checker and runs in onnxruntime on random input."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from zoo import MANIFEST, ZOO_DIR, ZooEntry, entry_ids, random_inputs, zoo_entries

ENTRIES = zoo_entries()

EXPECTED_ARCHS = {
    "resnet", "mobilenetv2", "mobilenetv3", "efficientnet", "densenet", "inception", "shufflenetv2", "unet",
    "resnext", "yolov8", "audio1d", "mlp", "convnext", "transformer", "lstm", "vgg", "viewnet",
    "bert2", "bert3", "t5enc", "t5",
}  # fmt: skip


@pytest.mark.parametrize("entry", ENTRIES, ids=entry_ids(ENTRIES))
def test_zoo_model_loads_checks_and_runs(entry: ZooEntry) -> None:
    model = onnx.load(str(entry.path))
    onnx.checker.check_model(model)
    sess = ort.InferenceSession(str(entry.path), providers=["CPUExecutionProvider"])
    outputs = sess.run(None, random_inputs(entry))
    assert outputs, entry.name
    for out in outputs:
        assert np.all(np.isfinite(out)), f"{entry.name}: non-finite output"


def test_manifest_matches_zoo_dir() -> None:
    manifest = json.loads(MANIFEST.read_text())
    listed = {m["file"] for m in manifest["models"]}
    on_disk = {p.name for p in ZOO_DIR.glob("*.onnx")}
    assert listed == on_disk
    archs_ts = {m["arch"] for m in manifest["models"] if m["exporter"] == "torchscript"}
    assert archs_ts == EXPECTED_ARCHS
    archs_dynamo = {m["arch"] for m in manifest["models"] if m["exporter"] == "dynamo"}
    skipped = {s["arch"] for s in manifest["skipped"] if s["exporter"] == "dynamo"}
    assert archs_dynamo | skipped == EXPECTED_ARCHS


def test_zoo_kinds_present() -> None:
    kinds = {e.kind for e in ENTRIES}
    assert {"torch", "onnx-light"} <= kinds
    assert len({e.name for e in ENTRIES}) == len(ENTRIES), "duplicate entry names"
