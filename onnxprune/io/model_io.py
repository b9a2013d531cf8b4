"""The one I/O layer: load and check, save with external data, atomic writes, output path checks.

Every file a command writes goes through here: `check_paths` before any work, then `save_model`
(models) or `write_json` / `write_atomic` (side outputs). Writes go to a temp name beside the
destination, `.onnxprune-tmp-<host>-<pid>-<random>`, renamed into place when complete; a run killed
before the rename leaves that temp behind, and the next write into the same folder removes it once
its process is gone.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto

from onnxprune.errors import OnnxPruneError
from onnxprune.io import external
from onnxprune.io.external import EXTERNAL_ALIGN, EXTERNAL_MIN_BYTES, copy_fields, shell
from onnxprune.io.model_check import all_nodes, all_tensors, model_problem, raw_bytes
from onnxprune.io.skeleton import tensor_nbytes
from onnxprune.io.temps import clean_stale_temps, temp_prefix

# Protobuf cannot serialise a message of 2 GiB or more; stay well below it.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000

PathArg = str | os.PathLike[str] | None


# -- loading --------------------------------------------------------------------------------------

def external_locations(model: onnx.ModelProto) -> set[str]:
    """The `location` of every tensor stored outside the .onnx file (read without loading the data)."""
    out = set()
    for _, t in all_tensors(model.graph):
        if t.data_location == TensorProto.EXTERNAL:
            out.add(next((e.value for e in t.external_data if e.key == "location"), ""))
    return out


def _check_locations(model: onnx.ModelProto, path: Path) -> None:
    """External data must lie in the model's folder: no absolute path, `..` escape or outward symlink."""
    folder = path.parent.resolve()
    for loc in sorted(external_locations(model)):
        if not loc:
            raise OnnxPruneError(f"{path}: a tensor's external data has no location")
        if os.path.isabs(loc) or not (path.parent / loc).resolve().is_relative_to(folder):
            raise OnnxPruneError(f"{path}: external data location {loc!r} lies outside the model's folder "
                                 f"{path.parent.resolve()}; refusing to read it")


def load_model(path: str | os.PathLike[str], *, load_external_data: bool = True) -> onnx.ModelProto:
    """Load an ONNX model with its external data, or raise a one-line OnnxPruneError.

    The model is checked before use (`model_check`); external data locations are checked before
    any of them is read. External data above `external.STREAM_THRESHOLD` stays on disk: the
    initializers are stubs that `external.tensor_array` maps and `save_model` streams.
    """
    p = Path(path)
    if not p.exists():
        raise OnnxPruneError(f"{p}: no such file")
    if not p.is_file():
        raise OnnxPruneError(f"{p}: not a file")
    if p.stat().st_size == 0:
        raise OnnxPruneError(f"{p}: empty file, not an ONNX model")
    try:
        model = onnx.load(str(p), load_external_data=False)
        _check_locations(model, p)
        if load_external_data and external_bytes(model) > external.STREAM_THRESHOLD:
            _keep_on_disk(model, p)
        elif load_external_data:
            onnx.load_external_data_for_model(model, str(p.parent))
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
    problem = model_problem(model)
    if problem is not None:
        raise OnnxPruneError(f"{p}: {problem}")
    return model


def external_bytes(model: onnx.ModelProto) -> int:
    """Payload bytes of the tensors stored outside the .onnx file (from their dims, nothing read)."""
    return sum(tensor_nbytes(t) for _, t in all_tensors(model.graph) if t.data_location == TensorProto.EXTERNAL)


def _keep_on_disk(model: onnx.ModelProto, path: Path) -> None:
    """Initializers of external.SMALL_BYTES or more stay in their data files (checked to be there,
    whole); smaller ones and other external tensors (subgraph initializers, Constant values) are loaded."""
    for t in model.graph.initializer:
        if t.data_location == TensorProto.EXTERNAL:
            _keep_one(t, path)
    # what is left external lies outside the top-level initializers (protobuf wrappers have no stable id)
    for _, t in all_tensors(model.graph):
        if t.data_location == TensorProto.EXTERNAL and not external.is_stub(t):
            onnx.external_data_helper.load_external_data_for_tensor(t, str(path.parent))
            t.data_location = TensorProto.DEFAULT
            del t.external_data[:]


