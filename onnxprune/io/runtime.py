"""ONNX Runtime sessions, set up the same way everywhere (CPU, optional graph optimisation)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence

import numpy as np
import onnx
import onnxruntime as ort

from onnxprune.errors import OnnxPruneError
from onnxprune.io.model_io import is_large
from onnxprune.io.types import Feed

InferenceSession = ort.InferenceSession


def session(model: onnx.ModelProto | str, *, optimize: bool = False, threads: int = 0) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    opts.log_severity_level = 4  # errors come back as exceptions, reported in one line
    if threads:
        opts.intra_op_num_threads = threads
    if isinstance(model, onnx.ModelProto) and is_large(model):
        return _large_session(model, opts)
    data = model if isinstance(model, str) else model.SerializeToString()
    try:
        return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises several unrelated types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OnnxPruneError(f"ONNX Runtime cannot load the model: {first}") from None


def _large_session(model: onnx.ModelProto, opts: ort.SessionOptions) -> ort.InferenceSession:
    """Models over 2 GB go to ORT as a file with external data (a temp folder, removed after loading)."""
    with tempfile.TemporaryDirectory(prefix="onnxprune-ort-") as tmp:
        path = os.path.join(tmp, "model.onnx")
        onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location="model.onnx.data", size_threshold=1024)
        try:
            return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise OnnxPruneError(f"ONNX Runtime cannot load the model: {first}") from None


def run(model: onnx.ModelProto | ort.InferenceSession, feed: Feed,
        outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    sess = model if isinstance(model, ort.InferenceSession) else session(model)
    names = list(outputs) if outputs is not None else [o.name for o in sess.get_outputs()]
    try:
        vals = sess.run(names, dict(feed))
    except Exception as exc:  # noqa: BLE001
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OnnxPruneError(f"ONNX Runtime failed to run the model: {first}{_sizes_hint(sess, feed)}") from None
    return dict(zip(names, vals, strict=True))


def _sizes_hint(sess: ort.InferenceSession, feed: Feed) -> str:
    """Dynamic dims run at default sizes unless --shapes says otherwise; some models need more (an
    STFT's reflect pad longer than the default length): name the sizes that ran and the flag."""
    ran = [f"{i.name} {'x'.join(map(str, np.shape(feed[i.name])))}" for i in sess.get_inputs()
           if i.name in feed and not all(isinstance(d, int) and d > 0 for d in i.shape)]
    if not ran:
        return ""
    return (f" (inputs with dynamic dims ran at {', '.join(ran)}; if the model needs other sizes, "
            f"give them with --shapes NAME:DxDxD)")
