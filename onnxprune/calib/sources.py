"""Calibration sources: each yields chunks `{input_name: array}` with a leading sample axis.

Chunks are not yet checked against the model: `batching.rebatch` validates shapes, casts dtypes
and cuts the stream into batches. Files are read one at a time (a `.npz` member is read whole).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from onnxprune.calib.images import ImageOptions, list_images, load_image
from onnxprune.errors import OnnxPruneError
from onnxprune.io.inputs import InputSpec
from onnxprune.io.npfile import reading

Chunk = dict[str, np.ndarray]


def file_stem_for(input_name: str) -> str:
    """The file prefix of an input in a multi-input `.npy` folder: `<name>__*.npy`.

    Characters outside [A-Za-z0-9_.-] in the input name are replaced by `_`.
    """
    return re.sub(r"[^A-Za-z0-9_.-]", "_", input_name)


def _load_npy(path: Path) -> np.ndarray:
    with reading(f"--calib {path}"):
        return np.load(path, mmap_mode="r", allow_pickle=False)


def open_npz(path: Path, specs: Sequence[InputSpec]) -> Iterator[Chunk]:
    """Arrays keyed by input name; a lone array is accepted for a single-input model."""
    with reading(f"--calib {path}"):
        data = np.load(path, allow_pickle=False)
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise OnnxPruneError(f"{path}: expected a .npz archive")
    with data, reading(f"--calib {path}"):
        keys = list(data.files)
        if not keys:
            raise OnnxPruneError(f"{path}: the archive holds no arrays")
        names = [s.name for s in specs]
        if len(specs) == 1 and len(keys) == 1:
            chunk = {names[0]: np.asarray(data[keys[0]])}
        else:
            missing = [n for n in names if n not in keys]
            if missing:
                raise OnnxPruneError(f"{path}: no array for input(s) {', '.join(map(repr, missing))} "
                                     f"(archive keys: {', '.join(keys)})")
            chunk = {n: np.asarray(data[n]) for n in names}
    return iter([chunk])


def _npy_groups(folder: Path, files: list[Path], specs: Sequence[InputSpec]) -> dict[str, list[Path]]:
    if len(specs) == 1:
        return {specs[0].name: files}
    groups: dict[str, list[Path]] = {}
    for spec in specs:
        prefix = file_stem_for(spec.name) + "__"
        groups[spec.name] = [p for p in files if p.name.startswith(prefix)]
        if not groups[spec.name]:
            raise OnnxPruneError(f"{folder}: no {prefix}*.npy files for input {spec.name!r} "
                                 f"(multi-input folders name files <input>__<id>.npy)")
    counts = {n: len(v) for n, v in groups.items()}
    if len(set(counts.values())) != 1:
        raise OnnxPruneError(f"{folder}: inputs have different numbers of files: {counts}")
    return groups


def open_npy_folder(folder: Path, specs: Sequence[InputSpec]) -> Iterator[Chunk]:
    """One sample or one batch per file, sorted by file name.

    Single-input model: every `*.npy`. Multi-input model: `<input>__<id>.npy` per input; the
    n-th files (in sorted order) of each input form one chunk.
    """
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".npy")
    groups = _npy_groups(folder, files, specs)

    def gen() -> Iterator[Chunk]:
        for paths in zip(*groups.values(), strict=True):
            yield {name: _load_npy(p) for name, p in zip(groups, paths, strict=True)}

    return gen()


def open_npy_file(path: Path, specs: Sequence[InputSpec]) -> Iterator[Chunk]:
    if len(specs) != 1:
        raise OnnxPruneError(f"{path}: a single .npy file only feeds a single-input model "
                             f"(this one has {len(specs)}); use a .npz keyed by input name")
    return iter([{specs[0].name: _load_npy(path)}])


def _image_geometry(spec: InputSpec, opts: ImageOptions) -> tuple[tuple[int, int], int]:
    if len(spec.dims) != 4:
        raise OnnxPruneError(f"image calibration needs a rank-4 image input; {spec.name!r} has rank {len(spec.dims)}")
    c_dim, h_dim, w_dim = (spec.dims[3], spec.dims[1], spec.dims[2]) if opts.nhwc else spec.dims[1:4]
    channels = c_dim if isinstance(c_dim, int) else 3
    if opts.size is not None:
        return opts.size, channels
    if isinstance(h_dim, int) and isinstance(w_dim, int):
        return (h_dim, w_dim), channels
    raise OnnxPruneError(f"input {spec.name!r} has dynamic height/width; give --image-size HxW")


def open_image_folder(folder: Path, specs: Sequence[InputSpec], opts: ImageOptions) -> Iterator[Chunk]:
    if len(specs) != 1:
        raise OnnxPruneError(f"{folder}: image folders only feed single-input models (this one has {len(specs)})")
    spec = specs[0]
    size, channels = _image_geometry(spec, opts)
    paths = list_images(folder)

    def gen() -> Iterator[Chunk]:
        for p in paths:
            yield {spec.name: load_image(p, size=size, channels=channels, opts=opts)[None]}

    return gen()


def open_source(path: Path, specs: Sequence[InputSpec], opts: ImageOptions) -> Iterator[Chunk]:
    """Pick the reader from the path: `.npz`, `.npy`, or a folder of `.npy` files or images."""
    if not path.exists():
        raise OnnxPruneError(f"--calib {path}: no such file or folder")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".npz":
            return open_npz(path, specs)
        if suffix == ".npy":
            return open_npy_file(path, specs)
        raise OnnxPruneError(f"--calib {path}: expected a .npz or .npy file, or a folder of .npy files or images")
    has_npy = any(p.suffix.lower() == ".npy" for p in path.iterdir())
    has_img = bool(list_images(path))
    if has_npy and has_img:
        raise OnnxPruneError(f"--calib {path}: folder mixes .npy files and images; keep one kind")
    if has_npy:
        return open_npy_folder(path, specs)
    if has_img:
        return open_image_folder(path, specs, opts)
    raise OnnxPruneError(f"--calib {path}: folder holds no .npy files or images")
