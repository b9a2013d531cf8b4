"""NVIDIA ModelOpt's ONNX INT8 PTQ on the real models, for the comparison rows of benchmarks/quantize.py.

Runs in its own venv: `nvidia-modelopt[onnx]` pins onnx 1.21 and brings onnxruntime-gpu and
cupy-cuda12x (2.0 GB in all), which must not replace the project's onnx / onnxruntime.

    python3 -m venv /tmp/moptvenv && /tmp/moptvenv/bin/pip install torch==2.13.0 'nvidia-modelopt[onnx]'
    .venv/bin/python benchmarks/quantize.py --export-calib /tmp/mo        # the same calibration samples
    /tmp/moptvenv/bin/python benchmarks/modelopt_quantize.py /tmp/mo      # writes /tmp/mo/<kind>_modelopt.onnx
    .venv/bin/python benchmarks/quantize.py --modelopt-dir /tmp/mo

ModelOpt's defaults for TensorRT (int8 mode, calibration on the CPU provider, FP32 kept in high
precision so the comparison is INT8 against INT8, min/max ranges as onnxprune's default).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODELS = {"yolo": ROOT / "models" / "real" / "yolov8n_320n.onnx", "ocr": ROOT / "models" / "real" / "ppocrv4_det.onnx"}


def main() -> None:
    import modelopt.onnx.quantization as mq

    folder = Path(sys.argv[1])
    for kind, model in MODELS.items():
        with np.load(folder / f"{kind}_calib.npz") as npz:
            data = {k: npz[k] for k in npz.files}
        start = time.perf_counter()
        mq.quantize(str(model), quantize_mode="int8", calibration_data=data, calibration_method="max",
                    calibration_eps=["cpu"], high_precision_dtype="fp32", log_level="WARNING",
                    output_path=str(folder / f"{kind}_modelopt.onnx"))
        print(f"{kind}: {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
