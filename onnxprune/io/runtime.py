"""ONNX Runtime sessions, set up the same way everywhere (CPU, optional graph optimisation)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnxruntime as ort

from onnxprune.errors import OnnxPruneError
from onnxprune.io import external
from onnxprune.io.model_io import is_large
from onnxprune.io.types import Feed

InferenceSession = ort.InferenceSession


def session(model: onnx.ModelProto | str, *, optimize: bool = False, threads: int = 0) -> ort.InferenceSession:
    """A CPU session. A model whose weights stay on disk (or that is too large for one protobuf) is
    handed to ONNX Runtime as a file beside its data (`external.on_disk`): ONNX Runtime maps the
    weights instead of copying them, and without graph optimisation it does not pre-pack them
    either (a packed copy of every weight would double the memory of a large model)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    opts.log_severity_level = 4  # errors come back as exceptions, reported in one line
    if threads:
        opts.intra_op_num_threads = threads
    if isinstance(model, str):
        return _create(model, opts)
    large = is_large(model)
    if not (large or external.streams(model)):
        return _create(model.SerializeToString(), opts)
    if not optimize:
        opts.add_session_config_entry("session.disable_prepacking", "1")
    with external.on_disk(model, spill=large) as path:
        return _create(str(path), opts)


def _create(model: str | bytes, opts: ort.SessionOptions) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises several unrelated types
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
