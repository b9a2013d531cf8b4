"""validate: output comparison, label metrics, thresholds, data loading, and the CLI command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from onnxprune.errors import EXIT_THRESHOLD, OnnxPruneError, ThresholdError
from onnxprune.measure.validate import (
    check_thresholds,
    classification_metrics,
    compare_arrays,
    load_data,
    validate,
)

F = TensorProto.FLOAT


def _classifier(weights: np.ndarray, *, batch: int | str = "N") -> onnx.ModelProto:
    """x [N, 8] -> Gemm -> logits [N, C]."""
    node = helper.make_node("Gemm", ["x", "w"], ["logits"], name="fc")
    graph = helper.make_graph([node], "clf", [helper.make_tensor_value_info("x", F, [batch, 8])],
                              [helper.make_tensor_value_info("logits", F, [batch, weights.shape[1]])],
                              initializer=[numpy_helper.from_array(weights.astype(np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


W = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)


def _save(tmp_path: Path, name: str, model: onnx.ModelProto) -> str:
    path = tmp_path / name
    onnx.save(model, str(path))
    return str(path)


# ---------------------------------------------------------------------------------- library


def test_identical_models_agree() -> None:
    report = validate(_classifier(W), _classifier(W), samples=3, batch=2)
    (out,) = report.outputs
    assert out.name == "logits" and out.shape == (6, 4)
    assert out.max_abs_error == 0.0 and out.max_rel_error == 0.0
    assert out.cosine == pytest.approx(1.0) and out.top1_agreement == 1.0
    assert report.num_samples == 6 and report.num_batches == 3
    check_thresholds(report, min_cosine=0.9999)


def test_changed_model_detected() -> None:
    report = validate(_classifier(W), _classifier(-W), samples=4, batch=4)
    out = report.outputs[0]
    assert out.max_abs_error > 0.1 and out.cosine == pytest.approx(-1.0)
    assert out.top1_agreement is not None and out.top1_agreement < 0.5
    with pytest.raises(ThresholdError) as err:
        check_thresholds(report, min_cosine=0.99)
    assert err.value.exit_code == EXIT_THRESHOLD


def test_compare_arrays_metrics_by_hand() -> None:
    ref = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    cand = np.array([[1.0, 2.5], [3.0, 4.0]], dtype=np.float32)
    c = compare_arrays("o", ref, cand)
    assert c.max_abs_error == pytest.approx(0.5)
    assert c.max_rel_error == pytest.approx(0.5 / (2.0 + 1e-3 * 4.0))
    expected_cos = float(ref.ravel() @ cand.ravel() / np.linalg.norm(ref) / np.linalg.norm(cand))
    assert c.cosine == pytest.approx(expected_cos)
    assert c.top1_agreement == 1.0
    assert compare_arrays("v", np.ones(3), np.ones(3)).top1_agreement is None  # not [N, C]: N/A


def test_classification_metrics_by_hand() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 1, 2])
    m = classification_metrics(pred, labels, 4)
    assert m.accuracy == pytest.approx(4 / 6)
    assert m.recall == (0.5, 1.0, 0.5, None)  # class 3 has no samples
    # FPR class 1: predicted 1 on two negatives (samples 1 and 4) out of 4 negatives
    assert m.fpr == (0.0, 0.5, 0.0, 0.0)
    assert m.confused == ((0, 1, 1), (2, 1, 1))


def test_labels_report_on_data(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, 8)).astype(np.float32)
    y = np.argmax(x @ W, axis=1)  # the original is 100% right by construction
    w2 = W.copy()
    w2[:, 0] = 0.0  # the pruned model loses class 0 logit -> some flips
    report = validate(_classifier(W), _classifier(w2), data={"x": x}, labels=y, batch=16)
    lab = report.labels
    assert lab is not None and lab.output == "logits" and lab.num_samples == 40
    assert lab.original.accuracy == 1.0
    assert lab.pruned.accuracy < 1.0 and lab.flips > 0 and lab.fixes == 0
    assert lab.acc_drop == pytest.approx(100 * (1.0 - lab.pruned.accuracy))
    assert report.num_batches == 3
    check_thresholds(report, max_acc_drop=100.0)
    with pytest.raises(ThresholdError):
        check_thresholds(report, max_acc_drop=0.0)
    json.dumps(report.to_dict())


def test_load_data_npz_and_single_array(tmp_path: Path) -> None:
    model = _classifier(W)
    x = np.zeros((5, 8), dtype=np.float64)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(5))
    feed, y = load_data(tmp_path / "d.npz", model)
    assert feed["x"].dtype == np.float32 and y is not None and list(y) == [0, 1, 2, 3, 4]
    np.save(tmp_path / "d.npy", x)
    feed, y = load_data(tmp_path / "d.npy", model)
    assert feed["x"].shape == (5, 8) and y is None
    np.savez(tmp_path / "bad.npz", a=x, b=x)
    with pytest.raises(OnnxPruneError, match="missing arrays"):
        load_data(tmp_path / "bad.npz", model)
    np.save(tmp_path / "wrong.npy", np.zeros((5, 7)))
    with pytest.raises(OnnxPruneError, match="shape"):
        load_data(tmp_path / "wrong.npy", model)


def test_static_batch_data_split() -> None:
    x = np.ones((6, 8), dtype=np.float32)
    report = validate(_classifier(W, batch=2), _classifier(W, batch=2), data={"x": x})
    assert report.num_batches == 3 and report.outputs[0].shape == (6, 4)
    with pytest.raises(OnnxPruneError, match="multiple"):
        validate(_classifier(W, batch=4), _classifier(W, batch=4), data={"x": x})


def test_mismatched_models_rejected() -> None:
    other = _classifier(W)
    other.graph.input[0].name = "z"
    other.graph.node[0].input[0] = "z"
    with pytest.raises(OnnxPruneError, match="different inputs"):
        validate(_classifier(W), other)


# -------------------------------------------------------------------------------------- CLI


def _cli(args: list[str]) -> tuple[int, str, str]:
    from onnxprune.cli import main

    result = CliRunner().invoke(main, args)
    stderr = result.stderr if result.stderr_bytes is not None else ""
    return result.exit_code, result.stdout, stderr


def test_cli_identical_passes(tmp_path: Path) -> None:
    a = _save(tmp_path, "a.onnx", _classifier(W))
    out = tmp_path / "r.json"
    code, stdout, _ = _cli(["validate", a, a, "--samples", "2", "--min-cosine", "0.999", "--json", str(out)])
    assert code == 0, stdout
    assert "cosine" in stdout and "PASS" in stdout
    doc = json.loads(out.read_text())
    assert doc["passed"] is True and doc["outputs"][0]["top1_agreement"] == 1.0


def test_cli_changed_model_exit_5(tmp_path: Path) -> None:
    a = _save(tmp_path, "a.onnx", _classifier(W))
    b = _save(tmp_path, "b.onnx", _classifier(-W))
    out = tmp_path / "r.json"
    code, _, stderr = _cli(["validate", a, b, "--min-cosine", "0.99", "--json", str(out)])
    assert code == EXIT_THRESHOLD
    assert stderr.strip().startswith("error: validation failed") and len(stderr.strip().splitlines()) == 1
    assert json.loads(out.read_text())["passed"] is False


def test_cli_labels_and_acc_drop(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((20, 8)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.argmax(x @ W, axis=1))
    a = _save(tmp_path, "a.onnx", _classifier(W))
    b = _save(tmp_path, "b.onnx", _classifier(-W))
    code, stdout, stderr = _cli(["validate", a, b, "--data", str(tmp_path / "d.npz"), "--max-acc-drop", "1"])
    assert code == EXIT_THRESHOLD, stdout + stderr
    assert "accuracy" in stdout and "most confused" in stdout and "accuracy drop" in stderr
    code, stdout, _ = _cli(["validate", a, a, "--data", str(tmp_path / "d.npz"), "--max-acc-drop", "0"])
    assert code == 0 and "100.00%" in stdout


@pytest.mark.parametrize("args", [
    ["validate", "/nonexistent/a.onnx", "/nonexistent/b.onnx"],
    ["validate", "{a}", "{a}", "--data", "/nonexistent.npz"],
    ["validate", "{a}", "{a}", "--max-acc-drop", "1"],
    ["validate", "{a}", "{a}", "--shapes", "bad"],
    ["validate", "{a}", "{junk}"],
])
def test_cli_bad_input_one_line_error(tmp_path: Path, args: list[str]) -> None:
    a = _save(tmp_path, "a.onnx", _classifier(W))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model at all")
    code, _, stderr = _cli([x.format(a=a, junk=junk) for x in args])
    assert code != 0
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr


def test_load_feeds_formats(tmp_path: Path) -> None:
    from onnxprune.measure.validate import load_feeds

    model = _classifier(W)
    x = np.arange(80, dtype=np.float32).reshape(10, 8)
    np.savez(tmp_path / "xy.npz", x=x, y=np.arange(10) % 4)
    feeds, y = load_feeds(tmp_path / "xy.npz", model, batch=4)
    assert [f["x"].shape[0] for f in feeds] == [4, 4, 2] and y is not None and y.shape == (10,)
    np.save(tmp_path / "x.npy", x)
    feeds, y = load_feeds(tmp_path / "x.npy", model, batch=4)
    assert sum(f["x"].shape[0] for f in feeds) == 10 and y is None
    np.testing.assert_array_equal(np.concatenate([f["x"] for f in feeds]), x)
    with pytest.raises(OnnxPruneError, match="no such file"):
        load_feeds(tmp_path / "missing.npz", model)


def test_labels_trimmed_when_static_batch_drops_tail() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 8)).astype(np.float32)
    feeds = [{"x": x[0:2]}, {"x": x[2:4]}]  # a fixed batch of 2 drops the 5th sample
    report = validate(_classifier(W, batch=2), _classifier(W, batch=2), feeds=feeds,
                      labels=np.argmax(x @ W, axis=1))
    assert report.labels is not None and report.labels.num_samples == 4 and report.labels.original.accuracy == 1.0
