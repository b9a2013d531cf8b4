"""Calibration readers: .npz, .npy, .npy folders, image folders, random fallback, bad inputs, CLI flags
(`CalibrationSource` itself: test_calibration_source.py)."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from onnxprune.calib.source import (
    CalibConfig,
    CalibrationWarning,
    ImageOptions,
    calibration_batches,
    file_stem_for,
)
from onnxprune.cli.calib_options import calib_options
from onnxprune.errors import OnnxPruneError


def model_with_inputs(*inputs: tuple[str, list[int | str]]) -> onnx.ModelProto:
    vis = [helper.make_tensor_value_info(n, TensorProto.FLOAT, dims) for n, dims in inputs]
    nodes = [helper.make_node("Identity", [n], [f"{file_stem_for(n)}_out"]) for n, _ in inputs]
    outs = [helper.make_tensor_value_info(f"{file_stem_for(n)}_out", TensorProto.FLOAT, None) for n, _ in inputs]
    return helper.make_model(helper.make_graph(nodes, "g", vis, outs), opset_imports=[helper.make_opsetid("", 17)])


IMG = model_with_inputs(("image", ["N", 3, 4, 5]))
TWO = model_with_inputs(("a", ["N", 2]), ("b:0", ["N", 3, 2]))


def test_npz_single_array_batches_and_limit(tmp_path: Path) -> None:
    data = np.arange(10 * 60, dtype=np.float64).reshape(10, 3, 4, 5)
    np.savez(tmp_path / "c.npz", whatever=data)
    batches = list(calibration_batches(IMG, CalibConfig(path=tmp_path / "c.npz", batch=4)))
    assert [b["image"].shape[0] for b in batches] == [4, 4, 2]
    assert batches[0]["image"].dtype == np.float32
    np.testing.assert_array_equal(np.concatenate([b["image"] for b in batches]), data.astype(np.float32))
    limited = list(calibration_batches(IMG, CalibConfig(path=tmp_path / "c.npz", batch=4, samples=5)))
    assert [b["image"].shape[0] for b in limited] == [4, 1]


def test_npz_keyed_multi_input(tmp_path: Path) -> None:
    np.savez(tmp_path / "c.npz", **{"a": np.ones((5, 2)), "b:0": np.zeros((5, 3, 2))})
    batches = list(calibration_batches(TWO, CalibConfig(path=tmp_path / "c.npz", batch=2)))
    assert [set(b) for b in batches] == [{"a", "b:0"}] * 3
    assert batches[-1]["b:0"].shape == (1, 3, 2)


def test_npz_bad_inputs(tmp_path: Path) -> None:
    np.savez(tmp_path / "keys.npz", a=np.ones((5, 2)), c=np.ones((5, 3, 2)))
    with pytest.raises(OnnxPruneError, match=r"no array for input\(s\) 'b:0'"):
        calibration_batches(TWO, tmp_path / "keys.npz")
    np.savez(tmp_path / "shape.npz", x=np.ones((5, 3, 4, 6)))
    with pytest.raises(OnnxPruneError, match=r"samples have shape \(3, 4, 6\), the model expects \(3, 4, 5\)"):
        list(calibration_batches(IMG, tmp_path / "shape.npz"))
    np.savez(tmp_path / "rank.npz", x=np.ones((5, 3)))
    with pytest.raises(OnnxPruneError, match="rank 2"):
        list(calibration_batches(IMG, tmp_path / "rank.npz"))
    np.savez(tmp_path / "count.npz", **{"a": np.ones((5, 2)), "b:0": np.zeros((4, 3, 2))})
    with pytest.raises(OnnxPruneError, match="different sample counts"):
        list(calibration_batches(TWO, tmp_path / "count.npz"))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(OnnxPruneError, match=r"not a readable \.npy/\.npz file"):
        calibration_batches(IMG, tmp_path / "junk.npz")
    with pytest.raises(OnnxPruneError, match="no such file"):
        calibration_batches(IMG, tmp_path / "missing.npz")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(OnnxPruneError, match="expected a .npz or .npy"):
        calibration_batches(IMG, tmp_path / "x.txt")


def test_npy_folder_single_samples_and_batches(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.save(tmp_path / "000.npy", rng.standard_normal((3, 4, 5)))  # one sample
    np.save(tmp_path / "001.npy", rng.standard_normal((4, 3, 4, 5)))  # a batch of 4
    batches = list(calibration_batches(IMG, CalibConfig(path=tmp_path, batch=3)))
    assert [b["image"].shape[0] for b in batches] == [3, 2]


def test_npy_folder_multi_input_naming(tmp_path: Path) -> None:
    for i in range(3):
        np.save(tmp_path / f"a__{i}.npy", np.full((2,), i, np.float32))
        np.save(tmp_path / f"b_0__{i}.npy", np.full((3, 2), i, np.float32))
    batches = list(calibration_batches(TWO, CalibConfig(path=tmp_path, batch=2)))
    assert batches[0]["a"][:, 0].tolist() == [0, 1]
    assert batches[1]["b:0"][0, 0, 0] == 2
    (tmp_path / "b_0__2.npy").unlink()
    with pytest.raises(OnnxPruneError, match="different numbers of files"):
        calibration_batches(TWO, tmp_path)


def test_npy_folder_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(OnnxPruneError, match="holds no .npy files or images"):
        calibration_batches(IMG, tmp_path)
    np.save(tmp_path / "a__0.npy", np.ones(2))
    with pytest.raises(OnnxPruneError, match=r"no b_0__\*.npy files"):
        calibration_batches(TWO, tmp_path)
    one = tmp_path / "one"
    one.mkdir()
    np.save(one / "0.npy", np.ones((2, 3, 4, 4)))
    with pytest.raises(OnnxPruneError, match="samples have shape"):
        list(calibration_batches(IMG, one))
    with pytest.raises(OnnxPruneError, match="single-input"):
        calibration_batches(TWO, one / "0.npy")


def _write_images(folder: Path, n: int) -> list[np.ndarray]:
    from PIL import Image

    rng = np.random.default_rng(0)
    arrays = []
    for i in range(n):
        arr = rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"img{i}.png")
        arrays.append(arr)
    return arrays


def test_image_folder_preprocessing(tmp_path: Path) -> None:
    arrays = _write_images(tmp_path, 3)
    batches = list(calibration_batches(IMG, CalibConfig(path=tmp_path, batch=2)))
    x = np.concatenate([b["image"] for b in batches])
    assert x.shape == (3, 3, 4, 5)
    np.testing.assert_allclose(x[0], arrays[0].transpose(2, 0, 1) / 255.0, atol=1e-6)
    opts = ImageOptions(mean=(0.5, 0.25, 0.0), std=(2.0, 1.0, 0.5), bgr=True, scale=1.0)
    x2 = next(calibration_batches(IMG, CalibConfig(path=tmp_path, batch=1, image=opts)))["image"][0]
    bgr = arrays[0][..., ::-1].astype(np.float32)
    np.testing.assert_allclose(x2, ((bgr - [0.5, 0.25, 0.0]) / [2.0, 1.0, 0.5]).transpose(2, 0, 1), rtol=1e-6)


def test_image_folder_nhwc_resize_and_gray(tmp_path: Path) -> None:
    _write_images(tmp_path, 2)
    nhwc = model_with_inputs(("x", ["N", 8, 6, 3]))
    b = next(calibration_batches(nhwc, CalibConfig(path=tmp_path, image=ImageOptions(nhwc=True))))
    assert b["x"].shape == (2, 8, 6, 3)
    gray = model_with_inputs(("x", ["N", 1, "H", "W"]))
    with pytest.raises(OnnxPruneError, match="--image-size"):
        calibration_batches(gray, tmp_path)
    b = next(calibration_batches(gray, CalibConfig(path=tmp_path, image=ImageOptions(size=(7, 9)))))
    assert b["x"].shape == (2, 1, 7, 9)
    with pytest.raises(OnnxPruneError, match="image folders only feed single-input"):
        calibration_batches(TWO, tmp_path)
    with pytest.raises(OnnxPruneError, match="--mean: 2 values for a 3-channel"):
        list(calibration_batches(IMG, CalibConfig(path=tmp_path, image=ImageOptions(mean=(1.0, 2.0)))))
    np.save(tmp_path / "extra.npy", np.ones(3))
    with pytest.raises(OnnxPruneError, match="mixes"):
        calibration_batches(IMG, tmp_path)


def test_static_batch_dim_wins(tmp_path: Path) -> None:
    static = model_with_inputs(("x", [2, 3]))
    np.savez(tmp_path / "c.npz", np.ones((5, 3)))
    with pytest.warns(CalibrationWarning, match="dropped the last 1"):
        batches = list(calibration_batches(static, CalibConfig(path=tmp_path / "c.npz", batch=8)))
    assert [b["x"].shape for b in batches] == [(2, 3), (2, 3)]
    np.savez(tmp_path / "one.npz", np.ones((1, 3)))
    with pytest.raises(OnnxPruneError, match="fewer than the model's fixed batch size 2"):
        list(calibration_batches(static, tmp_path / "one.npz"))


def test_random_fallback_warns_and_respects_samples() -> None:
    with pytest.warns(CalibrationWarning, match="random inputs"):
        batches = list(calibration_batches(IMG, CalibConfig(samples=5, batch=2)))
    assert [b["image"].shape for b in batches] == [(2, 3, 4, 5), (2, 3, 4, 5), (1, 3, 4, 5)]


def test_calib_options_decorator(tmp_path: Path) -> None:
    seen: list[CalibConfig] = []

    @click.command()
    @calib_options
    def cmd(calib: CalibConfig) -> None:
        seen.append(calib)

    res = CliRunner().invoke(cmd, ["--calib", str(tmp_path), "--calib-samples", "7", "--calib-batch", "3",
                                   "--image-size", "32x48", "--mean", "0.5,0.4,0.3", "--std", "0.2",
                                   "--bgr", "--nhwc", "--scale", "1"])
    assert res.exit_code == 0, res.output
    cfg = seen[0]
    assert cfg.path == tmp_path and cfg.samples == 7 and cfg.batch == 3
    assert cfg.image == ImageOptions(size=(32, 48), mean=(0.5, 0.4, 0.3), std=(0.2,), scale=1.0, bgr=True, nhwc=True)
    res = CliRunner().invoke(cmd, [])
    assert res.exit_code == 0 and seen[1].path is None and seen[1].image == ImageOptions()
    res = CliRunner().invoke(cmd, ["--image-size", "abc"])
    assert isinstance(res.exception, OnnxPruneError)
