"""onnxprune as an Olive pass: docs/olive_prune_quantize.json prunes with OnnxPrune, then quantizes with
Olive's own OnnxStaticQuantization on onnxprune's calibration batches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxprune.deploy.qdq import int8_layers
from onnxprune.io.runtime import run
from onnxprune.measure.model_stats import model_stats

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "models" / "digits"


def test_olive_workflow_prunes_then_quantizes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLIVE_DISABLE_TELEMETRY", "1")
    pytest.importorskip("olive", reason="Olive is not installed (pip install 'onnxprune[olive]')")
    from olive.workflows import run as olive_run

    from onnxprune.adapters.olive import package_config

    config = json.loads((ROOT / "docs" / "olive_prune_quantize.json").read_text())
    monkeypatch.chdir(ROOT)  # the example's paths are relative to the repository
    config.update(output_dir=str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"))
    olive_run(config, package_config=package_config())
    out = onnx.load(str(tmp_path / "out" / "model.onnx"))
    dense = onnx.load(str(DIGITS / "digits_resnet.onnx"))
    shapes = {"input": (1, 1, 8, 8)}
    kept = model_stats(out, shapes=shapes).macs / model_stats(dense, shapes=shapes).macs
    assert 0.45 < kept < 0.56  # OnnxPrune ran (target_macs 0.5, within channel granularity)
    assert len(int8_layers(out)) == 14  # Olive's quantizer ran after it
    test = np.load(DIGITS / "test.npz")
    acc = float((run(out, {"input": test["x"]})["logits"].argmax(1) == test["y"]).mean())
    assert acc >= 0.985, acc
