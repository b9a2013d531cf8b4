"""Calibration data: every source becomes an iterator of feed dicts `{input_name: array}` in batches.

Sources (`CalibConfig.path`):
- `.npz`: arrays keyed by input name with a leading sample axis; a lone array is fine for a
  single-input model. A single sample may drop the sample axis.
- `.npy`: one array, single-input models only.
- a folder of `.npy` files, sorted by name; each file holds one sample or a batch. For several
  inputs, name files `<input>__<id>.npy` (non [A-Za-z0-9_.-] characters of the input name -> `_`);
  the n-th file of every input form one chunk.
- a folder of images (png/jpg/bmp/...; needs Pillow), preprocessed as `ImageOptions` documents.
- None: random inputs from `onnxprune.io.inputs.random_inputs`, with a `CalibrationWarning`.

Samples are checked against the model's static dims and cast to the input dtype; a static batch
dim in the model overrides `batch`. Files are read one at a time, so memory stays at one batch
(plus one file / one `.npz` member).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx

from onnxprune.calib.batching import CalibrationWarning, Feed, batch_size_for, first_samples, rebatch
from onnxprune.calib.config import DEFAULT_RANDOM_SAMPLES, CalibConfig
from onnxprune.calib.images import ImageOptions
from onnxprune.calib.sources import file_stem_for, open_source
from onnxprune.cli.calib_options import calib_options, config_from_options
from onnxprune.errors import OnnxPruneError
from onnxprune.io.inputs import feed_rows, graph_inputs, random_inputs

BatchFactory = Callable[[], Iterator[Feed]]
# What a pass takes as calibration: a CalibConfig or a path (None: random inputs), a zero-argument
# callable returning fresh iterators of feeds, or ready feeds.
FeedLike = Mapping[str, np.ndarray]
CalibrationLike = CalibConfig | str | Path | Callable[[], Iterable[FeedLike]] | Sequence[FeedLike] | None

__all__ = [
    "BatchFactory", "CalibConfig", "CalibrationLike", "CalibrationWarning", "Feed", "ImageOptions", "batch_factory",
    "calib_options", "calibration_batches", "config_from_options", "feed_factory",
    "file_stem_for", "first_samples", "random_batches", "real_feeds", "timing_feed",
]

ORACLE_SAMPLES = 4  # real samples the shape probe and the oracle run on: a few are enough to be valid inputs


def random_batches(model: onnx.ModelProto, *, samples: int = DEFAULT_RANDOM_SAMPLES, batch: int = 16,
                   seed: int = 0, shapes: Mapping[str, tuple[int, ...]] | None = None,
                   warn: bool = True) -> Iterator[Feed]:
    """Random feeds (N(0,1) floats) totalling `samples`; warns that scores will be weaker."""
    specs = graph_inputs(model)
    if not specs:
        raise OnnxPruneError("the model has no inputs to calibrate")
    if warn:
        warnings.warn("no calibration data (--calib): using random inputs; activation-based scores "
                      "(wanda, sparsegpt, reconstruction) will be weaker", CalibrationWarning, stacklevel=2)
    size = batch_size_for(specs, batch)

    def gen() -> Iterator[Feed]:
        done, i = 0, 0
        while done < samples:
            n = size if any(isinstance(s.dims[0], int) for s in specs if s.dims) else min(size, samples - done)
            yield random_inputs(model, shapes=shapes, batch=n, seed=seed + i)
            done += n
            i += 1

    return gen()


def as_config(config: CalibConfig | str | os.PathLike[str] | None) -> CalibConfig:
    """A CalibConfig as given, or one reading the path (None: random inputs)."""
    return config if isinstance(config, CalibConfig) else CalibConfig(path=Path(config) if config else None)


def real_feeds(model: onnx.ModelProto, config: CalibConfig | str | os.PathLike[str] | None, *,
               samples: int = ORACLE_SAMPLES) -> list[Feed]:
    """The first `samples` samples of the user's data, for runs that need valid inputs (the shape
    probe, the oracle, latency); [] without data (those runs then use `inputs.random_inputs`)."""
    cfg = as_config(config)
    if cfg.path is None:
        return []
    static = any(s.dims and isinstance(s.dims[0], int) for s in graph_inputs(model))
    return first_samples(calibration_batches(model, cfg), samples, cut=not static)


def timing_feed(model: onnx.ModelProto, config: CalibConfig | str | os.PathLike[str] | None, *,
                batch: int) -> Feed | None:
    """`batch` samples of the user's data to time the model on (rows repeated when the data holds
    fewer); None without data."""
    feeds = real_feeds(model, config, samples=batch)
    if not feeds:
        return None
    joined = {k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]}
    rows = np.arange(batch) % feed_rows(joined)
    return {k: np.ascontiguousarray(v[rows]) for k, v in joined.items()}


def calibration_batches(model: onnx.ModelProto, config: CalibConfig | str | Path | None = None, *,
                        shapes: Mapping[str, tuple[int, ...]] | None = None) -> Iterator[Feed]:
    """Batches of feeds for `model` from `config` (a CalibConfig, a path, or None for random).

    Opening errors (missing file, wrong keys, empty folder) raise OnnxPruneError here; shape
    errors of later files raise while iterating. `shapes` only sizes dynamic dims of random inputs.
    """
    cfg = as_config(config)
    if cfg.path is None:
        return random_batches(model, samples=cfg.samples or DEFAULT_RANDOM_SAMPLES, batch=cfg.batch,
                              seed=cfg.seed, shapes=shapes)
    specs = graph_inputs(model)
    if not specs:
        raise OnnxPruneError("the model has no inputs to calibrate")
    chunks = open_source(Path(cfg.path), specs, cfg.image)
    return rebatch(chunks, specs, batch=cfg.batch, limit=cfg.samples, origin=str(cfg.path))


def batch_factory(model: onnx.ModelProto, config: CalibConfig | str | Path | None = None, *,
                  shapes: Mapping[str, tuple[int, ...]] | None = None) -> BatchFactory:
    """A zero-argument callable returning a fresh iterator each time (for multi-pass algorithms).

    The source is opened once right away so that bad input fails early; the random-input
    warning is emitted once.
    """
    cfg = as_config(config)
    first = calibration_batches(model, cfg, shapes=shapes)
    if cfg.path is None:
        samples = cfg.samples or DEFAULT_RANDOM_SAMPLES
        return lambda: random_batches(model, samples=samples, batch=cfg.batch, seed=cfg.seed,
                                      shapes=shapes, warn=False)
    del first
    return lambda: calibration_batches(model, cfg, shapes=shapes)



def feed_factory(model: onnx.ModelProto, calibration: CalibrationLike, *,
                 shapes: Mapping[str, tuple[int, ...]] | None = None) -> Callable[[], Iterable[FeedLike]]:
    """Any CalibrationLike as a zero-argument callable returning fresh iterators of feeds for `model`
    (`shapes` sizes the dynamic dims of random inputs)."""
    if calibration is None or isinstance(calibration, CalibConfig | str | Path):
        return batch_factory(model, calibration, shapes=shapes)
    if callable(calibration):
        return calibration
    feeds = list(calibration)
    return lambda: iter(feeds)
