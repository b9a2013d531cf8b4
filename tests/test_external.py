"""Models whose weights stay on disk (external data, memory-mapped one tensor at a time): pruning them
gives the same model as pruning in memory, never touches the input's data, and refuses broken data."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_run import invoke, one_line_error
from graphs import Graph
from onnx import TensorProto, numpy_helper

from onnxprune.errors import EXIT_USAGE
from onnxprune.io import external
from onnxprune.io.model_io import load_model


def _decoder(layers: int = 2, hidden: int = 32, ffn: int = 64) -> onnx.ModelProto:
    """A residual stack of MLP blocks: x + down(relu(up(x) + b)), as in an LLM's decoder layers."""
    g = Graph(opset=17)
    cur = g.input("x", (1, 4, hidden))
    for i in range(layers):
        up = g.matmul(cur, hidden, ffn, bias=True, name=f"up{i}")
        down = g.matmul(g.relu(up), ffn, hidden, name=f"down{i}")
        cur = g.node("Add", [cur, down], name=f"res{i}")
    g.output(cur)
    return g.build()


def _save_external(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + ".data", size_threshold=0)
    return path.with_name(path.name + ".data")


def _fingerprint(p: Path) -> tuple[str, int]:
    return hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns


def _tensors(path: Path) -> dict[str, tuple[int, list[int], bytes]]:
    m = onnx.load(str(path))
    return {t.name: (t.data_type, list(t.dims), numpy_helper.to_array(t).tobytes()) for t in m.graph.initializer}


SMALL = 256  # tensors below this are loaded (ORT reads shape tensors while loading); the weights here are larger


