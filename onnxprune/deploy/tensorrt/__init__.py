"""TensorRT deployment: operator support preflight, engine building, trtexec command lines.

Nothing here imports `tensorrt` at module level; only `engine.build_engine` needs it.
"""

from __future__ import annotations

from onnxprune.deploy.tensorrt.preflight import PreflightReport, check_trt
from onnxprune.deploy.tensorrt.profile import TENSORRT, TensorRTProfile, tensorrt_profile

__all__ = ["TENSORRT", "PreflightReport", "TensorRTProfile", "check_trt", "tensorrt_profile"]
