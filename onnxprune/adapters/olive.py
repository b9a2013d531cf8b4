"""onnxprune in an Olive workflow: `OnnxPrune`, an `olive.passes.Pass` that runs one onnxprune step.

Olive finds passes through its package config; `package_config()` is Olive's own with `OnnxPrune`
added, for `olive.workflows.run(config, package_config=package_config())`. A pass entry:

    "prune": {"type": "OnnxPrune", "step": "prune", "calibration": "calib.npz",
              "options": {"target_macs": 0.7, "round_to": 8}}

`step` is prune, sparsify or quantize (the keyword options of `onnxprune.api.prune`, `SparsifyPass`,
`QuantizePass`), or the name of a plugin of the `onnxprune.passes` entry-point group. Olive's own
passes read the same calibration source through the data config of `olive_data.py` (`data_config()`).
See docs/olive_prune_quantize.json. Needs the `olive` extra.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

# Olive sends usage telemetry unless told not to; importing onnxprune's adapter must not make network
# calls (set OLIVE_DISABLE_TELEMETRY=0 before importing to opt in).
os.environ.setdefault("OLIVE_DISABLE_TELEMETRY", "1")

import onnx  # noqa: E402
from olive.hardware import AcceleratorSpec  # noqa: E402
from olive.model import ONNXModelHandler  # noqa: E402
from olive.model.utils import resolve_onnx_path  # noqa: E402
from olive.package_config import OlivePackageConfig  # noqa: E402
from olive.passes import Pass as OlivePass  # noqa: E402
from olive.passes.onnx.common import get_external_data_config, model_proto_to_olive_model  # noqa: E402
from olive.passes.pass_config import BasePassConfig, PassConfigParam  # noqa: E402

from onnxprune.adapters.steps import PrunePass, QuantizePass, SparsifyPass  # noqa: E402
from onnxprune.passes.base import Pass, resolve_passes  # noqa: E402

STEPS: dict[str, type[Pass]] = {"prune": PrunePass, "sparsify": SparsifyPass, "quantize": QuantizePass}
DATA_SCRIPT = Path(__file__).with_name("olive_data.py")


def make_step(step: str, calibration: str | None, options: dict[str, Any]) -> Pass:
    """The onnxprune Pass an OnnxPrune entry names."""
    if step not in STEPS:
        return resolve_passes([step])[0]
    kwargs = dict(options)
    if calibration is not None:
        kwargs["calibration"] = calibration
    return STEPS[step](**kwargs)


class OnnxPrune(OlivePass):  # type: ignore[misc]  # Olive ships no type hints
    """Run an onnxprune step (prune, sparsify, quantize, or a plugin pass) on an ONNX model."""

    @classmethod
    def _default_config(cls, accelerator_spec: AcceleratorSpec) -> dict[str, PassConfigParam]:
        return {
            "step": PassConfigParam(type_=str, default_value="prune",
                                    description="prune | sparsify | quantize | a plugin of onnxprune.passes"),
            "calibration": PassConfigParam(type_=str, default_value=None,
                                           description="onnxprune calibration source: .npz, .npy, a folder"),
            "options": PassConfigParam(type_=dict, default_value={}, description="keyword options of the step"),
            **get_external_data_config(),
        }

    def _run_for_config(self, model: ONNXModelHandler, config: type[BasePassConfig],
                        output_model_path: str) -> ONNXModelHandler:
        step = make_step(config.step, config.calibration, config.options or {})
        result = step(onnx.load(model.model_path))
        out = resolve_onnx_path(output_model_path, Path(model.model_path).name)
        return model_proto_to_olive_model(result.model, out, config)


def package_config() -> dict[str, Any]:
    """Olive's package config with `OnnxPrune` registered."""
    with open(OlivePackageConfig.get_default_config_path()) as f:
        config: dict[str, Any] = json.load(f)
    config["passes"]["OnnxPrune"] = {"module_path": "onnxprune.adapters.olive.OnnxPrune",
                                     "supported_providers": ["*"], "supported_accelerators": ["*"],
                                     "supported_precisions": ["*"], "supported_algorithms": ["*"],
                                     "supported_quantization_encodings": ["*"]}
    return config


def data_config(name: str, calibration: str, model_path: str) -> dict[str, Any]:
    """An Olive data config serving onnxprune's calibration batches (for Olive's quantization passes)."""
    return {"name": name, "user_script": str(DATA_SCRIPT),
            "load_dataset_config": {"type": "onnxprune_calibration",
                                    "params": {"source": calibration, "model_path": model_path}},
            "dataloader_config": {"type": "onnxprune_batches"}}
