"""build_engine against a fake `tensorrt` module (flag selection per version, parser errors, layer report),
plus GPU tests that only run with a real TensorRT and an NVIDIA GPU."""

from __future__ import annotations

import enum
import json
import shutil
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.deploy.tensorrt.build_options import ShapeRange
from onnxprune.deploy.tensorrt.engine import (
    EngineBuildError,
    TensorRTMissingError,
    build_engine,
    require_tensorrt,
)
from onnxprune.errors import OnnxPruneError

FIXED = ShapeRange((1, 64, 16, 16), (1, 64, 16, 16), (1, 64, 16, 16))


def _conv_model(path: Path) -> Path:
    w = np.random.default_rng(0).normal(size=(64, 64, 3, 3)).astype(np.float32)
    w.reshape(64, 16, 4, 3, 3)[:, :, 2:] = 0  # 2:4 along axis 1
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["y"], name="relu")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


class _Inspector:
    def get_engine_information(self, fmt: str) -> str:
        return json.dumps({"Layers": [{"Name": "conv + relu", "LayerType": "CaskConvolution",
                                       "TacticName": "sm87_xmma_fprop_sparse_conv_f16f16"},
                                      {"Name": "reformat", "LayerType": "Reformat", "TacticName": "0x0"}]})


class _Engine:
    def create_engine_inspector(self) -> _Inspector:
        return _Inspector()


class _Runtime:
    def __init__(self, logger: object) -> None:
        pass

    def deserialize_cuda_engine(self, data: bytes) -> _Engine:
        assert data == b"PLAN"
        return _Engine()


def _fake_trt(version: str, *, parse_ok: bool = True) -> types.ModuleType:
    major = int(version.split(".")[0])
    calls: dict[str, Any] = {"flags": [], "pool": None, "profile": {}}
    flag_names = ["SPARSE_WEIGHTS", "GPU_FALLBACK"] + ([] if major >= 11 else ["FP16", "INT8"])
    builder_flag = enum.IntEnum("BuilderFlag", {n: i for i, n in enumerate(flag_names)})  # type: ignore[misc]
    net_values = ({"EXPLICIT_BATCH": 0} if major < 11 else {}) | {"STRONGLY_TYPED": 1}
    net_flag = enum.IntEnum("NetworkDefinitionCreationFlag", net_values)  # type: ignore[misc]

    class ILogger:
        WARNING, ERROR, INTERNAL_ERROR, INFO = 2, 1, 0, 3

        def __init__(self) -> None:
            pass

    class Tensor:
        name, shape = "x", (-1, 64, 16, 16)

    class Network:
        num_inputs = 1

        def get_input(self, i: int) -> Tensor:
            return Tensor()

    class Error:
        def desc(self) -> str:
            return "Unsupported operator"

        def node(self) -> int:
            return 1

    class Parser:
        num_errors = 0 if parse_ok else 1

        def __init__(self, network: Network, logger: ILogger) -> None:
            pass

        def parse_from_file(self, path: str) -> bool:
            return parse_ok

        def get_error(self, i: int) -> Error:
            return Error()

    class Profile:
        def set_shape(self, name: str, *dims: Any) -> None:
            calls["profile"][name] = dims

    class Cache:
        def serialize(self) -> bytes:
            return b"cache"

    class Config:
        def set_flag(self, flag: Any) -> None:
            calls["flags"].append(flag.name)

        def set_memory_pool_limit(self, pool: str, size: int) -> None:
            calls["pool"] = (pool, size)

        def add_optimization_profile(self, p: Profile) -> int:
            return 0

        def create_timing_cache(self, data: bytes) -> Cache:
            return Cache()

        def set_timing_cache(self, cache: Cache, ignore: bool) -> bool:
            return True

        def get_timing_cache(self) -> Cache:
            return Cache()

    class Builder:
        num_DLA_cores = 0

        def __init__(self, logger: ILogger) -> None:
            self.logger: Any = logger

        def create_network(self, flags: int) -> Network:
            calls["network_flags"] = flags
            return Network()

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes:
            self.logger.log(ILogger.INFO, "[MemUsageChange] (Sparsity) Layers eligible for sparse math: conv + relu")
            return b"PLAN"

    mod = types.ModuleType("tensorrt")
    ns = {"__version__": version, "ILogger": ILogger, "Builder": Builder, "OnnxParser": Parser, "Runtime": _Runtime,
          "BuilderFlag": builder_flag, "NetworkDefinitionCreationFlag": net_flag,
          "MemoryPoolType": types.SimpleNamespace(WORKSPACE="workspace"),
          "ProfilingVerbosity": types.SimpleNamespace(DETAILED="detailed"),
          "DeviceType": types.SimpleNamespace(DLA="dla"),
          "LayerInformationFormat": types.SimpleNamespace(JSON="json"), "Dims": tuple, "calls": calls}
    for k, v in ns.items():
        setattr(mod, k, v)
    return mod


