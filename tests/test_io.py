"""The I/O layer: atomic writes, validation before rename, external data for large models."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxprune.io.model_io as io
from onnxprune.api import prune
from onnxprune.errors import OnnxPruneError
from onnxprune.io import temps
from onnxprune.io.inputs import random_inputs
from onnxprune.io.runtime import run

RESNET = Path(__file__).resolve().parent.parent / "models" / "zoo" / "resnet_ts.onnx"


def _data_files(folder: Path, model: str) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith(model + ".") and p.suffix == ".data")


@pytest.mark.parametrize(("node", "refusal"), [
    (helper.make_node("Relu", ["x"], ["y"], alpha=1.0), "fails the ONNX checker: Unrecognized attribute: alpha"),
    # An op ONNX does not define is ONNX Runtime's to judge (it defines a few in the default domain).
    (helper.make_node("NoSuchOp", ["x"], ["y"]), "ONNX Runtime cannot load it: .*No Op registered for NoSuchOp")])
def test_save_is_atomic_and_validated(tmp_path: Path, node: onnx.NodeProto, refusal: str) -> None:
    bad = helper.make_model(helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])]))
    out = tmp_path / "bad.onnx"
    with pytest.raises(OnnxPruneError, match=refusal) as err:
        io.save_model(bad, out)
    assert ".onnxprune-tmp-" not in str(err.value), "the message names the destination, not the temp file"
    assert list(tmp_path.iterdir()) == [], "nothing half-written may be left behind"


def test_output_folder_must_exist(tmp_path: Path) -> None:
    with pytest.raises(OnnxPruneError, match="does not exist"):
        io.save_model(onnx.load(str(RESNET)), tmp_path / "missing" / "m.onnx")


def test_large_models_go_through_external_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the threshold lowered, the whole pipeline takes the >2 GB path on a small model."""
    monkeypatch.setattr(io, "EXTERNAL_DATA_THRESHOLD", 10_000)
    src = tmp_path / "src.onnx"
    io.save_model(onnx.load(str(RESNET)), src)
    assert len(_data_files(tmp_path, "src.onnx")) == 1
    assert src.stat().st_size < 100_000, "weights must live in the .data file"
    model = io.load_model(src)
    assert io.is_large(model)
    result = prune(model, ratio=0.3, verify=True)
    assert result.verify is not None and result.verify.ok
    out = tmp_path / "out.onnx"
    result.save(out)
    assert len(_data_files(tmp_path, "out.onnx")) == 1
    reloaded = io.load_model(out)
    feed = random_inputs(reloaded)
    assert run(reloaded, feed)["output"].shape == run(model, feed)["output"].shape
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".onnxprune-")] == []


def test_missing_external_data_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(io, "EXTERNAL_DATA_THRESHOLD", 10_000)
    src = tmp_path / "src.onnx"
    io.save_model(onnx.load(str(RESNET)), src)
    _data_files(tmp_path, "src.onnx")[0].unlink()
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


# -- external data: the .onnx and its data file are replaced as a pair -----------------------------

def _weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _scaled(model: onnx.ModelProto, factor: float) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for t in out.graph.initializer:
        if t.data_type == TensorProto.FLOAT:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * np.float32(factor), t.name))
    return out


@pytest.fixture
def external(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(io, "EXTERNAL_DATA_THRESHOLD", 10_000)


@pytest.mark.usefixtures("external")
def test_saving_over_an_external_model_replaces_the_pair(tmp_path: Path) -> None:
    base = onnx.load(str(RESNET))
    out = tmp_path / "m.onnx"
    io.save_model(base, out)
    first = _data_files(tmp_path, "m.onnx")
    io.save_model(_scaled(base, 2.0), out)
    second = _data_files(tmp_path, "m.onnx")
    assert len(second) == 1 and second != first, "new data goes to a new file; the old one is removed"
    got = _weights(io.load_model(out))
    want = _weights(_scaled(base, 2.0))
    assert all(np.array_equal(got[k], want[k]) for k in want)
    fresh = _weights(onnx.load(str(RESNET)))
    assert all(np.array_equal(_weights(base)[k], fresh[k]) for k in fresh), "saving must not modify the model"
    io.save_model(_scaled(base, 2.0), out)
    assert _data_files(tmp_path, "m.onnx") == second, "the same data keeps its name (deterministic bytes)"


@pytest.mark.usefixtures("external")
@pytest.mark.parametrize("crash_at", [1, 2])
def test_a_crash_between_the_renames_leaves_a_consistent_pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              crash_at: int) -> None:
    """Rename 1 moves the data file in, rename 2 the .onnx: a crash before or between them leaves
    the old .onnx with the data it was written with."""
    base = onnx.load(str(RESNET))
    out = tmp_path / "m.onnx"
    io.save_model(base, out)
    calls = {"n": 0}
    real_replace = os.replace

    def crashing_replace(src: object, dst: object) -> None:
        if Path(str(dst)).parent == tmp_path:  # the renames into the destination folder
            calls["n"] += 1
            if calls["n"] == crash_at:
                raise KeyboardInterrupt("killed")
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(io.os, "replace", crashing_replace)
    with pytest.raises(KeyboardInterrupt):
        io.save_model(_scaled(base, 3.0), out)
    monkeypatch.setattr(io.os, "replace", real_replace)
    got, want = _weights(io.load_model(out)), _weights(base)
    assert all(np.array_equal(got[k], want[k]) for k in want), "the old model must load with its own data"


