"""bench: latency structure, interleaved A/B ratio of a model vs itself, memory probe, CLI.

Timing assertions are deliberately loose: machines are noisy.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from onnxprune.errors import OnnxPruneError
from onnxprune.measure.bench import (
    ABResult,
    BenchResult,
    interleaved_latency,
    latency,
    model_file_size,
    peak_memory,
)

F = TensorProto.FLOAT


def _mlp(hidden: int = 64, *, batch: int | str = "N") -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", F, [batch, 32])],
                              [helper.make_tensor_value_info("y", F, [batch, 10])], initializer=[
                                  numpy_helper.from_array(rng.standard_normal((32, hidden)).astype(np.float32), "w1"),
                                  numpy_helper.from_array(rng.standard_normal((hidden, 10)).astype(np.float32), "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_latency_structure() -> None:
    res = latency(_mlp(), batch=4, threads=1, warmup=1, repeat=5)
    assert isinstance(res, BenchResult)
    assert res.batch == 4 and res.threads == 1 and res.latency.repeat == 5
    assert res.input_shapes == {"x": (4, 32)}
    lat = res.latency
    assert 0 < lat.min_ms <= lat.median_ms <= lat.p90_ms
    json.dumps(res.to_dict())


def test_interleaved_self_ratio_near_one(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(_mlp(256), str(path))
    ab = interleaved_latency(str(path), _mlp(256), batch=8, threads=1, warmup=3, repeat=30)
    assert isinstance(ab, ABResult)
    assert ab.repeat == 30 and ab.a.repeat == ab.b.repeat == 30
    assert 0.2 < ab.speedup < 5
    assert ab.speedup_p10 <= ab.speedup <= ab.speedup_p90
    json.dumps(ab.to_dict())


def test_static_batch_is_enforced() -> None:
    with pytest.raises(OnnxPruneError, match="static batch of 1"):
        latency(_mlp(batch=1), batch=8, warmup=0, repeat=1)
    with pytest.raises(OnnxPruneError, match="repeat"):
        latency(_mlp(), repeat=0)


def test_peak_memory_subprocess(tmp_path: Path) -> None:
    big = _mlp(4096)  # 32x4096 + 4096x10 floats: ~0.7 MB of weights
    mem = peak_memory(big, batch=2)
    assert mem.peak_bytes > 0 and mem.baseline_bytes > 0
    assert mem.growth_bytes >= 0 and "subprocess" in mem.method
    path = tmp_path / "m.onnx"
    onnx.save(big, str(path))
    assert model_file_size(str(path)) == path.stat().st_size


def _cli(args: list[str]) -> tuple[int, str, str]:
    from onnxprune.cli import main

    result = CliRunner().invoke(main, args)
    return result.exit_code, result.stdout, result.stderr


def test_cli_bench_vs_json(tmp_path: Path) -> None:
    a = tmp_path / "a.onnx"
    b = tmp_path / "b.onnx"
    onnx.save(_mlp(64), str(a))
    onnx.save(_mlp(32), str(b))
    out = tmp_path / "bench.json"
    code, stdout, stderr = _cli(["bench", str(a), "--vs", str(b), "--batch", "1", "--batch", "4", "--threads", "1",
                                 "--warmup", "1", "--repeat", "3", "--no-memory", "--json", str(out)])
    assert code == 0, stdout + stderr
    assert "speedup" in stdout and "median" in stdout
    doc = json.loads(out.read_text())
    assert [r["batch"] for r in doc["results"]] == [1, 4]
    assert doc["models"]["B"]["size_bytes"] == b.stat().st_size
    ab = doc["results"][1]["ab"]
    assert ab["a"]["repeat"] == 3 and ab["speedup"] > 0


def test_cli_bench_single_with_memory(tmp_path: Path) -> None:
    a = tmp_path / "a.onnx"
    onnx.save(_mlp(), str(a))
    out = tmp_path / "bench.json"
    code, stdout, stderr = _cli(["bench", str(a), "--repeat", "2", "--warmup", "0", "--json", str(out)])
    assert code == 0, stdout + stderr
    res = json.loads(out.read_text())["results"][0]
    assert res["latency"]["repeat"] == 2 and res["memory"]["A"]["peak_bytes"] > 0


@pytest.mark.parametrize("extra", [["/nonexistent.onnx"], ["{a}", "--repeat", "0"], ["{a}", "--batch", "0"],
                                   ["{a}", "--vs", "/nonexistent.onnx"], ["{a}", "--shapes", "x:axb"]])
def test_cli_bench_bad_input(tmp_path: Path, extra: list[str]) -> None:
    a = tmp_path / "a.onnx"
    onnx.save(_mlp(), str(a))
    code, _, stderr = _cli(["bench", "--no-memory", *[x.format(a=a) for x in extra]])
    assert code != 0
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