@pytest.fixture
def streaming(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every external weight of SMALL bytes or more stays on disk, mapped."""
    monkeypatch.setattr(external, "STREAM_THRESHOLD", 0)
    monkeypatch.setattr(external, "SMALL_BYTES", SMALL)


COMMANDS = {
    "prune": ["prune", "--ratio", "0.3", "--verify", "--no-progress"],
    "reconstruct": ["prune", "--ratio", "0.3", "--criterion", "activation", "--reconstruct", "--no-progress"],
    "sparsify": ["sparsify", "--pattern", "2:4", "--refit"],
}


def _run(command: str, src: Path, out: Path) -> None:
    cmd, *options = COMMANDS[command]
    code, stdout, stderr = invoke(cmd, str(src), "-o", str(out), *options)
    assert code == 0, stderr + stdout
    if "--verify" in options:
        assert "PASS" in stdout + stderr


@pytest.mark.parametrize("command", list(COMMANDS))
def test_streamed_pruning_equals_in_memory_pruning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   command: str) -> None:
    src = tmp_path / "m.onnx"
    data = _save_external(_decoder(), src)
    before = _fingerprint(data)
    _run(command, src, tmp_path / "memory.onnx")
    assert not external.streams(load_model(src)), "below the threshold the weights are loaded"

    monkeypatch.setattr(external, "STREAM_THRESHOLD", 0)
    monkeypatch.setattr(external, "SMALL_BYTES", SMALL)
    loaded = load_model(src)
    assert all(external.mapped(t) for t in loaded.graph.initializer), "the weights stay on disk, mapped"
    _run(command, src, tmp_path / "streamed.onnx")

    memory, streamed = onnx.load(str(tmp_path / "memory.onnx")), onnx.load(str(tmp_path / "streamed.onnx"))
    assert [n.SerializeToString() for n in memory.graph.node] == [n.SerializeToString() for n in streamed.graph.node]
    want, got = _tensors(tmp_path / "memory.onnx"), _tensors(tmp_path / "streamed.onnx")
    assert got == want, "bit for bit the same weights"
    assert want != _tensors(src), "the check compares changed weights"
    assert _fingerprint(data) == before, "the input's data file is never written"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".onnxprune-")], "no scratch left behind"
    # the streamed output keeps its weights in its own data file, beside it
    (own,) = [p for p in tmp_path.iterdir() if p.name.startswith("streamed.onnx.") and p.suffix == ".data"]
    assert own.stat().st_size >= sum(len(v[2]) for v in got.values() if len(v[2]) >= external.EXTERNAL_MIN_BYTES)


@pytest.mark.usefixtures("streaming")
def test_streamed_model_runs_in_onnx_runtime_from_its_file(tmp_path: Path) -> None:
    """ORT gets a file beside the data (no serialised weights) and gives the in-memory answer."""
    from onnxprune.io.inputs import random_inputs
    from onnxprune.io.runtime import run

    model = _decoder()
    src = tmp_path / "m.onnx"
    _save_external(_decoder(), src)  # onnx turns the model it saves into stubs: save a twin
    loaded = load_model(src)
    assert external.streams(loaded)
    feed = random_inputs(model)
    assert np.array_equal(run(loaded, feed)[model.graph.output[0].name], run(model, feed)[model.graph.output[0].name])


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("damage", ["missing", "short"])
def test_broken_external_data_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stream: bool,
                                          damage: str) -> None:
    if stream:
        monkeypatch.setattr(external, "STREAM_THRESHOLD", 0)
        monkeypatch.setattr(external, "SMALL_BYTES", SMALL)
    src = tmp_path / "m.onnx"
    data = _save_external(_decoder(), src)
    if damage == "missing":
        data.unlink()
    else:
        data.write_bytes(data.read_bytes()[:-100])
    code, _, stderr = invoke("prune", str(src), "-o", str(tmp_path / "o.onnx"), "--ratio", "0.3", "--no-progress")
    assert code == EXIT_USAGE, stderr
    line = one_line_error(stderr)
    assert "m.onnx" in line, line
    assert not (tmp_path / "o.onnx").exists()


def test_a_stub_from_an_unknown_file_is_refused() -> None:
    t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4], data_location=TensorProto.EXTERNAL)
    t.external_data.add(key="location", value="/nowhere/x.data")
    t.external_data.add(key="length", value="16")
    with pytest.raises(external.OnnxPruneError, match="not loaded with the model"):
        external.tensor_array(t)


@pytest.mark.usefixtures("streaming")
def test_the_benchmark_decoder_prunes_with_its_weights_on_disk(tmp_path: Path) -> None:
    """benchmarks/llm_memory.py's synthetic decoder (RMSNorm, MLP, residual), tiny, through the API."""
    from bench_scripts import load_script

    from onnxprune.api import prune

    bench = load_script("llm_memory")
    src = bench.write_decoder(tmp_path / "d.onnx", bench.Decoder(layers=2, hidden=64, ffn=256))
    model = load_model(src)
    assert external.streams(model)
    result = prune(model, ratio=0.3, verify=True)
    assert result.verify is not None and result.verify.ok
    result.save(tmp_path / "out.onnx")
    pruned = onnx.load(str(tmp_path / "out.onnx"))
    ffn = {t.name: list(t.dims) for t in pruned.graph.initializer}
    assert ffn["layer0.up.weight"][1] < 256


ZOO = Path(__file__).resolve().parent.parent / "models" / "zoo"


@pytest.mark.parametrize("name", ["bert2_dynamo", "t5_ts", "transformer_dynamo", "resnet_ts", "lstm_ts"])
def test_zoo_models_prune_the_same_with_weights_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        name: str) -> None:
    """Attention (heads, rotary-free shapes, Constant shape tensors), convolutions and an RNN, with
    every initializer mapped read-only: the same pruned model as in memory, bit for bit."""
    src = tmp_path / "m.onnx"
    data = _save_external(onnx.load(str(ZOO / f"{name}.onnx")), src)
    before = _fingerprint(data)
    _run("prune", src, tmp_path / "memory.onnx")
    monkeypatch.setattr(external, "STREAM_THRESHOLD", 0)
    monkeypatch.setattr(external, "SMALL_BYTES", SMALL)
    _run("prune", src, tmp_path / "streamed.onnx")
    memory, streamed = onnx.load(str(tmp_path / "memory.onnx")), onnx.load(str(tmp_path / "streamed.onnx"))
    assert [n.SerializeToString() for n in memory.graph.node] == [n.SerializeToString() for n in streamed.graph.node]
    assert _tensors(tmp_path / "streamed.onnx") == _tensors(tmp_path / "memory.onnx")
    assert _fingerprint(data) == before
