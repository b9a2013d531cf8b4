"""Reconstruction on the trained digits model: accuracy floors at 0.5x / 0.25x / 0.15x MACs, API and CLI wiring."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from onnxprune.api import analyse, prune
from onnxprune.calib.source import CalibConfig
from onnxprune.cli import main
from onnxprune.io import runtime
from onnxprune.measure.model_stats import model_stats

DIGITS = Path(__file__).resolve().parents[1] / "models" / "digits"
MODEL, CALIB = DIGITS / "digits_resnet.onnx", DIGITS / "calib.npz"

pytestmark = pytest.mark.skipif(not MODEL.exists(), reason="digits model not built")


def accuracy(model: onnx.ModelProto) -> float:
    d = np.load(DIGITS / "test.npz")
    logits = runtime.run(model, {"input": d["x"]})["logits"]
    return float((logits.argmax(1) == d["y"]).mean())


# Measured (l1, 128 calibration samples, damping chosen on held-out samples): 0.50x -> 100 %,
# 0.25x -> 99.17 %, 0.15x -> 98.06 %; without reconstruction all three are at chance (~10 %).
FLOORS = [(0.5, 0.99), (0.25, 0.98), (0.15, 0.95)]


def test_accuracy_floors_with_reconstruction() -> None:
    model = onnx.load(str(MODEL))
    dg = analyse(model)
    dense_macs = model_stats(dg.model).macs
    cal = CalibConfig(path=CALIB, samples=128, batch=128)
    for frac, floor in FLOORS:
        res = prune(model, target_macs=frac, criterion="l1", dg=dg, calibration=cal, verify=True)
        assert res.verify is not None and res.verify.ok  # the oracle ran on the un-fitted structure
        rec = res.reconstruction
        assert rec is not None and len(rec.layers) == 13 and rec.fitted >= 10
        assert all(lf.fitted or "held-out" in lf.note for lf in rec.layers)
        kept = model_stats(res.model).macs / dense_macs
        assert abs(kept - frac) <= 0.03 * frac + 1e-9, kept
        acc = accuracy(res.model)
        assert acc >= floor, (frac, acc)
        after = res.reconstruction.after["logits"]
        assert after.rel_error < res.reconstruction.before["logits"].rel_error
        assert after.cosine > 0.98  # on the calibration samples, which the held-out choice does not over-fit


def test_api_default_is_on_with_data_and_off_without(tmp_path: Path) -> None:
    model = onnx.load(str(MODEL))
    dg = analyse(model)
    small = tmp_path / "small.npz"
    np.savez(small, input=np.load(CALIB)["input"][:32])
    cal = CalibConfig(path=small, batch=32)
    assert prune(model, ratio=0.3, dg=dg).reconstruction is None
    assert prune(model, ratio=0.3, dg=dg, calibration=CalibConfig()).reconstruction is None  # random inputs
    assert prune(model, ratio=0.3, dg=dg, calibration=cal, reconstruct=False).reconstruction is None
    res = prune(model, ratio=0.3, dg=dg, calibration=str(small))
    assert res.reconstruction is not None and res.reconstruction.fitted > 0
    assert any(n.startswith("reconstruct: re-fitted") for n in res.notes)


def _invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_cli_calib_reconstructs_and_no_reconstruct_does_not(tmp_path: Path) -> None:
    out, report = tmp_path / "r.onnx", tmp_path / "r.json"
    common = ["--ratio", "0.5", "--criterion", "l1", "--calib", str(CALIB), "--calib-samples", "128",
              "--calib-batch", "128"]
    code, stdout, stderr = _invoke("prune", str(MODEL), "-o", str(out), *common, "--report", str(report))
    assert code == 0, stderr
    assert "verify PASS" in stdout and "reconstruct: re-fitted 13 of 13 layers" in stdout
    data = json.loads(report.read_text())["reconstruct"]
    assert data["fitted"] == 13 and data["outputs"]["logits"]["after"]["cosine"] > 0.99
    with_rec = accuracy(onnx.load(str(out)))

    out2, report2 = tmp_path / "n.onnx", tmp_path / "n.json"
    code, stdout, stderr = _invoke("prune", str(MODEL), "-o", str(out2), *common, "--no-reconstruct",
                                   "--report", str(report2))
    assert code == 0, stderr
    assert "reconstruct:" not in stdout
    assert json.loads(report2.read_text())["reconstruct"] is None
    assert with_rec >= 0.98 > 0.5 > accuracy(onnx.load(str(out2)))
