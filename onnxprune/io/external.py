"""Weights that stay on disk: external data read where it lies, scratch data for new tensors, and
model files for ONNX Runtime and the ONNX checker that leave the weights where they are.

`model_io.load_model` keeps the initializers of a model whose external data exceeds STREAM_THRESHOLD
in their files: in memory each one is a stub whose `location` is the absolute path of its data file,
registered here (`keep`; only registered files are ever read). Copies of such a ModelProto copy the
graph, never the weights, and a model "streams" while it holds such stubs (`streams`).

- `tensor_array(t)`: the values of an initializer. External ones of SMALL_BYTES or more are
  memory-mapped read-only at their offset (pages are read when touched and dropped with the array);
  smaller ones are read into memory.
- `new_tensor(model, value, name)`: a new initializer. For a streaming model a value of SMALL_BYTES
  or more is appended to this process's scratch file (beside the model's data when that folder is
  writable, else in the system temp folder) instead of staying in memory. Scratch files are removed
  when the `scratch_scope` that made them ends (each CLI command is one) or at exit; a killed run's
  are removed by the next writer into that folder (`temps.clean_stale_temps`).
- `on_disk(model)`: the model as a file that ONNX Runtime or the checker can open, its weights where
  they are (in-memory ones of a model too large for one protobuf in a temp data file beside it): the graph under a temp name beside its data when the data lies in one writable folder,
  else in a temp folder that hard-links the data files (or, across file systems, copies each once
  per scope). ONNX Runtime refuses data outside the model file's folder, symlinks included.
- `copy_payload`: stream one tensor's bytes into a data file being written (`model_io.save_model`).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from onnxprune.errors import OnnxPruneError
from onnxprune.io.temps import clean_stale_temps, temp_prefix

STREAM_THRESHOLD = 256 << 20  # external data above this stays on disk when a model is loaded
SMALL_BYTES = 1 << 20  # tensors below this are held in memory, also for a model that streams
EXTERNAL_MIN_BYTES = 1024  # smaller initializers stay inside a written .onnx
EXTERNAL_ALIGN = 4096  # tensor offsets in data files, so that ONNX Runtime can map them
CHUNK = 64 << 20  # bytes copied at a time

_known: set[str] = set()  # data files (absolute paths) that tensors may be read from


class _Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...


# -- reading --------------------------------------------------------------------------------------

def is_external(t: TensorProto) -> bool:
    return t.data_location == TensorProto.EXTERNAL


def streams(model: onnx.ModelProto) -> bool:
    """Whether `model` holds initializers whose data stays on disk."""
    return any(is_external(t) for t in model.graph.initializer)


def is_stub(t: TensorProto) -> bool:
    """Whether `t` is a stub made by `keep` (its data file was checked when the model was loaded)."""
    return is_external(t) and any(e.key == "location" and e.value in _known for e in t.external_data)


def keep(t: TensorProto, path: Path, offset: int, length: int) -> None:
    """Make `t` a stub read from `path` (absolute, already checked by the caller) at offset/length."""
    _known.add(str(path))
    del t.external_data[:]
    for key, value in (("location", str(path)), ("offset", str(offset)), ("length", str(length))):
        t.external_data.add(key=key, value=value)


def span(t: TensorProto) -> tuple[Path, int, int]:
    """(data file, offset, length) of a stub made by `keep` or `new_tensor`."""
    info = {e.key: e.value for e in t.external_data}
    location = info.get("location", "")
    if location not in _known:
        raise OnnxPruneError(f"initializer {t.name!r}: its data lies in external file {location!r}, which was not "
                             f"loaded with the model (load it with onnxprune.io.model_io.load_model)")
    return Path(location), int(info.get("offset", 0)), int(info["length"])


def _plain_dtype(t: TensorProto, length: int) -> np.dtype | None:
    """The numpy type to map `t`'s raw bytes as, or None (packed, non-numeric, or big-endian host)."""
    if sys.byteorder != "little" or t.data_type in (TensorProto.STRING, TensorProto.UNDEFINED):
        return None
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type))
    except (KeyError, TypeError, ValueError):
        return None
    n = int(np.prod([int(d) for d in t.dims], dtype=np.int64))
    return dtype if dtype.kind in "biufc" and n * dtype.itemsize == length else None


def mapped(t: TensorProto) -> bool:
    """Whether `tensor_array(t)` maps the file rather than reading it into memory."""
    if not is_external(t):
        return False
    _, _, length = span(t)
    return length >= SMALL_BYTES and _plain_dtype(t, length) is not None


