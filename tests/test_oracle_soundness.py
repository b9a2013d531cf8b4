"""The oracle cannot be fooled: NaN and inf never pass, a corrupted weight fails, and inputs on which the
original model itself gives NaN or inf are "cannot verify" (exit 4), never PASS."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from graphs import Graph, get_node, outputs_of, set_init
from zoo import zoo_entry

from onnxprune.api import analyse, prune
from onnxprune.cli import main
from onnxprune.errors import EXIT_VERIFY_FAILED, VerifyError
from onnxprune.io.inputs import random_inputs
from onnxprune.planning.plan import Plan
from onnxprune.verify import DEFAULT_RTOL, relative_error, verify_pruned

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(("got", "want"), [([1.0, NAN], [1.0, 2.0]), ([1.0, 2.0], [1.0, NAN]), ([1.0, NAN], [1.0, NAN]),
                                           ([INF, 2.0], [1.0, 2.0]), ([INF, 2.0], [INF, 2.0]), ([-INF], [INF])])
def test_a_non_finite_value_is_never_error_zero(got: list[float], want: list[float]) -> None:
    assert relative_error(np.array(got, np.float32), np.array(want, np.float32)) == INF


def test_finite_outputs_still_compare_relatively() -> None:
    assert relative_error(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.0
    assert relative_error(np.array([1.0, 2.5]), np.array([1.0, 2.0])) == pytest.approx(0.25)


def _chain(head: str | None = None, *, extra_sqrt: bool = False) -> onnx.ModelProto:
    """x -> c1 -> relu -> c2 (-> head); c1's channels are prunable (c2 consumes them)."""
    g = Graph(opset=17)
    x = g.input("x", (1, 3, 6, 6))
    y = g.conv(g.relu(g.conv(x, 3, 8, name="c1")), 8, 4, name="c2")
    if head == "nan":  # sqrt(-(|y| + 1)): NaN whatever the input
        y = g.node("Sqrt", [g.node("Neg", [g.node("Add", [g.node("Abs", [y]), g.const("one", np.float32(1.0))])])])
    g.output(y)
    if extra_sqrt:  # NaN wherever the input is negative: random N(0, 1) inputs, not real (non-negative) ones
        g.output(g.node("Sqrt", [x], name="root"))
    return g.build()


def _pruned(model: onnx.ModelProto) -> tuple[object, set[int], onnx.ModelProto]:
    res = prune(model, ratio=0.5, verify=True)
    assert res.verify is not None and res.verify.ok and res.verify.masked_edges > 0
    return res.dg, res.plan.removed_roots(res.dg), res.model


@pytest.mark.parametrize("value", [NAN, INF])
def test_a_pruned_model_that_outputs_nan_or_inf_fails(value: float) -> None:
    dg, removed, pruned = _pruned(_chain())
    bad = copy.deepcopy(pruned)

    def poison(w: np.ndarray) -> np.ndarray:
        w.reshape(-1)[0] = value
        return w

    set_init(bad, get_node(bad, "c2").input[1], poison)
    out = verify_pruned(dg, removed, bad)  # type: ignore[arg-type]
    assert not out.ok and out.max_rel_error == INF and out.unverifiable is None
    assert out.describe().startswith("verify FAIL")


def test_nan_in_the_original_on_random_inputs_cannot_verify_and_exits_4() -> None:
    model = _chain("nan")
    assert not np.isfinite(outputs_of(model, random_inputs(model))[model.graph.output[0].name]).any()
    with pytest.raises(VerifyError) as err:
        prune(model, ratio=0.5, verify=True)
    assert err.value.exit_code == EXIT_VERIFY_FAILED
    msg = str(err.value)
    assert msg.startswith("cannot verify") and "--calib" in msg and "PASS" not in msg


def test_cannot_verify_is_one_line_and_exit_4_from_the_cli(tmp_path: Path) -> None:
    src, out = tmp_path / "nan.onnx", tmp_path / "out.onnx"
    onnx.save(_chain("nan"), src)
    code, _, stderr = _invoke("prune", str(src), "-o", str(out), "--ratio", "0.5", "--round-to", "1")
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == EXIT_VERIFY_FAILED and len(lines) == 1 and not out.exists()
    assert lines[0].startswith("error: cannot verify: the original model gives NaN or inf on 2 random inputs")


def test_masking_that_turns_an_output_infinite_is_a_failure() -> None:
    """The original is finite; with c1's channel 1 removed, c2 sums nothing (its weight on channel 0 is 0)
    and 1 / 0 is inf: the pruned model is broken, not unverifiable."""
    g = Graph(opset=17)
    x = g.input("x", (1, 1, 4, 4))
    h = g.relu(g.node("Add", [g.conv(x, 1, 2, k=1, bias=False, name="c1"), g.const("lift", np.float32(1.0))]))
    g.const("c2.w", np.array([0.0, 1.0], np.float32).reshape(1, 2, 1, 1))
    y = g.node("Conv", [h, "c2.w"], name="c2", kernel_shape=[1, 1])
    g.output(g.node("Div", [g.const("one", np.float32(1.0)), y]))
    model = g.build()
    dg = analyse(model)
    group = next(gr for gr in dg.groups if "c1" in gr.sources)
    res = prune(model, plan=Plan({group.id: [1]}), dg=dg, verify=False)
    out = verify_pruned(dg, res.plan.removed_roots(dg), res.model)
    assert not out.ok and out.max_rel_error == INF and out.unverifiable is None


