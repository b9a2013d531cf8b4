"""The one I/O layer: load, save with external data, atomic writes, size checks."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from onnxprune.errors import OnnxPruneError

# Protobuf cannot serialise a message of 2 GiB or more; stay well below it.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000


def load_model(path: str | os.PathLike[str], *, load_external_data: bool = True) -> onnx.ModelProto:
    """Load an ONNX model with its external data, or raise a one-line OnnxPruneError."""
    p = Path(path)
    if not p.exists():
        raise OnnxPruneError(f"{p}: no such file")
    if not p.is_file():
        raise OnnxPruneError(f"{p}: not a file")
    if p.stat().st_size == 0:
        raise OnnxPruneError(f"{p}: empty file, not an ONNX model")
    try:
        model = onnx.load(str(p), load_external_data=load_external_data)
    except DecodeError as exc:
        raise OnnxPruneError(f"{p}: not a valid ONNX model (protobuf decode failed: {exc})") from None
    except FileNotFoundError as exc:
        raise OnnxPruneError(f"{p}: external data file missing ({exc.filename})") from None
    except (OSError, ValueError, onnx.onnx_cpp2py_export.checker.ValidationError) as exc:  # type: ignore[attr-defined]
        raise OnnxPruneError(f"{p}: cannot load ({type(exc).__name__}: {exc})") from None
    if not model.graph.node:
        raise OnnxPruneError(f"{p}: not an ONNX model (no graph nodes; truncated or another format?)")
    if not model.opset_import:
        raise OnnxPruneError(f"{p}: ONNX model declares no opset")
    return model


def model_size_bytes(model: onnx.ModelProto) -> int:
    """Serialized size, counting initializer payloads without serialising the model."""
    total = 0
    for t in model.graph.initializer:
        total += len(t.raw_data) if t.HasField("raw_data") else t.ByteSize()
    return total + sum(n.ByteSize() for n in model.graph.node)


def is_large(model: onnx.ModelProto) -> bool:
    """Too big for one protobuf message: must go through external data."""
    return model_size_bytes(model) > EXTERNAL_DATA_THRESHOLD


def check_distinct_paths(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    s, d = Path(src).resolve(), Path(dst).resolve()
    if s == d:
        raise OnnxPruneError(f"output path {dst} is the input model; choose another path (the input is never modified)")


def save_model(model: onnx.ModelProto, path: str | os.PathLike[str], *, check: bool = True) -> Path:
    """Write atomically: temp file in the destination folder, validate, then rename.

    Models above ~1.8 GB are written with their tensors in `<name>.data` beside the file.
    """
    dst = Path(path)
    if dst.exists() and dst.is_dir():
        raise OnnxPruneError(f"{dst}: is a directory")
    parent = dst.parent if str(dst.parent) else Path(".")
    if not parent.exists():
        raise OnnxPruneError(f"{parent}: output folder does not exist")
    external = is_large(model)
    tmpdir = Path(tempfile.mkdtemp(prefix=".onnxprune-", dir=parent))
    try:
        tmp = tmpdir / dst.name
        data_name = dst.name + ".data"
        if external:
            onnx.save_model(model, str(tmp), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=data_name, size_threshold=1024)
        else:
            onnx.save_model(model, str(tmp))
        if check:
            try:
                onnx.checker.check_model(str(tmp))
            except onnx.checker.ValidationError as exc:
                raise OnnxPruneError(f"refusing to write {dst}: result fails the ONNX checker: "
                                     f"{str(exc).splitlines()[0]}") from None
        if external:
            os.replace(tmpdir / data_name, parent / data_name)
        os.replace(tmp, dst)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return dst