@pytest.mark.parametrize(("version", "net_flags", "flags"), [
    ("8.6.1", 1 << 0, ["FP16", "SPARSE_WEIGHTS"]),
    ("10.3.0", 0, ["FP16", "SPARSE_WEIGHTS"]),
])
def test_build_with_fake_tensorrt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str, net_flags: int,
                                  flags: list[str]) -> None:
    fake = _fake_trt(version)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    model = _conv_model(tmp_path / "m.onnx")
    report = build_engine(model, tmp_path / "m.plan", sparse=True, fp16=True, workspace=512,
                          timing_cache=str(tmp_path / "t.cache"),
                          shapes={"x": ShapeRange((1, 64, 16, 16), (4, 64, 16, 16), (8, 64, 16, 16))})
    calls = fake.calls  # type: ignore[attr-defined]
    assert calls["network_flags"] == net_flags
    assert calls["flags"] == flags
    assert calls["pool"] == ("workspace", 512 << 20)
    assert "x" in calls["profile"]
    assert (tmp_path / "m.plan").read_bytes() == b"PLAN"
    assert (tmp_path / "t.cache").read_bytes() == b"cache"
    conv = report.layers[0]
    assert conv.sparse_weights and conv.sparse_tactic
    assert not report.layers[1].sparse_tactic


def test_trt11_needs_fp16_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_trt("11.0.0"))
    model = _conv_model(tmp_path / "m.onnx")
    with pytest.raises(OnnxPruneError, match="strongly typed"):
        build_engine(model, tmp_path / "m.plan", fp16=True, shapes={"x": FIXED})
    fake = _fake_trt("11.0.0")
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    report = build_engine(model, tmp_path / "m.plan", sparse=True, shapes={"x": FIXED})
    assert fake.calls["network_flags"] == 1 << 1  # type: ignore[attr-defined]  # STRONGLY_TYPED
    assert report.plan.strongly_typed


def test_parser_errors_name_the_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_trt("8.6.1", parse_ok=False))
    model = _conv_model(tmp_path / "m.onnx")
    with pytest.raises(EngineBuildError, match="node 'relu' \\(Relu\\): Unsupported operator"):
        build_engine(model, tmp_path / "m.plan", shapes={"x": FIXED})


def test_stub_only_tensorrt_counts_as_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))  # like tensorrt-stubs alone
    with pytest.raises(TensorRTMissingError, match=r"pip install 'onnxprune\[tensorrt\]'"):
        require_tensorrt()


def _has_gpu_tensorrt() -> bool:
    try:
        require_tensorrt()
    except TensorRTMissingError:
        return False
    return shutil.which("nvidia-smi") is not None


@pytest.mark.gpu
@pytest.mark.skipif(not _has_gpu_tensorrt(), reason="needs TensorRT and an NVIDIA GPU")
def test_gpu_sparse_build_and_compare(tmp_path: Path) -> None:
    model = _conv_model(tmp_path / "m.onnx")
    report = build_engine(model, tmp_path / "m.plan", sparse=True, fp16=True, compare=True, dense_twin=True,
                          shapes={"x": ShapeRange((1, 64, 16, 16), (8, 64, 16, 16), (8, 64, 16, 16))})
    assert (tmp_path / "m.plan").stat().st_size > 0
    assert report.ort_max_abs_diff is not None and report.ort_max_abs_diff < 5e-2
    assert report.speedup is not None