def test_real_feeds_are_compared_and_random_ones_skipped_where_the_original_is_not_finite() -> None:
    dg, removed, pruned = _pruned_with_data()
    real = [{"x": np.abs(np.random.default_rng(1).standard_normal((1, 3, 6, 6))).astype(np.float32)}]
    out = verify_pruned(dg, removed, pruned, feeds=real)  # type: ignore[arg-type]
    assert out.ok and out.samples == 1
    assert out.inputs == "1 calibration sample (not the 2 random inputs: the original gives NaN or inf on them)"
    bad = copy.deepcopy(pruned)
    set_init(bad, get_node(bad, "c2").input[1], lambda w: w * 10)
    assert not verify_pruned(dg, removed, bad, feeds=real).ok  # type: ignore[arg-type]
    negative = [{"x": -np.ones((1, 3, 6, 6), np.float32)}]
    cannot = verify_pruned(dg, removed, pruned, feeds=negative)  # type: ignore[arg-type]
    assert not cannot.ok and cannot.unverifiable is not None and "1 calibration sample" in cannot.unverifiable


def _pruned_with_data() -> tuple[object, set[int], onnx.ModelProto]:
    model = _chain(extra_sqrt=True)
    dg = analyse(model)
    group = next(gr for gr in dg.groups if "c1" in gr.sources)
    res = prune(model, plan=Plan({group.id: [0, 3, 5]}), dg=dg)
    return dg, res.plan.removed_roots(dg), res.model


# ----------------------------------------------------------------------------------- transformers


def _token_table(model: onnx.ModelProto) -> str:
    """The word embedding: the table the Gather on input_ids reads (through a Reshape in T5)."""
    vocab = 300  # models/zoo_transformers.py
    return next(t.name for t in model.graph.initializer if len(t.dims) == 2 and t.dims[0] == vocab)


@pytest.mark.parametrize("name", ["bert2_ts", "t5enc_dynamo"])
def test_a_corrupted_token_embedding_fails_on_a_pruned_transformer(name: str) -> None:
    entry = zoo_entry(name)
    res = prune(str(entry.path), ratio=0.3, verify=True, shapes=entry.shapes)
    assert res.verify is not None and res.verify.ok and res.removed_slots > 0
    assert "attention_mask: ones" in res.verify.describe()
    bad = copy.deepcopy(res.model)
    set_init(bad, _token_table(bad), lambda w: w * 10)
    out = verify_pruned(res.dg, res.plan.removed_roots(res.dg), bad, shapes=entry.shapes)
    assert not out.ok and out.unverifiable is None and DEFAULT_RTOL < out.max_rel_error < INF


def test_an_attention_mask_of_three_is_never_a_pass() -> None:
    """The issue's case: (1 - 3) * finfo.min overflows to inf and the attention gives NaN. On those
    feeds a corrupted pruned BERT was "PASS, error 0"; now the oracle cannot verify on them."""
    entry = zoo_entry("bert2_ts")
    res = prune(str(entry.path), ratio=0.3, shapes=entry.shapes)
    ids = np.random.default_rng(0).integers(0, 300, (1, 16))
    threes = [{"input_ids": ids, "attention_mask": np.full((1, 16), 3, np.int64)}]
    assert not np.isfinite(outputs_of(res.dg.model, threes[0])["last_hidden_state"]).all()
    bad = copy.deepcopy(res.model)
    set_init(bad, _token_table(bad), lambda w: w * 10)
    removed = res.plan.removed_roots(res.dg)
    for model in (res.model, bad):
        out = verify_pruned(res.dg, removed, model, shapes=entry.shapes, feeds=threes)
        assert not out.ok and out.unverifiable is not None and "PASS" not in out.describe()


def _invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_the_three_input_bert_inspects_and_prunes_with_its_input_rules(tmp_path: Path) -> None:
    path = str(zoo_entry("bert3_ts").path)
    code, stdout, stderr = _invoke("inspect", path, "--json")
    assert code == 0, stderr
    rules = json.loads(stdout)["inputs"]["rules"]
    assert rules == {"input_ids": "index below 300", "attention_mask": "ones", "token_type_ids": "index below 2"}
    code, stdout, stderr = _invoke("prune", path, "-o", str(tmp_path / "out.onnx"), "--ratio", "0.3", "--verify",
                                   "--report", str(tmp_path / "r.json"))
    assert code == 0, stderr
    assert "verify PASS" in stdout and "token_type_ids: index below 2" in stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["inputs"]["rules"] == rules and report["inputs"]["shape_probe"] == "random inputs"
    assert report["verify"]["ok"] and report["verify"]["inputs"].startswith("2 random inputs (input_ids")


def test_calibration_samples_feed_the_shape_probe_and_the_oracle(tmp_path: Path) -> None:
    path = str(zoo_entry("bert3_ts").path)
    rng = np.random.default_rng(0)
    data = tmp_path / "tokens.npz"
    np.savez(data, input_ids=rng.integers(0, 300, (6, 12)), attention_mask=np.ones((6, 12), np.int64),
             token_type_ids=np.zeros((6, 12), np.int64))
    code, stdout, stderr = _invoke("inspect", path, "--calib", str(data))
    assert code == 0, stderr
    assert "shapes from one run on 4 calibration samples" in stdout
    code, stdout, stderr = _invoke("prune", path, "-o", str(tmp_path / "out.onnx"), "--ratio", "0.3",
                                   "--calib", str(data), "--no-reconstruct", "--report", str(tmp_path / "r.json"))
    assert code == 0, stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["inputs"]["shape_probe"] == "4 calibration samples"
    assert report["verify"]["inputs"].startswith("4 calibration samples and 2 random inputs")
    assert report["verify"]["samples"] == 3  # one feed of 4 samples, two random feeds
    assert math.isfinite(report["verify"]["max_rel_error"])