def _keep_one(t: TensorProto, path: Path) -> None:
    what = f"initializer {t.name!r}"
    info = {e.key: e.value for e in t.external_data}
    data = (path.parent / info["location"]).resolve()
    size = data.stat().st_size  # FileNotFoundError: reported as a missing data file
    offset = int(info.get("offset", 0))
    length = int(info["length"]) if "length" in info else size - offset
    want = raw_bytes(t)
    if offset < 0 or length < 0 or offset + length > size:
        raise OnnxPruneError(f"{path}: {what}: its external data ({length} bytes at offset {offset}) lies "
                             f"beyond the end of {data.name} ({size} bytes)")
    if want is not None and want != length:
        raise OnnxPruneError(f"{path}: {what} holds {length} bytes of external data, its dims "
                             f"{[int(d) for d in t.dims]} need {want}")
    external.keep(t, data, offset, length)
    if length < external.SMALL_BYTES:  # shape tensors among them: ONNX Runtime reads those while loading
        t.CopyFrom(external.inline(t))


def model_size_bytes(model: onnx.ModelProto) -> int:
    """Serialized size, counting initializer payloads (those on disk too) without serialising the model."""
    total = 0
    for t in model.graph.initializer:
        if t.HasField("raw_data"):
            total += len(t.raw_data)
        else:
            total += tensor_nbytes(t) if external.is_external(t) else t.ByteSize()
    return total + sum(n.ByteSize() for n in model.graph.node)


def is_large(model: onnx.ModelProto) -> bool:
    """Too big for one protobuf message: must go through external data."""
    return model_size_bytes(model) > EXTERNAL_DATA_THRESHOLD


# -- output paths ---------------------------------------------------------------------------------

def _model_data_files(path: Path) -> set[Path]:
    """The external data files an existing model file refers to (nothing if it cannot be read)."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - not a model, or a broken one: load_model reports it later
        return set()
    return {(path.parent / loc).resolve() for loc in external_locations(model) if loc}


def _same_file(a: Path, b: Path) -> bool:
    if a == b:
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _is_data_file_of(candidate: Path, output: Path) -> bool:
    """`out.onnx.data` or `out.onnx.<digest>.data`: where a model saved as `output` keeps its tensors."""
    return candidate.parent == output.parent and candidate.name.startswith(output.name + ".") \
        and candidate.name.endswith(".data")


def _check_folder(flag: str, out: Path) -> None:
    if out.is_dir():
        raise OnnxPruneError(f"{flag} {out}: is a folder, give a file path")
    folder = out.parent
    if not folder.exists():
        raise OnnxPruneError(f"{flag} {out}: folder {folder} does not exist")
    if not folder.is_dir():
        raise OnnxPruneError(f"{flag} {out}: {folder} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=temp_prefix(), dir=folder)
    except OSError as exc:
        raise OnnxPruneError(f"{flag} {out}: folder {folder} is not writable ({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(probe)


def check_paths(*, models: Mapping[str, PathArg] | None = None, inputs: Mapping[str, PathArg] | None = None,
                outputs: Mapping[str, PathArg], writable: bool = True) -> None:
    """Before any work: every output must differ from every input (an input model's external data
    included) and from every other output (and its external data), and lie in an existing, writable
    folder (`writable=False`: the paths are for another machine, only compared). Keys are the flags
    or arguments named in the error."""
    sources: list[tuple[str, Path, str]] = []  # (label, resolved path, what it is)
    for label, p in (models or {}).items():
        if p is not None:
            path = Path(p).resolve()
            sources.append((label, path, "the input model"))
            sources.extend((label, d, "the external data of the input model") for d in sorted(_model_data_files(path)))
    sources.extend((label, Path(p).resolve(), "an input") for label, p in (inputs or {}).items() if p is not None)
    seen: list[tuple[str, Path]] = []
    for flag, p in outputs.items():
        if p is None:
            continue
        out = Path(p).resolve()
        for label, src, what in sources:
            if _same_file(out, src):
                raise OnnxPruneError(f"{flag} {p} is {what} ({label}); choose another path "
                                     f"(inputs are never modified)")
        for other, prev in seen:
            if _same_file(out, prev) or _is_data_file_of(out, prev) or _is_data_file_of(prev, out):
                raise OnnxPruneError(f"{flag} {p} would overwrite the output of {other}; give each output its own path")
        seen.append((flag, out))
        if writable:
            _check_folder(flag, Path(p))


def _folder_of(dst: Path) -> Path:
    if dst.is_dir():
        raise OnnxPruneError(f"{dst}: is a folder, give a file path")
    parent = dst.parent if str(dst.parent) else Path(".")
    if not parent.is_dir():
        raise OnnxPruneError(f"{parent}: output folder does not exist")
    clean_stale_temps(parent)
    return parent


def write_atomic(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Write a whole file under a temp name in its folder, then rename it into place."""
    dst = Path(path)
    parent = _folder_of(dst)
    try:
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(), dir=parent)
    except OSError as exc:
        raise OnnxPruneError(f"cannot write {dst}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, dst)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise OnnxPruneError(f"cannot write {dst}: {exc.strerror or exc}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike[str], doc: Any) -> None:
    """A JSON side output (report, plan, curves), written atomically."""
    write_atomic(path, json.dumps(doc, indent=1) + "\n")