# -- temp files ------------------------------------------------------------------------------------

def _temp(folder: Path, host: str, pid: int, *, is_dir: bool, aged: bool = True) -> Path:
    path = folder / f".onnxprune-tmp-{host}-{pid}-abc{pid}"
    if is_dir:
        path.mkdir()
        (path / "m.onnx").write_bytes(b"half written")
    else:
        path.write_bytes(b"half written")
    if aged:
        old = time.time() - 2 * temps.STALE_SECONDS
        os.utime(path, (old, old))
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temps_of_dead_processes_are_removed(tmp_path: Path) -> None:
    """What a run killed with SIGKILL left beside its output goes at the next write into that folder."""
    host = temps.host()
    dead_dir = _temp(tmp_path, host, _dead_pid(), is_dir=True)
    dead_file = _temp(tmp_path, host, _dead_pid(), is_dir=False)
    kept = {_temp(tmp_path, host, os.getpid(), is_dir=True).name,  # a live process's
            _temp(tmp_path, host, _dead_pid(), is_dir=False, aged=False).name,  # too young to judge
            _temp(tmp_path, "elsewhere", _dead_pid(), is_dir=True).name}  # another host's pid means nothing here
    io.save_model(onnx.load(str(RESNET)), tmp_path / "out.onnx")
    left = {p.name for p in tmp_path.iterdir()}
    assert dead_dir.name not in left and dead_file.name not in left
    assert left == kept | {"out.onnx"}


def test_temp_names_say_what_they_are(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    real = os.replace

    def spy(src: object, dst: object) -> None:
        seen.append(Path(str(src)).parent.name if Path(str(src)).parent != tmp_path else Path(str(src)).name)
        real(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(io.os, "replace", spy)
    io.save_model(onnx.load(str(RESNET)), tmp_path / "a.onnx")
    io.write_json(tmp_path / "r.json", {"a": 1})
    assert len(seen) == 2 and all(s.startswith(f".onnxprune-tmp-{temps.host()}-{os.getpid()}-") for s in seen), seen


# -- external data locations are checked before anything reads them --------------------------------

@pytest.mark.usefixtures("external")
@pytest.mark.parametrize("where", ["absolute", "dotdot", "symlink"])
def test_external_data_outside_the_model_folder_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           where: str) -> None:
    outside = tmp_path / "outside"
    inside = tmp_path / "models"
    outside.mkdir()
    inside.mkdir()
    io.save_model(onnx.load(str(RESNET)), outside / "m.onnx")
    (data,) = _data_files(outside, "m.onnx")
    model = onnx.load(str(outside / "m.onnx"), load_external_data=False)
    location = {"absolute": str(data), "dotdot": f"../outside/{data.name}", "symlink": "linked.data"}[where]
    if where == "symlink":
        (inside / "linked.data").symlink_to(data)
    for t in model.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    (inside / "m.onnx").write_bytes(model.SerializeToString())

    def must_not_read(*args: object, **kwargs: object) -> None:
        raise AssertionError("external data was read before its location was checked")

    monkeypatch.setattr(io.onnx, "load_external_data_for_model", must_not_read)
    with pytest.raises(OnnxPruneError, match="outside the model's folder") as err:
        io.load_model(inside / "m.onnx")
    assert "\n" not in str(err.value)


# -- output paths ----------------------------------------------------------------------------------

def test_check_paths(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(RESNET.read_bytes())
    io.check_paths(models={"MODEL": model}, outputs={"-o": tmp_path / "o.onnx", "--report": tmp_path / "r.json"})
    cases = {
        "is the input model": {"-o": model},
        "would overwrite the output of -o": {"-o": tmp_path / "o.onnx", "--report": tmp_path / "o.onnx"},
        "does not exist": {"-o": tmp_path / "nope" / "o.onnx"},
        "is a folder": {"-o": tmp_path},
        "is not a folder": {"-o": model / "o.onnx"},
    }
    for message, outputs in cases.items():
        with pytest.raises(OnnxPruneError, match=message):
            io.check_paths(models={"MODEL": model}, outputs=outputs)
    # Paths for another machine (trtexec): compared, not probed.
    io.check_paths(models={"MODEL": model}, outputs={"-o": tmp_path / "nope" / "e.plan"}, writable=False)