def _read(path: Path, offset: int, length: int) -> bytearray:
    buf = bytearray(length)
    with open(path, "rb") as f:
        f.seek(offset)
        got = f.readinto(buf)
    if got != length:
        raise OnnxPruneError(f"{path}: external data ends after {offset + got} bytes, {offset + length} expected")
    return buf


def tensor_array(t: TensorProto) -> np.ndarray:
    """The values of initializer `t` (read-only and memory-mapped when `mapped(t)`)."""
    if not is_external(t):
        return numpy_helper.to_array(t)
    path, offset, length = span(t)
    dtype = _plain_dtype(t, length)
    shape = tuple(int(d) for d in t.dims)
    if dtype is not None and length >= SMALL_BYTES:
        return np.memmap(path, dtype=dtype.newbyteorder("<"), mode="r", offset=offset, shape=shape).view(np.ndarray)
    data = _read(path, offset, length)
    if dtype is not None:
        return np.frombuffer(data, dtype=dtype).reshape(shape)
    inline = TensorProto()
    copy_fields(t, inline, skip="external_data")
    inline.data_location = TensorProto.DEFAULT
    inline.raw_data = bytes(data)
    return numpy_helper.to_array(inline)


def inline(t: TensorProto) -> TensorProto:
    """A copy of `t` holding its data (for small tensors written inside a .onnx)."""
    if not is_external(t):
        return t
    path, offset, length = span(t)
    out = TensorProto()
    copy_fields(t, out, skip="external_data")
    out.data_location = TensorProto.DEFAULT
    out.raw_data = bytes(_read(path, offset, length))
    return out


def copy_payload(t: TensorProto, out: BinaryIO, digest: _Digest) -> int:
    """Append the bytes of external tensor `t` to `out` in chunks (also into `digest`); their length."""
    path, offset, length = span(t)
    with open(path, "rb") as f:
        f.seek(offset)
        left = length
        while left:
            chunk = f.read(min(CHUNK, left))
            if not chunk:
                raise OnnxPruneError(f"{path}: external data of {t.name!r} ends early")
            digest.update(chunk)
            out.write(chunk)
            left -= len(chunk)
    return length


# -- scratch data ---------------------------------------------------------------------------------

@dataclass
class _Scratch:
    path: Path
    file: BinaryIO


_scratch: dict[Path, _Scratch] = {}  # folder -> this process's scratch file there
_mirrors: dict[Path, Path] = {}  # data file that could not be linked -> its copy in the temp folder
_made: list[Path] = []  # every file above, in the order made (scopes remove theirs)


def _writable_temp(folder: Path, suffix: str) -> tuple[int, Path] | None:
    try:
        fd, name = tempfile.mkstemp(prefix=temp_prefix(), suffix=suffix, dir=folder)
    except OSError:
        return None
    return fd, Path(name)


def _scratch_in(folder: Path | None) -> _Scratch:
    for target in (folder, Path(tempfile.gettempdir()).resolve()):
        if target is None:
            continue
        if target in _scratch:
            return _scratch[target]
        clean_stale_temps(target)
        made = _writable_temp(target, ".data")
        if made is not None:
            fd, path = made
            _scratch[target] = _Scratch(path, os.fdopen(fd, "wb"))
            _known.add(str(path))
            _made.append(path)
            return _scratch[target]
    raise OnnxPruneError(f"no writable folder for scratch data (tried {folder} and {tempfile.gettempdir()})")


def data_folder(model: onnx.ModelProto) -> Path | None:
    """The folder of the first data file `model` streams from (None: it holds every weight)."""
    t = next((t for t in model.graph.initializer if is_external(t)), None)
    return None if t is None else span(t)[0].parent


def new_tensor(model: onnx.ModelProto, value: np.ndarray, name: str) -> TensorProto:
    """An initializer `name` holding `value` for `model`: in memory, or in scratch data when the
    model streams and the value is SMALL_BYTES or more (`value` is not kept)."""
    value = np.ascontiguousarray(value)
    if value.nbytes < SMALL_BYTES or value.dtype.kind not in "biufc" or not streams(model):
        return numpy_helper.from_array(value, name)
    value = value.astype(value.dtype.newbyteorder("<"), copy=False)
    scratch = _scratch_in(data_folder(model))
    f = scratch.file
    f.write(b"\0" * (-f.tell() % EXTERNAL_ALIGN))
    offset = f.tell()
    f.write(value.data)
    f.flush()  # readers open the file by name
    t = TensorProto(name=name, data_type=onnx.helper.np_dtype_to_tensor_dtype(value.dtype), dims=list(value.shape),
                    data_location=TensorProto.EXTERNAL)
    keep(t, scratch.path, offset, value.nbytes)
    return t


