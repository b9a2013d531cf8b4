"""Timing the two channel multiples that both land a budget (onnxprune.planning.tuning)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import onnx
import pytest
from click.testing import CliRunner
from graphs import Graph

import onnxprune.measure.bench as bench
from onnxprune.api import prune
from onnxprune.cli import main
from onnxprune.planning.tuning import timeable

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
    assert res.choice is not None and res.choice.race is not None and res.choice.race.chosen == str(kept)
    assert res.target is not None and res.target.ok and res.target.completes is None
    assert any(n.startswith("timed the two plans that land the budget, rounded to 16 and to 8")
               and n.endswith(f"kept {kept}") for n in res.notes)


def test_untimed_by_default_and_when_sizes_are_unknown(fake_timing: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxprune.planning.tuning as tuning

    fake = fake_timing(2.0)
    assert prune(VGG, target_macs=0.5, round_to=8, prefer_round_to=16).plan.round_to == 16 and fake.calls == 0
    g = Graph(opset=17)
    x = g.input("x", ("N", 8, "H", "W"))
    g.output(g.conv(x, 8, 4, name="c"))
    dynamic = g.build()
    why = timeable(dynamic, None)
    assert why is not None and "dynamic dims (<H>, <W>)" in why and timeable(dynamic, {"x": (1, 8, 6, 6)}) is None
    monkeypatch.setattr(tuning, "timeable", lambda model, shapes, options=None: why)
    res = prune(VGG, target_macs=0.5, round_to=8, prefer_round_to=16, time_multiples=True)
    assert fake.calls == 0 and res.plan.round_to == 16 and res.choice is not None and res.choice.race is None
    assert res.choice.race_skipped == why and f"multiples not timed: {why}" in res.notes


def test_cli_times_by_default_and_reports_it(fake_timing: Any, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONNXPRUNE_CPU", "avx2")  # auto: block 8, 16 tried first
    fake = fake_timing(1.3)
    out, rep = tmp_path / "o.onnx", tmp_path / "r.json"
    r = CliRunner().invoke(main, ["prune", str(VGG), "-o", str(out), "--target-macs", "0.5", "--report", str(rep),
                                  "--no-progress"])
    assert r.exit_code == 0, r.stderr
    assert "it lands, but 8 ran faster" in r.stdout and "kept 8" in r.stdout and fake.calls == 1
    data = json.loads(rep.read_text())
    assert data["round_to"] == 8 and data["round_to_race"]["chosen"] == "8" and data["round_to_race"]["ratio"] == 1.3
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
    assert res.choice.race_skipped == "8 removes the same channels as 16"


MBV3 = ROOT / "models" / "zoo" / "mobilenetv3_ts.onnx"  # at 0.5 MACs, multiples of 16 stop at 0.542


@pytest.mark.parametrize("ratio, completed", [(1.2, True), (1.04, False)])
def test_where_the_wider_multiple_misses_its_completed_plan_races_the_plain_one(fake_timing: Any, ratio: float,
                                                                               completed: bool) -> None:
    sixteen = prune(MBV3, target_macs=0.5, round_to=16)
    assert sixteen.target is not None and not sixteen.target.ok
    fake = fake_timing(ratio)
    res = prune(MBV3, target_macs=0.5, round_to=8, prefer_round_to=16, time_multiples=True, verify=True)
    assert fake.calls == 1 and res.plan.round_to == 8 and res.verify is not None and res.verify.ok
    assert res.target is not None and res.target.ok and (res.target.completes == 16) == completed
    race = res.choice.race if res.choice is not None else None
    assert race is not None and race.completion and race.preferred == "8"
    assert race.other == "16 completed with blocks of 8" and race.chosen == (race.other if completed else "8")
    plain = prune(MBV3, target_macs=0.5, round_to=8)
    assert (res.plan.removals != plain.plan.removals) == completed
    if completed:  # most groups keep the counts of the 16 plan; every kept count is a whole number of blocks
        groups = {g.id: g for g in res.dg.prunable}
        counts = {gid: len(res.plan.removals.get(gid, ())) for gid in groups}
        wide = {gid: len(sixteen.plan.removals.get(gid, ())) for gid in groups}
        assert 0 < sum(counts[g] != wide[g] for g in groups) <= len(groups) // 2
        assert all((groups[g].size - counts[g]) % groups[g].multiple(8) == 0 for g in groups)


def test_cli_says_the_wider_multiple_missed_and_which_plan_won(fake_timing: Any, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONNXPRUNE_CPU", "avx2")  # auto: block 8, 16 tried first
    fake_timing(1.3)
    out, rep = tmp_path / "o.onnx", tmp_path / "r.json"
    r = CliRunner().invoke(main, ["prune", str(MBV3), "-o", str(out), "--target-macs", "0.5", "--report", str(rep),
                                  "--no-progress"])
    assert r.exit_code == 0, r.stderr
    assert "16 tried first for a budget, but it cannot land it" in r.stdout
    assert "kept 16 completed with blocks of 8" in r.stdout
    data = json.loads(rep.read_text())
    assert data["round_to"] == 8 and data["round_to_race"]["chosen"] == "16 completed with blocks of 8"
