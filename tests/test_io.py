"""The I/O layer: atomic writes, validation before rename, external data for large models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxprune.io as io
from onnxprune.api import prune
from onnxprune.errors import OnnxPruneError
from onnxprune.inputs import random_inputs
from onnxprune.runtime import run

RESNET = Path(__file__).resolve().parent.parent / "models" / "zoo" / "resnet_ts.onnx"


def test_save_is_atomic_and_validated(tmp_path: Path) -> None:
    bad = helper.make_model(helper.make_graph(
        [helper.make_node("NoSuchOp", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])]))
    out = tmp_path / "bad.onnx"
    with pytest.raises(OnnxPruneError, match="fails the ONNX checker"):
        io.save_model(bad, out)
    assert list(tmp_path.iterdir()) == [], "nothing half-written may be left behind"


def test_output_folder_must_exist(tmp_path: Path) -> None:
    with pytest.raises(OnnxPruneError, match="does not exist"):
        io.save_model(onnx.load(str(RESNET)), tmp_path / "missing" / "m.onnx")


def test_large_models_go_through_external_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the threshold lowered, the whole pipeline takes the >2 GB path on a small model."""
    monkeypatch.setattr(io, "EXTERNAL_DATA_THRESHOLD", 10_000)
    src = tmp_path / "src.onnx"
    io.save_model(onnx.load(str(RESNET)), src)
    assert (tmp_path / "src.onnx.data").exists()
    assert src.stat().st_size < 100_000, "weights must live in the .data file"
    model = io.load_model(src)
    assert io.is_large(model)
    result = prune(model, ratio=0.3, verify=True)
    assert result.verify is not None and result.verify.ok
    out = tmp_path / "out.onnx"
    result.save(out)
    assert (tmp_path / "out.onnx.data").exists()
    reloaded = io.load_model(out)
    feed = random_inputs(reloaded)
    assert run(reloaded, feed)["output"].shape == run(model, feed)["output"].shape
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".onnxprune-")] == []


def test_missing_external_data_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(io, "EXTERNAL_DATA_THRESHOLD", 10_000)
    src = tmp_path / "src.onnx"
    io.save_model(onnx.load(str(RESNET)), src)
    (tmp_path / "src.onnx.data").unlink()
    with pytest.raises(OnnxPruneError) as err:
        io.load_model(src)
    assert "\n" not in str(err.value)


def test_loaded_weights_round_trip(tmp_path: Path) -> None:
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    m = helper.make_model(helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], [numpy_helper.from_array(w, "w")]))
    io.save_model(m, tmp_path / "m.onnx")
    back = io.load_model(tmp_path / "m.onnx")
    assert np.array_equal(numpy_helper.to_array(back.graph.initializer[0]), w)
