"""Activation ranges for static quantization, by ONNX Runtime's calibrators, with settings that work.

`quantize_static` builds its calibrator from a fixed set of extra options, which leaves two of them
at defaults that defeat the method asked for (ONNX Runtime 1.32):
- entropy: 128 histogram bins for 128 quantized bins, so the only threshold it can try is the full
  range, and "entropy" returns min/max. Here: 512 bins for 128 quantized bins (TensorRT's
  entropy calibrator uses 2048; ONNX Runtime's threshold search is quadratic in the bins, in Python:
  2048 took 25 s on the 33 tensors of the digits model, 512 about 2 s).
- percentile: symmetric ranges always, which wastes half of an asymmetric UINT8 range on tensors that
  are never negative (after ReLU). Here: symmetric only where the activations are (`--for tensorrt`).
So the ranges are computed here with `create_calibrator` and handed to `quantize_static` as its
calibration cache (the JSON it writes and reads itself).
"""

from __future__ import annotations

import inspect
from pathlib import Path

from onnxprune.deploy.calib_reader import FeedReader
from onnxprune.errors import OnnxPruneError

ENTROPY_BINS = 512
ENTROPY_QUANTIZED_BINS = 128
PERCENTILE_BINS = 2048


def supports_cache() -> bool:
    """`quantize_static(calibration_cache_path=...)` appeared in ONNX Runtime 1.32."""
    from onnxruntime.quantization import quantize_static

    return "calibration_cache_path" in inspect.signature(quantize_static).parameters


def tensor_ranges(model_path: Path, reader: FeedReader, *, method: str, symmetric: bool, percentile: float,
                  folder: Path) -> Path:
    """Calibrate every tensor of the model at `model_path` on the reader's batches; the cache file's path."""
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    if not supports_cache():
        raise OnnxPruneError("quantize needs onnxruntime >= 1.32 (calibration caches); "
                             "pip install -U onnxruntime")
    calib_method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                    "percentile": CalibrationMethod.Percentile}[method]
    extra: dict[str, object] = {"symmetric": symmetric}
    if method == "entropy":
        extra.update(num_bins=ENTROPY_BINS, num_quantized_bins=ENTROPY_QUANTIZED_BINS)
    elif method == "percentile":
        extra.update(num_bins=PERCENTILE_BINS, percentile=percentile)
    calibrator = create_calibrator(model_path, [], augmented_model_path=str(folder / "augmented.onnx"),
                                   calibrate_method=calib_method, extra_options=extra)
    reader.rewind()
    calibrator.collect_data(reader)
    cache = folder / "ranges.json"
    save_tensors_data(calibrator.compute_data(), cache)
    return cache
