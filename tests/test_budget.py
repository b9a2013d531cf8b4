"""Budgets from sensitivity curves (greedy on the convex hull), latency search, prune CLI flags."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner
from graphs import Graph

from onnxprune.api import analyse, prune
from onnxprune.cli import main
from onnxprune.errors import NothingToPruneError, OnnxPruneError
from onnxprune.measure.bench import LatencyOptions
from onnxprune.measure.curves import CurvePoint, GroupCurve, sensitivity_curves
from onnxprune.measure.model_stats import model_stats
from onnxprune.planning.curves_alloc import hull_segments, levels, removal_path
from onnxprune.planning.latency_search import _next_fraction

ROOT = Path(__file__).resolve().parent.parent
RESNET = ROOT / "models" / "zoo" / "resnet_ts.onnx"
VGG = ROOT / "models" / "zoo" / "vgg_ts.onnx"


def _curve(gid: int, size: int, errors: list[float], ratios: list[float]) -> GroupCurve:
    pts = [CurvePoint(r, size - max(1, size - int(size * r)), e, e / 2, None, 1 - 0.1 * r, 1 - 0.1 * r)
           for r, e in zip(ratios, errors, strict=True)]
    return GroupCurve(gid, [f"n{gid}"], size, pts)


def _one_line_error(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


@pytest.fixture(scope="module")
def curves_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sens") / "resnet.json"
    sensitivity_curves(analyse(RESNET), ratios=(0.25, 0.5, 0.75), samples=4).save(path)
    return path


def test_levels_respect_floor_and_round_to() -> None:
    assert levels(10, 1) == list(range(0, 10))  # keeps 10..1
    assert levels(32, 8) == [0, 8, 16, 24]  # keeps 32, 24, 16, 8 (floor n_keep(32, 0.9, 8) = 8)
    assert levels(16, 16) == [0]


def test_hull_slopes_rise_and_skip_bumps() -> None:
    # a bump at 0.25: the hull goes straight from 0 to 0.5
    c = _curve(0, 8, [0.9, 1.0, 1.1], [0.25, 0.5, 0.75])
    segs = hull_segments(c, round_to=1, metric="macs", error="rel_error")
    slopes = [s.slope for s in segs]
    assert slopes == sorted(slopes)
    assert all(s.levels == tuple(sorted(s.levels)) for s in segs)
    flat = [n for s in segs for n in s.levels]
    assert flat == [n for n in levels(8, 1)[1:] if n <= 6]  # every measured level once, in order


def test_path_takes_the_cheap_group_first() -> None:
    cheap = _curve(0, 8, [0.01, 0.02, 0.03], [0.25, 0.5, 0.75])
    dear = _curve(1, 8, [1.0, 2.0, 3.0], [0.25, 0.5, 0.75])
    path = removal_path({0: cheap, 1: dear}, round_to=1, metric="macs", error="rel_error")
    first_dear = next(i for i, (g, _) in enumerate(path) if g == 1)
    assert all(g == 0 for g, _ in path[:first_dear]) and first_dear >= 6
    with pytest.raises(OnnxPruneError, match="unknown sensitivity error"):
        removal_path({0: cheap}, round_to=1, metric="macs", error="mse")


def test_path_goes_past_the_measured_range_round_robin_after_every_measured_level() -> None:
    cheap = _curve(0, 10, [0.01, 0.02], [0.2, 0.4])  # measured to 4 of 10 slots
    dear = _curve(1, 10, [1.0, 2.0], [0.2, 0.4])
    path = removal_path({0: cheap, 1: dear}, round_to=1, metric="macs", error="rel_error")
    measured = [(g, n) for g, n in path if n <= 4]
    assert path[:len(measured)] == measured  # nothing unmeasured before every measured level
    tail = path[len(measured):]
    assert tail[:4] == [(0, 5), (1, 5), (0, 6), (1, 6)]  # one level per group per round, cheap first
    assert max(n for g, n in path if g == 0) == levels(10, 1)[-1]  # down to the floor


@pytest.mark.parametrize("metric", ["macs", "params"])
def test_sensitivity_budget_lands_within_3_percent(curves_file: Path, metric: str) -> None:
    dg = analyse(RESNET)
    before = model_stats(dg.model)
    res = prune(RESNET, dg=dg, sensitivity=curves_file, verify=True, **{f"target_{metric}": 0.5})  # type: ignore[arg-type]
    after = model_stats(res.model)
    kept = after.macs / before.macs if metric == "macs" else after.params / before.params
    assert abs(kept - 0.5) <= 0.03 * 0.5, kept
    assert res.verify is not None and res.verify.ok
    assert res.choice is not None and res.choice.allocation is not None
    assert res.choice.allocation.predicted_error > 0


def test_sensitivity_ratios_differ_per_group(curves_file: Path) -> None:
    dg = analyse(RESNET)
    res = prune(RESNET, dg=dg, sensitivity=curves_file, target_macs=0.6)
    ratios = {round(len(res.plan.removals.get(g.id, [])) / g.size, 2) for g in dg.prunable}
    assert len(ratios) > 1


def test_sensitivity_needs_a_budget_and_the_same_model(curves_file: Path) -> None:
    with pytest.raises(OnnxPruneError, match="budget"):
        prune(RESNET, sensitivity=curves_file)
    with pytest.raises(OnnxPruneError, match="another model|no curve"):
        prune(VGG, sensitivity=curves_file, target_macs=0.5)


def test_next_fraction_stays_inside_the_bracket() -> None:
    assert _next_fraction((0.4, 8.0), (0.8, 12.0), 10.0) == pytest.approx(0.6)
    f = _next_fraction((0.4, 8.0), (0.8, 8.01), 10.0)  # interpolation would leave the bracket: bisect
    assert f == pytest.approx(0.6)
    assert _next_fraction(None, (0.5, 20.0), 10.0) < 0.5
    assert _next_fraction((0.5, 5.0), None, 10.0) > 0.5


def test_latency_target_search_structure() -> None:
    opts = LatencyOptions(repeat=3, warmup=1, max_steps=3)
    with pytest.raises(NothingToPruneError, match="the dense model already runs in .* nothing pruned"):
        prune(RESNET, target_latency=1e6, latency=opts)  # the dense model already meets it: nothing removed
    tight = prune(RESNET, target_latency=1e-6, latency=opts)  # unreachable: the fastest plan tried is kept
    search = tight.choice.latency if tight.choice else None
    assert search is not None and search.chosen is not None and 1 <= len(search.steps) <= 3
    assert not search.ok and "target missed" in search.describe()
    assert tight.removed_slots > 0
    assert json.loads(json.dumps(search.to_json()))["steps"]
    # every step is timed against the dense model, interleaved: its latency is dense / speedup
    for step in search.steps:
        assert step.speedup > 0 and step.ms == pytest.approx(search.dense_ms / step.speedup)


def test_cli_sensitivity_budget_and_report(curves_file: Path, tmp_path: Path) -> None:
    out, rep = tmp_path / "o.onnx", tmp_path / "r.json"
    r = CliRunner().invoke(main, ["prune", str(RESNET), "-o", str(out), "--sensitivity", str(curves_file),
                                  "--target-macs", "0.5", "--report", str(rep), "--no-progress"])
    assert r.exit_code == 0, r.stderr
    assert "per-group ratios" in r.stdout and "macs:" in r.stdout
    data = json.loads(rep.read_text())
    assert data["sensitivity"]["predicted_error"] > 0
    groups = data["groups"]
    pruned = [g for g in groups if g["removed"]]
    assert pruned and all(g["verify"] == "pass" and g["predicted_error"] is not None for g in pruned)
    assert all(g["scores"]["max_removed"] <= g["scores"]["min_kept"] + 1e-12 for g in pruned if g["kept"])
    assert all({"ratio", "criterion", "scores", "reconstruction"} <= set(g) for g in groups)


def test_cli_latency_table_and_bad_budgets(tmp_path: Path, curves_file: Path) -> None:
    out = tmp_path / "o.onnx"
    r = CliRunner().invoke(main, ["prune", str(RESNET), "-o", str(out), "--target-latency", "100000",
                                  "--latency-repeat", "3", "--no-progress"])
    assert r.exit_code == 3, r.stderr  # a run that removes nothing says why, with the "nothing prunable" code
    assert "already runs" in r.stderr and "latency" in r.stderr and not out.exists()
    for args, match in [(["--target-macs", "0.5", "--target-latency", "1"], "at most one"),
                        (["--sensitivity", str(curves_file)], "needs a budget"),
                        (["--target-latency", "-1"], "--target-latency"),
                        (["--sensitivity", str(tmp_path / "none.json"), "--target-macs", "0.5"], "none.json")]:
        r = CliRunner().invoke(main, ["prune", str(RESNET), "-o", str(out), "--no-progress", *args])
        assert r.exit_code == 2, (args, r.stdout)
        assert match in _one_line_error(r.stderr)


def test_cli_measure_latency_adds_a_row(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["prune", str(RESNET), "-o", str(tmp_path / "o.onnx"), "--measure-latency",
                                  "--latency-repeat", "3", "--no-progress", "--report", str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.stderr
    assert "latency" in r.stdout
    assert json.loads((tmp_path / "r.json").read_text())["latency_ms"]["after"] > 0


def test_latency_target_needs_the_dynamic_dims(tmp_path: Path) -> None:
    """A latency at a placeholder size is meaningless: dynamic dims other than the batch must be given."""
    g = Graph(opset=17)
    x = g.input("x", ("batch", 3, "height", "width"))
    g.output(g.conv(g.relu(g.conv(x, 3, 16, name="c1")), 16, 4, name="c2"))
    model = g.build()
    opts = LatencyOptions(repeat=2, warmup=0, max_steps=1)
    with pytest.raises(OnnxPruneError, match=r"dynamic dims \(<height>, <width>\).*--shapes x:1x3x<height>x<width>"):
        prune(model, target_latency=0.001, latency=opts)
    with pytest.raises(NothingToPruneError, match="the dense model already runs in"):  # given: timed, and met
        prune(model, target_latency=1e6, latency=opts, shapes={"x": (1, 3, 16, 16)})
    src, out = tmp_path / "m.onnx", tmp_path / "o.onnx"
    onnx.save(model, str(src))
    for flag in (["--target-latency", "1"], ["--measure-latency"]):
        r = CliRunner().invoke(main, ["prune", str(src), "-o", str(out), *flag, "--no-progress"])
        assert r.exit_code == 2 and not out.exists()
        assert _one_line_error(r.stderr).startswith(f"error: {flag[0]}: input x") and "--shapes x:" in r.stderr
