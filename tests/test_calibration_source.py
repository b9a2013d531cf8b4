"""CalibrationSource: every form the user may give, fresh iterators, the held samples, real or random."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from graphs import Graph

from onnxprune.calib.source import CalibConfig, CalibrationSource, CalibrationWarning
from onnxprune.errors import OnnxPruneError
from onnxprune.io.types import Feed


def relu_model(batch: int | str = "N") -> onnx.ModelProto:
    g = Graph()
    g.output(g.relu(g.input("x", (batch, 3))))
    return g.build()


MODEL = relu_model()
STATIC = relu_model(2)


def _rows(feeds: list[Feed]) -> list[int]:
    return [int(f["x"].shape[0]) for f in feeds]


def _npz(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "c.npz"
    np.savez(path, x=np.arange(3 * n, dtype=np.float32).reshape(n, 3))
    return path


@pytest.mark.parametrize("form", ["config", "str", "path"])
def test_a_file_is_real_data_read_afresh_on_every_call(tmp_path: Path, form: str) -> None:
    path = _npz(tmp_path, 10)
    given = {"config": CalibConfig(path=path, batch=4), "str": str(path), "path": path}[form]
    src = CalibrationSource.of(given, MODEL)
    assert src.is_real and str(path) in src.describe()
    first = src.batches()
    next(first)  # a half-read iterator does not affect the next one
    again = list(src.batches())
    assert _rows(again) == ([4, 4, 2] if form == "config" else [10])
    np.testing.assert_array_equal(np.concatenate([f["x"] for f in again])[:, 0], np.arange(0, 30, 3))
    assert len(list(first)) == len(again) - 1


def test_a_bad_file_fails_when_the_source_is_built(tmp_path: Path) -> None:
    with pytest.raises(OnnxPruneError, match="no such file"):
        CalibrationSource.of(tmp_path / "nope.npz", MODEL)
    np.savez(tmp_path / "bad.npz", y=np.ones((4, 3)), z=np.ones((4, 3)))
    with pytest.raises(OnnxPruneError, match="no array for input"):
        CalibrationSource.of(tmp_path / "bad.npz", MODEL)


@pytest.mark.parametrize("given", [None, CalibConfig(samples=5, batch=2, seed=3)])
def test_random_inputs_warn_once_when_first_read(given: CalibConfig | None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        src = CalibrationSource.of(given, MODEL)
    assert not src.is_real and "random inputs" in src.describe()
    assert src.real_samples() == [] and src.timing_feed(4) is None  # no warning: nothing was read
    with pytest.warns(CalibrationWarning, match="random inputs"):
        first = list(src.batches())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = list(src.batches())
    assert sum(_rows(first)) == (32 if given is None else 5)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a["x"], b["x"])


def test_ready_feeds_and_a_factory_are_real_data_taken_as_they_are() -> None:
    feeds = [{"x": np.full((3, 3), i, np.float32)} for i in range(3)]
    src = CalibrationSource.of(feeds, MODEL)
    assert src.is_real and src.describe() == "3 given feeds"
    assert [f["x"][0, 0] for f in src.batches()] == [0, 1, 2] == [f["x"][0, 0] for f in src.batches()]
    calls: list[int] = []

    def factory() -> Iterator[Feed]:
        calls.append(1)
        return iter(feeds[:2])

    made = CalibrationSource.of(factory, MODEL)
    assert made.is_real and not calls  # not read until asked
    assert _rows(list(made.batches())) == [3, 3] and _rows(list(made.batches())) == [3, 3] and len(calls) == 2
    assert CalibrationSource.of(made, STATIC) is made  # a source passes through unchanged


def test_first_holds_at_least_the_samples_and_cuts_on_request(tmp_path: Path) -> None:
    src = CalibrationSource.of(CalibConfig(path=_npz(tmp_path, 10), batch=4), MODEL)
    assert _rows(src.first(5)) == [4, 4]
    assert _rows(src.first(5, cut=True)) == [4, 1]
    assert _rows(src.first(100)) == [4, 4, 2]  # all there is
    assert _rows(src.real_samples()) == [4]  # the shape probe's and the oracle's samples
    assert _rows(src.real_samples(6)) == [4, 2]
    with pytest.raises(OnnxPruneError, match="gave no samples"):
        CalibrationSource.of([], MODEL).first(4)


def test_a_static_batch_is_never_cut(tmp_path: Path) -> None:
    src = CalibrationSource.of(CalibConfig(path=_npz(tmp_path, 6), batch=4), STATIC)
    assert src.static_batch and not CalibrationSource.of(None, MODEL).static_batch
    assert _rows(src.first(3, cut=True)) == [2, 2]


def test_timing_feed_repeats_rows_to_the_batch(tmp_path: Path) -> None:
    src = CalibrationSource.of(CalibConfig(path=_npz(tmp_path, 3), batch=2), MODEL)
    feed = src.timing_feed(7)
    assert feed is not None and feed["x"].shape == (7, 3) and feed["x"].flags.c_contiguous
    np.testing.assert_array_equal(feed["x"][:, 0], [0, 3, 6, 0, 3, 6, 0])
    short = src.timing_feed(2)
    assert short is not None
    np.testing.assert_array_equal(short["x"][:, 0], [0, 3])
