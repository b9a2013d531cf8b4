"""Sparsity on the trained digits model keeps its test accuracy (measured numbers in the docs).

Measured (ORT, 360 test images, calib.npz at batch 64): dense 100 %; 2:4 SparseGPT one-shot without
re-fit 99.72 %; 50 % and 70 % magnitude + re-fit (layer by layer) 100.00 %; without re-fit 50 % Wanda 84.17 %
vs magnitude 70.83 %.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxprune.calib.source import CalibConfig
from onnxprune.io import runtime
from onnxprune.passes.sparsify import sparsify
from onnxprune.sparsity.compliance import nm_report, report_json

DIGITS = Path(__file__).resolve().parents[1] / "models" / "digits"
pytestmark = pytest.mark.skipif(not (DIGITS / "digits_resnet.onnx").exists(), reason="digits model not built")


def accuracy(model: onnx.ModelProto) -> float:
    d = np.load(DIGITS / "test.npz")
    logits = runtime.run(model, {"input": d["x"]})["logits"]
    return float((logits.argmax(1) == d["y"]).mean())


@pytest.fixture(scope="module")
def dense() -> onnx.ModelProto:
    model = onnx.load(str(DIGITS / "digits_resnet.onnx"))
    assert accuracy(model) >= 0.99
    return model


CALIB = CalibConfig(path=DIGITS / "calib.npz", batch=64)


def test_digits_2_4_sparsegpt_keeps_accuracy(dense: onnx.ModelProto) -> None:
    res = sparsify(dense, pattern=(2, 4), method="sparsegpt", sequential=False, refit=False, calibration=CALIB)
    rows = nm_report(res.model)
    # Every weight but the 1-channel stem is 2:4 on the TensorRT axis.
    assert [r.nm_compliant for r in rows] == [False] + [True] * (len(rows) - 1)
    assert accuracy(res.model) >= 0.99  # measured 0.9972


def test_digits_70_percent_magnitude_with_refit_keeps_accuracy(dense: onnx.ModelProto) -> None:
    # 70 % rather than 50 % (measured 1.0000 too) because its re-fit solves are 4x cheaper.
    res = sparsify(dense, sparsity=0.7, method="magnitude", refit=True, calibration=CALIB)
    assert report_json(nm_report(res.model))["total_sparsity"] == pytest.approx(0.7, abs=0.005)
    assert accuracy(res.model) >= 0.99  # measured 1.0000 (0.1833 without the re-fit)


def test_digits_wanda_beats_magnitude_without_refit(dense: onnx.ModelProto) -> None:
    acc = {m: accuracy(sparsify(dense, sparsity=0.5, method=m, refit=False, calibration=CALIB).model)
           for m in ("magnitude", "wanda")}
    assert acc["wanda"] >= acc["magnitude"] + 0.05, acc  # measured 0.8417 vs 0.7083