# -- checking models ------------------------------------------------------------------------------

ONNX_DOMAINS = ("", "ai.onnx.ml", "ai.onnx.training", "ai.onnx.preview.training")
UNCHECKED_DOMAIN = "onnxprune.unchecked"  # where the checker's copy puts the ops it cannot check
CHECKER = "the ONNX checker"


class CheckFailed(Exception):
    """A model fails the check that fits it (the message is one line)."""


def _domain(domain: str) -> str:
    return "" if domain == "ai.onnx" else domain


def unchecked_ops(model: onnx.ModelProto) -> list[str]:
    """The ops the ONNX checker cannot check, as `domain::op`: ops of another domain (it skips them, e.g.
    ONNX Runtime's com.microsoft contrib ops) and ops ONNX does not define at the model's opset (it
    rejects them, e.g. ONNX Runtime's SimplifiedLayerNormalization in the default domain)."""
    versions = {_domain(o.domain): int(o.version) for o in model.opset_import}
    functions = {(f.domain, f.name) for f in model.functions}
    found = set()
    for node in all_nodes(model.graph):
        domain = _domain(node.domain)
        if (node.domain, node.op_type) in functions:
            continue
        if domain in ONNX_DOMAINS and onnx.defs.has(node.op_type, versions.get(domain, 1), domain):
            continue
        found.add(f"{domain or 'ai.onnx'}::{node.op_type}")
    return sorted(found)


def check_kind(model: onnx.ModelProto) -> str:
    """Which check `check_model` runs on this model, for the user."""
    ops = unchecked_ops(model)
    if not ops:
        return CHECKER
    shown = ", ".join(ops[:4]) + (f" and {len(ops) - 4} more" if len(ops) > 4 else "")
    return f"{CHECKER} on the standard ops, and loading in ONNX Runtime (the checker cannot check {shown})"


def check_note(model: onnx.ModelProto) -> str | None:
    """`check_kind` where it is more than the ONNX checker alone (a command says so after writing), else None."""
    kind = check_kind(model)
    return None if kind == CHECKER else kind


def _checkable(m: onnx.ModelProto, ops: list[str]) -> onnx.ModelProto:
    """`m`, modified: the ops the checker cannot check sit in a placeholder domain, which it skips."""
    unchecked = set(ops)
    for node in all_nodes(m.graph):
        if f"{_domain(node.domain) or 'ai.onnx'}::{node.op_type}" in unchecked:
            node.domain = UNCHECKED_DOMAIN
    m.opset_import.append(onnx.helper.make_opsetid(UNCHECKED_DOMAIN, 1))
    return m


def check_model(model: onnx.ModelProto, *, path: Path | None = None) -> str:
    """Check a model the way its runtime needs: the ONNX checker, and where the model holds ops the
    checker cannot check (`unchecked_ops`), the checker on everything else plus loading the model in
    ONNX Runtime, which defines those ops. `path`: the written file (read from there: large models keep
    their tensors beside it). Returns `check_kind`; raises CheckFailed with the first line of the problem."""
    if path is None and external.streams(model):
        with external.on_disk(model) as written:  # the checker reads external data from files only
            return check_model(model, path=written)
    ops = unchecked_ops(model)
    try:
        if not ops:
            onnx.checker.check_model(str(path) if path is not None else model)
            return CHECKER
        if path is not None:
            standard = path.with_name(path.name + ".checked.onnx")  # beside it: external data resolves
            standard.write_bytes(_checkable(onnx.load(str(path), load_external_data=False), ops).SerializeToString())
            try:
                onnx.checker.check_model(str(standard))
            finally:
                standard.unlink(missing_ok=True)
        else:
            copy = onnx.ModelProto()
            copy.CopyFrom(model)
            onnx.checker.check_model(_checkable(copy, ops))
    except onnx.checker.ValidationError as exc:
        raise CheckFailed(f"it fails the ONNX checker: {str(exc).strip().splitlines()[0]}") from None
    _load_in_runtime(model if path is None else path)
    return check_kind(model)


