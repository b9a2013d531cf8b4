"""Timing the two channel multiples that both land a budget (onnxprune.multiple_race)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import onnx
import pytest
from click.testing import CliRunner
from graphs import Graph

import onnxprune.bench as bench
from onnxprune.api import prune
from onnxprune.cli import main
from onnxprune.multiple_race import timeable
from onnxprune.runtime_profile import ChannelMultiple

ROOT = Path(__file__).resolve().parent.parent
VGG = ROOT / "models" / "zoo" / "vgg_ts.onnx"


class _Fake:
    """interleaved_latency that runs both models once and reports a fixed ratio t(first) / t(second)."""

    def __init__(self, ratio: float) -> None:
        self.ratio, self.calls, self.real = ratio, 0, bench.interleaved_latency

    def __call__(self, a: Any, b: Any, **kw: Any) -> Any:
        self.calls += 1
        return dataclasses.replace(self.real(a, b, **{**kw, "repeat": 1, "warmup": 0}), speedup=self.ratio)


@pytest.fixture
def fake_timing(monkeypatch: pytest.MonkeyPatch) -> Any:
    def install(ratio: float) -> _Fake:
        fake = _Fake(ratio)
        monkeypatch.setattr(bench, "interleaved_latency", fake)
        return fake
    return install


@pytest.mark.parametrize("ratio, kept", [(1.2, 8), (1.04, 16), (0.9, 16)])
def test_the_other_multiple_wins_only_when_more_than_5_percent_faster(fake_timing: Any, ratio: float,
                                                                       kept: int) -> None:
    fake = fake_timing(ratio)
    res = prune(VGG, target_macs=0.5, round_to=8, prefer_round_to=16, time_multiples=True)
    assert fake.calls == 1 and res.plan.round_to == kept
    assert res.choice is not None and res.choice.race is not None and res.choice.race.chosen == kept
    assert res.target is not None and res.target.ok
    assert any(n.startswith("timed both multiples") and f"kept {kept}" in n for n in res.notes)


def test_untimed_by_default_and_when_sizes_are_unknown(fake_timing: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxprune.planner as planner

    fake = fake_timing(2.0)
    assert prune(VGG, target_macs=0.5, round_to=8, prefer_round_to=16).plan.round_to == 16 and fake.calls == 0
    g = Graph(opset=17)
    x = g.input("x", ("N", 8, "H", "W"))
    g.output(g.conv(x, 8, 4, name="c"))
    dynamic = g.build()
    why = timeable(dynamic, None)
    assert why is not None and "dynamic dims (<H>, <W>)" in why and timeable(dynamic, {"x": (1, 8, 6, 6)}) is None
    monkeypatch.setattr(planner, "timeable", lambda model, shapes: why)
    res = prune(VGG, target_macs=0.5, round_to=8, prefer_round_to=16, time_multiples=True)
    assert fake.calls == 0 and res.plan.round_to == 16 and res.choice is not None and res.choice.race is None
    assert res.choice.race_skipped == why and f"multiples not timed: {why}" in res.notes


def test_cli_times_by_default_and_reports_it(fake_timing: Any, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxprune.cli.prune_cmd as prune_cmd

    monkeypatch.setattr(prune_cmd, "channel_multiple", lambda *a, **k: ChannelMultiple(8, "auto, test CPU", 16))
    fake = fake_timing(1.3)
    out, rep = tmp_path / "o.onnx", tmp_path / "r.json"
    r = CliRunner().invoke(main, ["prune", str(VGG), "-o", str(out), "--target-macs", "0.5", "--report", str(rep),
                                  "--no-progress"])
    assert r.exit_code == 0, r.stderr
    assert "it lands, but 8 ran faster" in r.stdout and "kept 8" in r.stdout and fake.calls == 1
    data = json.loads(rep.read_text())
    assert data["round_to"] == 8 and data["round_to_race"]["chosen"] == 8 and data["round_to_race"]["ratio"] == 1.3
    r = CliRunner().invoke(main, ["prune", str(VGG), "-o", str(out), "--target-macs", "0.5", "--no-time-multiples",
                                  "--report", str(rep), "--no-progress"])
    assert r.exit_code == 0 and fake.calls == 1 and json.loads(rep.read_text())["round_to"] == 16
    assert onnx.load(str(out)).graph.node  # written


def test_plans_that_remove_the_same_channels_are_not_timed(fake_timing: Any) -> None:
    """One 32-channel group: half the MACs keeps 16 channels at either multiple, the same plan twice."""
    fake = fake_timing(2.0)
    g = Graph(opset=17)
    x = g.input("x", (1, 8, 6, 6))
    g.output(g.conv(g.relu(g.conv(x, 8, 32, name="c1")), 32, 8, name="c2"))
    res = prune(g.build(), target_macs=0.5, round_to=8, prefer_round_to=16, time_multiples=True)
    assert fake.calls == 0 and res.plan.round_to == 16 and res.choice is not None
    assert res.choice.race_skipped == "8 removes the same channels"
