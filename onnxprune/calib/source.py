"""Calibration data: what the user gave becomes one `CalibrationSource` of batches of feed dicts
`{input_name: array}`.

`CalibrationSource.of(calibration, model)` is the one conversion, done where input enters (the CLI
commands, `api.prune`, `passes.sparsify`, `deploy.quantize`); every stage then reads the source:
fresh batch iterators (`batches()`), the first samples (`first`, `real_samples`, `timing_feed`),
whether it is real data (`is_real`).

Sources (`CalibConfig.path`):
- `.npz`: arrays keyed by input name with a leading sample axis; a lone array is fine for a
  single-input model. A single sample may drop the sample axis.
- `.npy`: one array, single-input models only.
- a folder of `.npy` files, sorted by name; each file holds one sample or a batch. For several
  inputs, name files `<input>__<id>.npy` (non [A-Za-z0-9_.-] characters of the input name -> `_`);
  the n-th file of every input form one chunk.
- a folder of images (png/jpg/bmp/...; needs Pillow), preprocessed as `ImageOptions` documents.
- None: random inputs from `onnxprune.io.inputs.random_inputs`, with a `CalibrationWarning`
  (once per source, when its batches are first read).
- ready feeds (a sequence of feed dicts) or a zero-argument callable returning fresh iterators of
  them: taken as they are (real data).

Samples are checked against the model's static dims and cast to the input dtype; a static batch
dim in the model overrides `batch`. Files are read one at a time, so memory stays at one batch
(plus one file / one `.npz` member).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx

from onnxprune.calib.batching import CalibrationWarning, batch_size_for, rebatch
from onnxprune.calib.config import DEFAULT_RANDOM_SAMPLES, CalibConfig
from onnxprune.calib.images import ImageOptions
from onnxprune.calib.sources import file_stem_for, open_source
from onnxprune.errors import OnnxPruneError
from onnxprune.io.inputs import feed_rows, graph_inputs, random_inputs
from onnxprune.io.types import Feed, FeedFactory, Shapes

__all__ = [
    "CalibConfig", "CalibrationLike", "CalibrationSource", "CalibrationWarning", "ImageOptions",
    "calibration_batches", "file_stem_for", "random_batches",
]

ORACLE_SAMPLES = 4  # real samples the shape probe and the oracle run on: a few are enough to be valid inputs


def _warn_random(stacklevel: int) -> None:
    warnings.warn("no calibration data (--calib): using random inputs; activation-based scores "
                  "(wanda, sparsegpt, reconstruction) will be weaker", CalibrationWarning, stacklevel=stacklevel + 1)


def random_batches(model: onnx.ModelProto, *, samples: int = DEFAULT_RANDOM_SAMPLES, batch: int = 16,
                   seed: int = 0, shapes: Shapes | None = None, warn: bool = True) -> Iterator[Feed]:
    """Random feeds (N(0,1) floats) totalling `samples`; warns that scores will be weaker."""
    specs = graph_inputs(model)
    if not specs:
        raise OnnxPruneError("the model has no inputs to calibrate")
    if warn:
        _warn_random(2)
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


def calibration_batches(model: onnx.ModelProto, config: CalibConfig | str | os.PathLike[str] | None = None, *,
                        shapes: Shapes | None = None) -> Iterator[Feed]:
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


class CalibrationSource:
    """The calibration data of one run, for the inputs of one model (and every model sharing them:
    its normalised, pruned and re-fitted forms). Built once by `of`; `batches()` gives a fresh
    iterator each call, reading files one at a time."""

    def __init__(self, model: onnx.ModelProto, batches: FeedFactory, *, is_real: bool, origin: str) -> None:
        self.model = model
        self._batches = batches
        self.is_real = is_real  # False: random inputs (a CalibrationWarning on the first read)
        self.origin = origin
        self._warned = is_real

    @classmethod
    def of(cls, calibration: CalibrationLike, model: onnx.ModelProto, *,
           shapes: Shapes | None = None) -> CalibrationSource:
        """What the user gave (see the module doc) as the source of `model`'s inputs; a
        CalibrationSource is returned as it is. A file or folder is opened right away, so bad input
        fails before any work. `shapes` sizes the dynamic dims of random inputs only."""
        if isinstance(calibration, CalibrationSource):
            return calibration
        if calibration is None or isinstance(calibration, CalibConfig | str | os.PathLike):
            cfg = as_config(calibration)
            if cfg.path is None:
                samples = cfg.samples or DEFAULT_RANDOM_SAMPLES
                return cls(model, lambda: random_batches(model, samples=samples, batch=cfg.batch, seed=cfg.seed,
                                                         shapes=shapes, warn=False),
                           is_real=False, origin=f"{samples} random inputs")
            opened = [calibration_batches(model, cfg)]  # the first read takes it: the file is opened once

            def reopen() -> Iterator[Feed]:
                return opened.pop() if opened else calibration_batches(model, cfg)

            return cls(model, reopen, is_real=True, origin=str(cfg.path))
        if callable(calibration):
            return cls(model, calibration, is_real=True, origin="the given feed factory")
        feeds = list(calibration)
        return cls(model, lambda: iter(feeds), is_real=True, origin=f"{len(feeds)} given feeds")

    def describe(self) -> str:
        """Where the batches come from: the path, "32 random inputs", "4 given feeds"."""
        return self.origin

    def batches(self) -> Iterator[Feed]:
        """A fresh iterator over every batch."""
        if not self._warned:
            self._warned = True
            _warn_random(2)
        return iter(self._batches())

    @property
    def static_batch(self) -> bool:
        """The model fixes its batch dim: feeds cannot be cut to fewer samples."""
        return any(s.dims and isinstance(s.dims[0], int) for s in graph_inputs(self.model))

    def first(self, samples: int, *, cut: bool = False) -> list[Feed]:
        """The first batches holding at least `samples` samples (the held samples of a measurement);
        `cut`: exactly that many (the last batch sliced), unless the batch dim is static."""
        held: list[Feed] = []
        n = 0
        cut = cut and not self.static_batch
        for feed in self.batches():
            rows = feed_rows(feed)
            if cut and n + rows > samples:
                feed = {k: v[:samples - n] for k, v in feed.items()}
                rows = samples - n
            held.append(feed)
            n += rows
            if n >= samples:
                break
        if not held:
            raise OnnxPruneError(f"the calibration source ({self.describe()}) gave no samples")
        return held

    def count(self, up_to: int) -> int:
        """How many samples the data holds, counting no further than `up_to` (0 for random inputs)."""
        return min(up_to, sum(feed_rows(f) for f in self.first(up_to))) if self.is_real else 0

    def real_samples(self, samples: int = ORACLE_SAMPLES) -> list[Feed]:
        """The first `samples` samples of real data, for runs that need valid inputs (the shape probe,
        the oracle); [] for random inputs (those runs make up their own, `inputs.random_inputs`)."""
        return self.first(samples, cut=True) if self.is_real else []

    def timing_feed(self, batch: int) -> Feed | None:
        """`batch` samples of real data to time the model on (rows repeated when the data holds
        fewer); None for random inputs."""
        feeds = self.real_samples(batch)
        if not feeds:
            return None
        joined = {k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]}
        rows = np.arange(batch) % feed_rows(joined)
        return {k: np.ascontiguousarray(v[rows]) for k, v in joined.items()}


# What a stage takes as calibration at the public API: a source, a CalibConfig or a path (None:
# random inputs), a zero-argument callable returning fresh iterators of feeds, or ready feeds.
CalibrationLike = CalibrationSource | CalibConfig | str | os.PathLike[str] | FeedFactory | Sequence[Feed] | None