def _drop(path: Path) -> None:
    for folder, s in list(_scratch.items()):
        if s.path == path:
            s.file.close()
            del _scratch[folder]
    for src, copy in list(_mirrors.items()):
        if copy == path:
            del _mirrors[src]
    _known.discard(str(path))
    path.unlink(missing_ok=True)


@contextlib.contextmanager
def scratch_scope() -> Iterator[None]:
    """Scratch data (and data copies) made inside the block are removed when it ends: models that
    stream from them must not be used after it."""
    start = len(_made)
    try:
        yield
    finally:
        while len(_made) > start:
            _drop(_made.pop())


@atexit.register
def _drop_all() -> None:
    while _made:
        _drop(_made.pop())


# -- model files for ONNX Runtime and the checker --------------------------------------------------

def copy_fields(src: Any, dst: Any, *, skip: str) -> None:
    """Copy every set field of a protobuf message except `skip` (no deep copy of what is skipped)."""
    for fd, value in src.ListFields():
        if fd.name == skip:
            continue
        if fd.is_repeated:
            getattr(dst, fd.name).extend(value)
        elif fd.message_type is not None:
            getattr(dst, fd.name).CopyFrom(value)
        else:
            setattr(dst, fd.name, value)


def shell(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` without its initializers (the caller adds them, e.g. as stubs)."""
    out = onnx.ModelProto()
    copy_fields(model, out, skip="graph")
    copy_fields(model.graph, out.graph, skip="initializer")
    return out


def _link_into(folder: Path, files: list[Path]) -> dict[Path, str]:
    """Hard links to `files` in `folder` (a copy, made once per scope, where linking fails)."""
    names = {}
    for i, src in enumerate(files):
        name = f"data{i}.data"
        try:
            os.link(_mirrors.get(src, src), folder / name)
        except OSError:
            made = _writable_temp(folder.parent, ".data")
            if made is None:
                raise OnnxPruneError(f"cannot link or copy {src} into {folder}") from None
            os.close(made[0])
            shutil.copyfile(src, made[1])
            _mirrors[src] = made[1]
            _made.append(made[1])
            os.link(made[1], folder / name)
        names[src] = name
    return names


@contextlib.contextmanager
def on_disk(model: onnx.ModelProto, *, spill: bool = False) -> Iterator[Path]:
    """`model` as a .onnx file whose external data ONNX Runtime and the checker can read, removed when
    the block ends (a session created inside keeps working: it has read or mapped what it needs).
    spill: in-memory initializers of EXTERNAL_MIN_BYTES or more go to a temp data file beside it
    (a model too large for one protobuf)."""
    files = sorted({span(t)[0] for t in model.graph.initializer if is_external(t)})
    folders = {p.parent for p in files}
    made: list[Path] = []
    workdir: Path | None = None
    place = _writable_temp(next(iter(folders)), ".onnx") if len(folders) == 1 else None
    try:
        if place is not None:
            os.close(place[0])
            path = place[1]
            made.append(path)
            names = {p: os.path.relpath(p, path.parent) for p in files}
        else:
            workdir = Path(tempfile.mkdtemp(prefix=temp_prefix()))
            path = workdir / "model.onnx"
            names = _link_into(workdir, files)
        out = shell(model)
        spill_file: BinaryIO | None = None
        spill_path = path.with_name(path.name + ".data")
        for t in model.graph.initializer:
            stub = out.graph.initializer.add()
            if is_external(t):
                src, offset, length = span(t)
                copy_fields(t, stub, skip="external_data")
                for key, value in (("location", names[src]), ("offset", str(offset)), ("length", str(length))):
                    stub.external_data.add(key=key, value=value)
            elif spill and t.HasField("raw_data") and len(t.raw_data) >= EXTERNAL_MIN_BYTES:
                if spill_file is None:
                    made.append(spill_path)
                    spill_file = open(spill_path, "wb")  # noqa: SIM115 - closed below
                spill_file.write(b"\0" * (-spill_file.tell() % EXTERNAL_ALIGN))
                offset = spill_file.tell()
                spill_file.write(t.raw_data)
                copy_fields(t, stub, skip="raw_data")
                stub.data_location = TensorProto.EXTERNAL
                for key, value in (("location", spill_path.name), ("offset", str(offset)),
                                   ("length", str(len(t.raw_data)))):
                    stub.external_data.add(key=key, value=value)
            else:
                stub.CopyFrom(t)
        if spill_file is not None:
            spill_file.close()
        path.write_bytes(out.SerializeToString())
        yield path
    finally:
        for p in made:
            p.unlink(missing_ok=True)
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
