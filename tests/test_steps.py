"""Iterative pruning: schedules, per-step budgets, early stop on the validation gate, CLI flags."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import onnx
import pytest
from click.testing import CliRunner

from onnxprune.api import analyse, prune
from onnxprune.cli import main
from onnxprune.config import PruneConfig
from onnxprune.errors import OnnxPruneError, ThresholdError
from onnxprune.io.model_io import load_model
from onnxprune.measure.curves import LabelledData, SensitivityResult, sensitivity_curves
from onnxprune.measure.model_stats import model_stats
from onnxprune.measure.validate import load_feeds
from onnxprune.pipeline import schedule
from onnxprune.pipeline.result import StepsResult
from onnxprune.pipeline.schedule import Gate, prune_in_steps
from onnxprune.planning.steps import kept_fractions

ROOT = Path(__file__).resolve().parent.parent
RESNET = ROOT / "models" / "zoo" / "resnet_ts.onnx"
DIGITS = ROOT / "models" / "digits"


def _steps(model: onnx.ModelProto, *, gate: Gate | None = None, **options: Any) -> StepsResult:
    return prune_in_steps(model, PruneConfig.create(**options), gate=gate)


def _one_line_error(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def test_schedules() -> None:
    assert kept_fractions(0.25, 2, "geometric") == pytest.approx([0.5, 0.25])
    assert kept_fractions(0.4, 3, "linear") == pytest.approx([0.8, 0.6, 0.4])
    assert kept_fractions(0.5, 1) == [0.5]
    with pytest.raises(OnnxPruneError, match="schedule"):
        kept_fractions(0.5, 2, "cosine")
    with pytest.raises(OnnxPruneError, match="steps"):
        kept_fractions(0.5, 0)


@pytest.mark.parametrize("schedule", ["geometric", "linear"])
def test_steps_reach_the_mac_budget(schedule: str) -> None:
    model = load_model(RESNET)
    out = _steps(model, steps=3, schedule=schedule, target_macs=0.5, verify=True)
    assert len(out.steps) == 3 and out.kept_step == 3 and out.stopped is None
    macs = [s.macs_kept for s in out.steps]
    assert macs == sorted(macs, reverse=True)
    for rec, want in zip(out.steps, kept_fractions(0.5, 3, schedule), strict=True):
        assert abs(rec.macs_kept - want) <= 0.03 * want, (rec.macs_kept, want)
    final = model_stats(out.result.model).macs / model_stats(out.original).macs
    assert abs(final - 0.5) <= 0.015
    assert out.result.verify is not None and out.result.verify.ok


def test_steps_with_a_ratio_prune_less_each_step() -> None:
    out = _steps(load_model(RESNET), steps=2, ratio=0.5)
    assert [s.macs_kept for s in out.steps][0] > out.steps[1].macs_kept


def test_gate_stops_early_and_keeps_the_last_good_step() -> None:
    model = load_model(RESNET)
    probe = _steps(model, steps=3, target_macs=0.3, gate=Gate(min_cosine=-1.0))
    cos = [s.min_cosine for s in probe.steps]
    assert all(c is not None for c in cos) and cos[0] > cos[2]  # type: ignore[operator]
    threshold = (cos[0] + min(cos[1:])) / 2  # type: ignore[operator,type-var]
    out = _steps(model, steps=3, target_macs=0.3, gate=Gate(min_cosine=threshold))
    assert out.stopped is not None and "cosine" in out.stopped
    assert out.kept_step >= 1 and out.kept_step < 3
    assert not out.steps[-1].passed and all(s.passed for s in out.steps[:-1])
    assert f"kept the model of step {out.kept_step}" in out.describe()
    with pytest.raises(ThresholdError, match="step 1"):
        _steps(model, steps=3, target_macs=0.3, gate=Gate(min_cosine=1.1))


def test_steps_refuse_latency() -> None:
    with pytest.raises(OnnxPruneError, match="target-latency"):
        _steps(load_model(RESNET), steps=2, target_latency=1.0)


def _curves(model: onnx.ModelProto, path: Path | None = None) -> SensitivityResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random inputs: CalibrationWarning
        curves = sensitivity_curves(analyse(model), ratios=(0.25, 0.5), samples=2, model_name="resnet_ts")
    if path is not None:
        curves.save(path)
    return curves


def test_steps_remeasure_the_curves_on_each_later_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """Curves of the original allocate step 1 only: a later step's groups are smaller, so the
    original's curves no longer match them (curves_for refuses), and each later step measures its own."""
    model = load_model(RESNET)
    curves = _curves(model)
    seen: list[list[int]] = []  # group sizes of each re-measurement
    real = schedule.remeasured

    def spy(c: SensitivityResult, m: onnx.ModelProto, config: PruneConfig, **kw: Any) -> SensitivityResult:
        out = real(c, m, config, **kw)
        seen.append([g.slots for g in out.curves])
        assert out.ratios == c.ratios and out.samples == c.samples and out.criterion == c.criterion
        return out

    monkeypatch.setattr(schedule, "remeasured", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = _steps(model, steps=3, target_macs=0.6, sensitivity=curves)
    assert len(out.steps) == 3 and len(seen) == 2
    first = [g.slots for g in curves.curves]
    assert sum(seen[0]) < sum(first) and sum(seen[1]) < sum(seen[0])
    assert abs(out.steps[-1].macs_kept - 0.6) <= 0.03 * 0.6
    assert out.result is not None and out.result.choice is not None and out.result.choice.allocation is not None
    step1 = prune(model, target_macs=0.8).model
    with pytest.raises(OnnxPruneError, match="another model"):  # what step 2 would meet without re-measuring
        prune(step1, target_macs=0.8, sensitivity=curves)


@pytest.mark.skipif(not (DIGITS / "digits_resnet.onnx").exists(), reason="digits model not built")
def test_steps_reconstruct_between_steps_and_check_accuracy() -> None:
    model = load_model(DIGITS / "digits_resnet.onnx")
    feeds, y = load_feeds(DIGITS / "test.npz", model, batch=120)
    assert y is not None
    gate = Gate(max_acc_drop=50.0, labelled=LabelledData(feeds, y))
    out = _steps(model, steps=2, target_macs=0.6, gate=gate, calibration=DIGITS / "calib.npz")
    assert len(out.steps) == 2
    for rec in out.steps:
        assert rec.reconstruction is not None and rec.reconstruction["layers"]
        assert rec.acc_drop is not None and rec.acc_drop <= 50.0
        assert any(g["reconstruction"] for g in rec.decisions)


def test_cli_steps_with_curves(tmp_path: Path) -> None:
    curves = tmp_path / "s.json"
    _curves(load_model(RESNET), curves)
    rep = tmp_path / "r.json"
    r = CliRunner().invoke(main, ["prune", str(RESNET), "-o", str(tmp_path / "o.onnx"), "--steps", "2",
                                  "--target-macs", "0.6", "--sensitivity", str(curves), "--report", str(rep),
                                  "--round-to", "1", "--no-progress"])  # exact counts: lands on any CPU
    assert r.exit_code == 0, r.stderr
    assert "curves re-measured on step 1's model" in r.stdout
    data = json.loads(rep.read_text())
    assert len(data["steps"]["steps"]) == 2 and data["sensitivity"]["predicted_error"] >= 0
    assert data["sensitivity"]["curves"].startswith("curves re-measured on step 1's model")
    assert abs(data["compare"]["macs_kept"] - 0.6) <= 0.03 * 0.6


def test_cli_steps_report(tmp_path: Path) -> None:
    rep = tmp_path / "r.json"
    r = CliRunner().invoke(main, ["prune", str(RESNET), "-o", str(tmp_path / "o.onnx"), "--steps", "2",
                                  "--target-macs", "0.5", "--min-cosine", "-1", "--report", str(rep), "--round-to", "1",
                                  "--no-progress"])  # exact counts: both steps land on any CPU
    assert r.exit_code == 0, r.stderr
    assert "step 1:" in r.stdout and "step 2:" in r.stdout and "kept the model of step 2" in r.stdout
    # the last step's own budget is relative to step 1's model, and says so
    assert "step 2 alone: macs:" in r.stdout and "of step 1's model kept (target" in r.stdout
    assert "of the original kept (target" not in r.stdout
    data = json.loads(rep.read_text())
    assert len(data["steps"]["steps"]) == 2 and data["steps"]["kept_step"] == 2
    assert data["steps"]["steps"][0]["groups"]
    assert abs(data["compare"]["macs_kept"] - 0.5) <= 0.015


@pytest.mark.parametrize("args, match, code", [
    (["--steps", "2", "--target-latency", "1"], "cannot be combined with steps", 2),
    (["--steps", "2", "--target-macs", "0.6", "--sensitivity", "no_such_curves.json"], "no_such_curves.json", 2),
    (["--max-acc-drop", "1"], "needs labelled data", 2),
    (["--steps", "0"], "--steps", 2),
    (["--min-cosine", "1.5"], "step 1", 5),
])
def test_cli_steps_bad_input(tmp_path: Path, args: list[str], match: str, code: int) -> None:
    r = CliRunner().invoke(main, ["prune", str(RESNET), "-o", str(tmp_path / "o.onnx"), "--no-progress", *args])
    assert r.exit_code == code, r.stdout
    assert match in _one_line_error(r.stderr)
    assert not (tmp_path / "o.onnx").exists()
