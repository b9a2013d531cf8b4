"""Sensitivity curves: one masked ORT session, JSON schema, table/plot CLI, labelled accuracy, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from onnxprune.api import analyse
from onnxprune.cli import main
from onnxprune.errors import OnnxPruneError
from onnxprune.measure.curves import (
    SCHEMA,
    LabelledData,
    OutputSums,
    SensitivityResult,
    removal_counts,
    sensitivity_curves,
)
from onnxprune.measure.validate import load_feeds

ROOT = Path(__file__).resolve().parent.parent
RESNET = ROOT / "models" / "zoo" / "resnet_ts.onnx"
VGG = ROOT / "models" / "zoo" / "vgg_ts.onnx"
DIGITS = ROOT / "models" / "digits"


def _one_line_error(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


@pytest.fixture(scope="module")
def resnet_curves() -> SensitivityResult:
    dg = analyse(RESNET)
    return sensitivity_curves(dg, ratios=(0.25, 0.5, 0.75), samples=4, model_name=str(RESNET))


def test_curves_cover_every_prunable_group(resnet_curves: SensitivityResult) -> None:
    dg = analyse(RESNET)
    curves = resnet_curves.curves_for(dg)
    assert set(curves) == {g.id for g in dg.prunable}
    for g in dg.prunable:
        c = curves[g.id]
        assert [p.removed for p in c.points] == removal_counts(g.size, [0.25, 0.5, 0.75], 1)
        assert all(p.rel_error >= 0 and 0 <= p.cos_error <= 2 for p in c.points)
        assert all(p.macs_kept < 1.0 and p.params_kept < 1.0 for p in c.points if p.removed)
        # more channels removed never keeps more MACs
        kept = [p.macs_kept for p in c.points]
        assert kept == sorted(kept, reverse=True)
        assert c.error_at(0) == 0.0
        assert c.error_at(c.points[0].removed) == pytest.approx(c.points[0].channel_error)
        assert c.error_at(c.points[0].removed, "rel_error") == pytest.approx(c.points[0].rel_error)
    assert resnet_curves.dense_accuracy is None and resnet_curves.samples >= 4


def test_json_round_trip_and_schema(resnet_curves: SensitivityResult, tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    resnet_curves.save(path)
    data = json.loads(path.read_text())
    assert data["schema"] == SCHEMA
    assert {"id", "sources", "channels", "points"} <= set(data["groups"][0])
    assert {"ratio", "removed", "rel_error", "cos_error", "channel_error", "accuracy", "macs_kept",
            "params_kept"} <= set(data["groups"][0]["points"][0])
    again = SensitivityResult.load(path)
    assert again.to_json() == resnet_curves.to_json()


def test_files_without_channel_error_load_with_rel_error(resnet_curves: SensitivityResult, tmp_path: Path) -> None:
    data = resnet_curves.to_json()
    for g in data["groups"]:
        for pt in g["points"]:
            del pt["channel_error"]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    old = SensitivityResult.load(path)
    pts = [p for c in old.curves for p in c.points]
    assert pts and all(p.channel_error == p.rel_error for p in pts)


def test_channel_error_weighs_every_channel_alike() -> None:
    """A large-valued channel must not hide a small channel that is destroyed (YOLO boxes vs class scores)."""
    rng = np.random.default_rng(0)
    want = np.stack([rng.normal(0, 100.0, (2, 50)), rng.normal(0, 0.1, (2, 50))], axis=1)  # [2, 2, 50]
    got = want.copy()
    got[:, 1] = 0.0  # the small channel is gone
    s = OutputSums()
    s.add(want, got)
    assert s.rel_error() < 0.01  # the whole-tensor error barely notices
    assert s.channel_error() == pytest.approx(0.5)  # channel 0: 0, channel 1: 1
    assert s.cos_error() < 1e-5


def test_channel_error_skips_channels_without_energy() -> None:
    want = np.zeros((1, 3, 4))
    want[0, 0] = 1.0
    got = want.copy()
    got[0, 0] *= 0.5
    got[0, 2] = 1e-3  # noise on a channel that is zero in the reference does not divide by zero
    s = OutputSums()
    s.add(want, got)
    assert s.channel_error() == pytest.approx(0.5)


def test_curves_refuse_another_model(resnet_curves: SensitivityResult) -> None:
    with pytest.raises(OnnxPruneError, match="another model|no curve"):
        resnet_curves.curves_for(analyse(VGG))


def test_curves_name_the_grouped_conv_mode_they_were_measured_with(tmp_path: Path) -> None:
    resnext = ROOT / "models" / "zoo" / "resnext_ts.onnx"
    curves = sensitivity_curves(analyse(resnext, grouped="index"), ratios=(0.5,), samples=2)
    assert curves.grouped == "index"
    curves.save(tmp_path / "c.json")
    loaded = SensitivityResult.load(tmp_path / "c.json")
    assert loaded.grouped == "index" and len(loaded.curves_for(analyse(resnext, grouped="index"))) > 0
    with pytest.raises(OnnxPruneError, match="measured with --grouped-conv index, this run uses auto"):
        loaded.curves_for(analyse(resnext))
    data = json.loads((tmp_path / "c.json").read_text())
    del data["grouped"]  # a file written before the mode was kept
    assert SensitivityResult.from_json(data).grouped is None


def test_bad_files_and_ratios(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "something else"}')
    with pytest.raises(OnnxPruneError, match="not an onnxprune sensitivity file"):
        SensitivityResult.load(bad)
    bad.write_text("{not json")
    with pytest.raises(OnnxPruneError, match="not a valid sensitivity file"):
        SensitivityResult.load(bad)
    with pytest.raises(OnnxPruneError, match="ratios"):
        sensitivity_curves(analyse(RESNET), ratios=(0.0, 1.0))


@pytest.mark.skipif(not (DIGITS / "digits_resnet.onnx").exists(), reason="digits model not built")
def test_labelled_accuracy_on_digits() -> None:
    dg = analyse(DIGITS / "digits_resnet.onnx")
    feeds, y = load_feeds(DIGITS / "test.npz", dg.model, batch=120)
    assert y is not None
    res = sensitivity_curves(dg, calibration=DIGITS / "calib.npz", ratios=(0.5,), samples=16,
                             labelled=LabelledData(feeds, y))
    assert res.dense_accuracy == pytest.approx(1.0)
    assert res.accuracy_samples == 360 and res.label_output == "logits"
    accs = [c.points[0].accuracy for c in res.curves]
    assert all(a is not None and 0.0 <= a <= 1.0 for a in accs)
    assert min(a for a in accs if a is not None) < 0.99  # halving some group costs accuracy
    # the stem (first group) is the most sensitive group of this model
    errs = {c.group: c.points[0].rel_error for c in res.curves}
    assert max(errs, key=lambda g: errs[g]) == res.curves[0].group


def test_cli_table_json_and_plot(tmp_path: Path) -> None:
    js, png = tmp_path / "s.json", tmp_path / "s.png"
    r = CliRunner().invoke(main, ["sensitivity", str(RESNET), "--ratios", "0.5", "--calib-samples", "4",
                                  "--json", str(js), "--plot", str(png), "--no-progress"])
    assert r.exit_code == 0, r.stderr
    assert "per group and ratio" in r.stdout and "groups x 1 ratios" in r.stdout
    assert SensitivityResult.load(js).ratios == [0.5]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args, match", [
    (["--ratios", "0.5,1.5"], "every ratio must be in"),
    (["--ratios", "half"], "comma-separated"),
    (["--data", "missing.npz"], "missing.npz"),
])
def test_cli_bad_input_is_one_line(args: list[str], match: str) -> None:
    r = CliRunner().invoke(main, ["sensitivity", str(RESNET), "--no-progress", *args])
    assert r.exit_code == 2
    assert match in _one_line_error(r.stderr)


def test_cli_missing_model_and_plot_without_matplotlib(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["sensitivity", str(tmp_path / "nope.onnx")])
    assert r.exit_code == 2
    _one_line_error(r.stderr)
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real(name, *a))
    r = CliRunner().invoke(main, ["sensitivity", str(RESNET), "--plot", str(tmp_path / "p.png")])
    assert r.exit_code == 2
    assert "needs matplotlib" in _one_line_error(r.stderr)


def test_labels_for_calibration_samples(tmp_path: Path) -> None:
    if not (DIGITS / "digits_resnet.onnx").exists():
        pytest.skip("digits model not built")
    y = np.zeros(256, dtype=np.int64)
    np.save(tmp_path / "y.npy", y)
    js = tmp_path / "s.json"
    r = CliRunner().invoke(main, ["sensitivity", str(DIGITS / "digits_resnet.onnx"), "--calib", str(DIGITS / "calib.npz"),
                                  "--labels", str(tmp_path / "y.npy"), "--ratios", "0.5", "--samples", "16",
                                  "--json", str(js), "--no-progress"])
    assert r.exit_code == 0, r.stderr
    data = json.loads(js.read_text())
    assert data["dense_accuracy"] is not None and data["accuracy_samples"] == 16
