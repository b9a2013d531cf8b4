"""trtexec command lines and per-version build plans (no TensorRT needed)."""

from __future__ import annotations

import pytest

from onnxprune.deploy.tensorrt.build_options import (
    BuildOptions,
    ModelPrecision,
    ShapeRange,
    parse_shape_ranges,
    plan_build,
)
from onnxprune.deploy.tensorrt.trtexec import trtexec_command
from onnxprune.errors import OnnxPruneError

FP32 = ModelPrecision(has_fp16=False, has_qdq=False)


def test_full_command_on_10_3() -> None:
    opts = BuildOptions(sparse=True, fp16=True, shapes=parse_shape_ranges(["input:1x3x224x224/8x3x224x224/16x3x224x224"]),
                        workspace_mib=2048, timing_cache="cache.bin", dla_core=0, gpu_fallback=True)
    cmd = trtexec_command("m.onnx", "m.plan", options=opts, version=(10, 3), precision=FP32)
    assert cmd[:3] == ["trtexec", "--onnx=m.onnx", "--saveEngine=m.plan"]
    for flag in ("--sparsity=enable", "--fp16", "--minShapes=input:1x3x224x224", "--optShapes=input:8x3x224x224",
                 "--maxShapes=input:16x3x224x224", "--memPoolSize=workspace:2048M", "--timingCacheFile=cache.bin",
                 "--useDLACore=0", "--allowGPUFallback"):
        assert flag in cmd
    assert "--stronglyTyped" not in cmd and "--int8" not in cmd


def test_force_sparsity_and_quoted_names() -> None:
    opts = BuildOptions(force_sparsity=True, shapes={"in:0": ShapeRange((1, 4), (2, 4), (4, 4))})
    cmd = trtexec_command("m.onnx", "m.plan", options=opts, version=(8, 6))
    assert "--sparsity=force" in cmd and "--optShapes='in:0':2x4" in cmd


def test_trt11_is_strongly_typed() -> None:
    cmd = trtexec_command("m.onnx", "m.plan", options=BuildOptions(fp16=True, sparse=True), version=(11, 0),
                          precision=ModelPrecision(has_fp16=True, has_qdq=False))
    assert "--stronglyTyped" in cmd and "--fp16" not in cmd
    with pytest.raises(OnnxPruneError, match="strongly typed"):
        trtexec_command("m.onnx", "m.plan", options=BuildOptions(fp16=True), version=(11, 0), precision=FP32)


@pytest.mark.parametrize(("version", "net", "flags"), [
    ((8, 6), ("EXPLICIT_BATCH",), ("FP16", "SPARSE_WEIGHTS")),
    ((10, 3), (), ("FP16", "SPARSE_WEIGHTS")),
    ((11, 0), ("STRONGLY_TYPED",), ("SPARSE_WEIGHTS",)),
])
def test_plan_per_version(version: tuple[int, int], net: tuple[str, ...], flags: tuple[str, ...]) -> None:
    plan = plan_build(version, BuildOptions(sparse=True, fp16=True), ModelPrecision(has_fp16=True, has_qdq=False))
    assert plan.network_flags == net and plan.builder_flags == flags


def test_plan_rejects() -> None:
    with pytest.raises(OnnxPruneError, match="Q/DQ|QuantizeLinear"):
        plan_build((10, 3), BuildOptions(int8=True), FP32)
    with pytest.raises(OnnxPruneError, match="DLA"):
        plan_build((10, 3), BuildOptions(dla_core=0), FP32)
    with pytest.raises(OnnxPruneError, match="too old"):
        plan_build((8, 5), BuildOptions(), FP32)
    with pytest.raises(OnnxPruneError, match="min <= opt <= max"):
        parse_shape_ranges(["x:8x3/1x3/4x3"])
