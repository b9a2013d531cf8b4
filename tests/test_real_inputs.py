"""The user's data, where given, feeds every run of the model: the shape probe, the oracle, latency and bench."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from zoo import zoo_entry

import onnxprune.measure.bench as bench
from onnxprune.api import analyse, prune
from onnxprune.cli import main
from onnxprune.measure.bench import LatencyOptions

BERT3 = zoo_entry("bert3_ts").path
SEQ = 12  # the data's sequence length; random inputs would use 64


@pytest.fixture
def tokens(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "tokens.npz"
    np.savez(path, input_ids=rng.integers(0, 300, (6, SEQ)), attention_mask=np.ones((6, SEQ), np.int64),
             token_type_ids=rng.integers(0, 2, (6, SEQ)))
    return path


def test_the_shape_probe_runs_on_the_first_samples(tokens: Path) -> None:
    dg = analyse(BERT3, calibration=tokens)
    assert [f["input_ids"].shape for f in dg.feeds] == [(4, SEQ)] and dg.probe_inputs == "4 calibration samples"
    shapes = dg.analysis.view.shapes
    assert shapes[dg.model.graph.output[0].name] == (4, SEQ, 32)
    plain = analyse(BERT3)
    assert not plain.feeds and plain.probe_inputs == "random inputs"
    assert plain.analysis.view.shapes[plain.model.graph.output[0].name] == (1, 64, 32)


def test_latency_is_measured_on_the_data_without_shapes(tokens: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without data, a dynamic sequence needs --shapes to time anything; with it, the data sets the size."""
    seen: list[dict[str, tuple[int, ...]]] = []
    real_latency, real_ab = bench.latency, bench.interleaved_latency

    def spy(fn: Any) -> Any:
        def wrapped(*args: Any, feed: Mapping[str, np.ndarray] | None = None, **kwargs: Any) -> Any:
            assert feed is not None
            seen.append({k: v.shape for k, v in feed.items()})
            return fn(*args, feed=feed, **kwargs)
        return wrapped

    monkeypatch.setattr(bench, "latency", spy(real_latency))
    monkeypatch.setattr(bench, "interleaved_latency", spy(real_ab))
    opts = LatencyOptions(batch=2, warmup=0, repeat=2, max_steps=1)
    res = prune(str(BERT3), target_latency=1e-4, latency=opts, calibration=tokens, reconstruct=False)
    assert res.choice is not None and res.choice.latency is not None and len(seen) >= 2
    assert all(s == {"input_ids": (2, SEQ), "attention_mask": (2, SEQ), "token_type_ids": (2, SEQ)} for s in seen)


def test_bench_times_the_given_samples(tokens: Path) -> None:
    result = CliRunner().invoke(main, ["bench", str(BERT3), "--data", str(tokens), "--batch", "8", "--repeat", "2",
                                       "--warmup", "0", "--no-memory"])
    assert result.exit_code == 0, result.stderr
    assert f"input_ids 8x{SEQ}" in result.stdout and f"samples of {tokens}" in result.stdout