def _load_in_runtime(model: onnx.ModelProto | Path) -> None:
    import onnxruntime as ort  # only models with ops the ONNX checker cannot check need it

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 4
    opts.add_session_config_entry("session.disable_prepacking", "1")  # a load check: no packed copy of the weights
    data = str(model) if isinstance(model, Path) else model.SerializeToString()
    try:
        ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises several unrelated types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckFailed(f"ONNX Runtime cannot load it: {first}") from None


# -- saving models --------------------------------------------------------------------------------

def _write_external(model: onnx.ModelProto, onnx_path: Path, stem: str) -> str:
    """Write the initializers of `model` above EXTERNAL_MIN_BYTES to `<stem>.<digest>.data` and the rest
    to `onnx_path` (both in onnx_path's folder; `model` is not modified). Returns the data file name.

    The digest (of the data) makes the name new whenever the data is: a data file is never
    overwritten with other bytes, so an older .onnx always finds the data it was written with."""
    out = shell(model)
    partial = onnx_path.parent / f"{stem}.partial"
    digest = hashlib.sha256()
    placed: list[tuple[TensorProto, int, int]] = []
    with open(partial, "wb") as f:
        for t in model.graph.initializer:
            size = tensor_nbytes(t) if external.is_external(t) else len(t.raw_data)
            if not (t.HasField("raw_data") or external.is_external(t)) or size < EXTERNAL_MIN_BYTES:
                out.graph.initializer.append(external.inline(t))
                continue
            f.write(b"\0" * (-f.tell() % EXTERNAL_ALIGN))
            offset = f.tell()
            stub = out.graph.initializer.add()
            if external.is_external(t):  # streamed from its data file, a chunk at a time
                length = external.copy_payload(t, f, digest)
                copy_fields(t, stub, skip="external_data")
            else:
                length = len(t.raw_data)
                f.write(t.raw_data)
                digest.update(t.raw_data)
                copy_fields(t, stub, skip="raw_data")
            placed.append((stub, offset, length))
        f.flush()
        os.fsync(f.fileno())  # on disk before any .onnx naming it can be renamed into place
    name = f"{stem}.{digest.hexdigest()[:16]}.data"
    os.replace(partial, onnx_path.parent / name)
    for stub, offset, length in placed:
        stub.data_location = TensorProto.EXTERNAL
        for key, value in (("location", name), ("offset", str(offset)), ("length", str(length))):
            stub.external_data.add(key=key, value=value)
    onnx_path.write_bytes(out.SerializeToString())
    return name


def save_model(model: onnx.ModelProto, path: str | os.PathLike[str], *, check: bool = True) -> Path:
    """Write atomically: a temp folder beside the destination, `check_model` (the ONNX checker, and
    loading in ONNX Runtime for models with ops the checker cannot check), then rename.

    Models above ~1.8 GB, and models whose weights stay on disk (`load_model`), keep their tensors in
    `<name>.<digest>.data` beside the file (streamed there from their data files, a chunk at a time). The data file
    is moved in first under its new name, then the .onnx replaces the old one, then the data file the
    old .onnx used (if it was named after it) is deleted: a crash at any point leaves the old or the
    new model, each with its own data.
    """
    dst = Path(path)
    parent = _folder_of(dst)
    old_data = _model_data_files(dst) if any(parent.glob(glob.escape(dst.name) + ".*data")) else set()
    try:
        tmpdir = Path(tempfile.mkdtemp(prefix=temp_prefix(), dir=parent))
    except OSError as exc:
        raise OnnxPruneError(f"cannot write {dst}: {exc.strerror or exc}") from None
    data_name = None
    try:
        tmp = tmpdir / dst.name
        if is_large(model) or external.streams(model):
            data_name = _write_external(model, tmp, dst.name)
        else:
            tmp.write_bytes(model.SerializeToString())
        if check:
            try:
                check_model(model, path=tmp)
            except CheckFailed as exc:
                raise OnnxPruneError(f"refusing to write {dst}: {str(exc).replace(str(tmp), str(dst))}") from None
        if data_name is not None:
            os.replace(tmpdir / data_name, parent / data_name)
        os.replace(tmp, dst)
    except OSError as exc:
        raise OnnxPruneError(f"cannot write {dst}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    new_data = (parent / data_name).resolve() if data_name else None
    for old in old_data:
        if old != new_data and _is_data_file_of(old, dst.resolve()):
            with contextlib.suppress(OSError):
                old.unlink()
    return dst
