"""Olive data components over onnxprune's calibration sources; Olive imports this file as a user script
(`onnxprune.adapters.olive.data_config`). The batches are a `onnxprune.calib.source.CalibrationSource`'s, so an
Olive quantization pass reads exactly what onnxprune's steps read."""

from __future__ import annotations

from typing import Any

import onnx
from olive.data.registry import Registry

from onnxprune.calib.source import CalibrationSource
from onnxprune.io.types import Feed


@Registry.register_dataset("onnxprune_calibration")
def onnxprune_calibration(source: str, model_path: str, **kwargs: Any) -> list[Feed]:
    model = onnx.load(model_path, load_external_data=False)
    return [dict(feed) for feed in CalibrationSource.of(source, model).batches()]


@Registry.register_dataloader("onnxprune_batches")
def onnxprune_batches(dataset: list[Feed], **kwargs: Any) -> list[Feed]:
    """The batches as they are (already batched by onnxprune; Olive's reader iterates and takes len())."""
    return dataset
