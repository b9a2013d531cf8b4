"""The re-fit's damping chosen on held-out calibration samples: the fold split of the Grams, the
anchored ridge, the choice, and what `reconstruct` reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_run import invoke, one_line_error
from graphs import Graph, source_roots
from onnx import helper

from onnxprune.api import analyse
from onnxprune.calib.collect import collect_stats
from onnxprune.calib.stats import GramStats
from onnxprune.passes.prune import ApplyPlan
from onnxprune.passes.reconstruct import DEFAULT_DAMP, reconstruct
from onnxprune.recovery.solve import (
    BIAS_ONLY,
    DAMP_PATH,
    anchored_fit,
    heldout_error,
    split_folds,
    squared_error,
)


def _conv_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="c", pads=[1, 1, 1, 1])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 3, 5, 5])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
                              initializer=[onnx.numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _matmul_model() -> onnx.ModelProto:
    g = Graph()
    x = g.input("x", ("N", "L", 6))
    g.output(g.matmul(x, 6, 4, name="m"))
    return g.build()


@pytest.mark.parametrize("kind", ["conv", "matmul"])
def test_folds_add_up_to_the_whole_and_hold_every_second_sample(kind: str) -> None:
    """`groups` after `finish` equal the Grams accumulated without a split; `holdout` equals the Grams of
    the odd samples alone (counted across batches), whatever the batch sizes."""
    model, shape, node = (_conv_model(), (3, 5, 5), "c") if kind == "conv" else (_matmul_model(), (7, 6), "m")
    out = model.graph.output[0].name
    rng = np.random.default_rng(1)
    xs = rng.standard_normal((7, *shape)).astype(np.float32)
    feeds = [{"x": xs[:3]}, {"x": xs[3:4]}, {"x": xs[4:]}]  # batches of 3, 1 and 3 samples

    def stats(batches: list[dict[str, np.ndarray]], holdout: bool) -> tuple[list[GramStats], list[GramStats] | None]:
        lg = collect_stats(model, batches, grams=[node], targets={node: out}, max_rows=None, holdout=holdout).grams[node]
        return lg.groups, lg.holdout

    whole, held = stats(feeds, True)
    plain, none = stats(feeds, False)
    odd, _ = stats([{"x": xs[1::2]}], False)
    assert none is None and held is not None
    for got, want in ((whole[0], plain[0]), (held[0], odd[0])):
        assert got.rows == want.rows
        for a, b in ((got.xtx, want.xtx), (got.xty, want.xty), (got.xsum, want.xsum), (got.ysq, want.ysq)):
            assert a is not None and b is not None
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)
    even, _ = stats([{"x": xs[0::2]}], False)
    rest = whole[0].combined(held[0], -1.0)
    assert rest.xtx is not None and even[0].xtx is not None
    np.testing.assert_allclose(rest.xtx, even[0].xtx, rtol=1e-9, atol=1e-9)


def _regression(n: int, d: int, noise: float, seed: int) -> tuple[GramStats, GramStats, np.ndarray, np.ndarray]:
    """(whole, odd rows) Grams of y = x w* + b* + noise, with w* and b*."""
    rng = np.random.default_rng(seed)
    w, b = rng.standard_normal((3, d)), rng.standard_normal(3)
    x = rng.standard_normal((n, d))
    y = x @ w.T + b + noise * rng.standard_normal((n, 3))
    whole, held = GramStats(), GramStats()
    whole.update(x, y)
    held.update(x[1::2], y[1::2])
    return whole, held, w, b


def _true_error(w: np.ndarray, b: np.ndarray, w_star: np.ndarray, b_star: np.ndarray, d: int) -> float:
    """Expected squared error on new standard-normal inputs, noise left out."""
    return float(((w - w_star) ** 2).sum() + ((b - b_star) ** 2).sum())


def _path(whole: GramStats, held: GramStats, weight: np.ndarray, bias: np.ndarray) -> dict[float, float]:
    folds = split_folds(whole, held)
    return {rel: heldout_error(folds, rel=rel, weight=weight, bias=bias, fit_bias=True) for rel in DAMP_PATH}


def test_plenty_of_clean_data_chooses_little_damping() -> None:
    whole, held, w_star, b_star = _regression(400, 6, 0.01, 0)
    errors = _path(whole, held, np.zeros_like(w_star), np.zeros(3))
    assert min(errors, key=errors.__getitem__) == min(DAMP_PATH)
    fit = anchored_fit(whole, rel=min(DAMP_PATH), weight=np.zeros_like(w_star), bias=np.zeros(3), fit_bias=True)
    assert fit is not None and _true_error(fit.weight, fit.bias, w_star, b_star, 6) < 1e-3


def test_few_noisy_samples_trust_the_anchor() -> None:
    """Fewer rows than columns: the held-out choice damps towards the (nearly right) pruned weights and
    generalises better than the fixed damping towards 0, which nearly interpolates the noise."""
    d = 40
    whole, held, w_star, b_star = _regression(30, d, 1.0, 1)
    anchor = w_star + 0.05 * np.random.default_rng(2).standard_normal(w_star.shape)
    errors = _path(whole, held, anchor, b_star)
    best = min(errors, key=errors.__getitem__)
    assert best >= 0.1
    chosen = anchored_fit(whole, rel=best, weight=anchor, bias=b_star, fit_bias=True)
    fixed = anchored_fit(whole, rel=DEFAULT_DAMP, weight=np.zeros_like(anchor), bias=b_star, fit_bias=True)
    assert chosen is not None and fixed is not None
    assert _true_error(chosen.weight, chosen.bias, w_star, b_star, d) < 0.2 * _true_error(fixed.weight, fixed.bias,
                                                                                          w_star, b_star, d)
    # in-sample the fixed fit looks better: only held-out samples tell
    assert squared_error(whole, fixed.weight, fixed.bias)[0] < squared_error(whole, chosen.weight, chosen.bias)[0]


def test_bias_only_keeps_the_weights_and_centres_the_residual() -> None:
    whole, _, w_star, b_star = _regression(200, 5, 0.1, 3)
    fit = anchored_fit(whole, rel=BIAS_ONLY, weight=w_star, bias=np.zeros(3), fit_bias=True)
    assert fit is not None
    np.testing.assert_array_equal(fit.weight, w_star)
    np.testing.assert_allclose(fit.bias, b_star, atol=0.05)
    fixed = anchored_fit(whole, rel=BIAS_ONLY, weight=w_star, bias=np.zeros(3), fit_bias=False)
    assert fixed is not None and not fixed.bias.any()


def _pruned_chain(n: int) -> tuple[onnx.ModelProto, object, set[int], list[dict[str, np.ndarray]]]:
    g = Graph()
    x = g.input("x", ("N", 8))
    g.output(g.gemm(g.relu(g.gemm(x, 8, 6, name="g1")), 6, 3, name="g2"))
    dg = analyse(g.build())
    removed = source_roots(dg, "g1", [4, 5])
    pruned = ApplyPlan(dg, removed)(dg.model).model
    rng = np.random.default_rng(0)
    return pruned, dg, removed, [{"x": rng.standard_normal((n, 8)).astype(np.float32)}]


def test_reconstruct_reports_the_choice_and_falls_back_without_folds() -> None:
    pruned, dg, removed, feeds = _pruned_chain(64)
    res = reconstruct(pruned, dg=dg, removed_roots=removed, batches=feeds)  # type: ignore[arg-type]
    (lf,) = res.layers
    assert lf.fitted and lf.damp in DAMP_PATH
    assert lf.heldout_after < lf.heldout_before  # chosen because it beat the pruned weights on unseen samples
    assert "damping chosen on held-out samples" in res.notes[0]
    js = res.to_json()["layers"]
    assert isinstance(js, list) and js[0]["damp"] == lf.damp and js[0]["heldout_before"] == lf.heldout_before
    # one sample: nothing to hold out, the fixed damping towards 0 as before
    pruned, dg, removed, feeds = _pruned_chain(1)
    one = reconstruct(pruned, dg=dg, removed_roots=removed, batches=feeds)  # type: ignore[arg-type]
    (lf,) = one.layers
    assert lf.fitted and lf.damp == DEFAULT_DAMP and np.isnan(lf.heldout_before)
    assert one.fixed_damp == 1 and any("none to hold out" in n for n in one.notes)  # the fallback is named
    # a fixed damping asked for: no held-out choice
    pruned, dg, removed, feeds = _pruned_chain(64)
    fixed = reconstruct(pruned, dg=dg, removed_roots=removed, batches=feeds, damp=1e-2)  # type: ignore[arg-type]
    (lf,) = fixed.layers
    assert lf.fitted and lf.damp == 1e-2 and np.isnan(lf.heldout_after)
    assert fixed.fixed_damp == 0 and not any("hold out" in n for n in fixed.notes)  # asked for, not a fallback


def test_cli_refit_damp_fixes_the_damping(tmp_path: Path) -> None:
    g = Graph()
    x = g.input("x", ("N", 8))
    g.output(g.gemm(g.relu(g.gemm(x, 8, 16, name="g1")), 16, 3, name="g2"))
    model = tmp_path / "m.onnx"
    onnx.save(g.build(), str(model))
    calib = tmp_path / "c.npz"
    np.savez(calib, x=np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32))
    damps = {}
    for label, extra in (("chosen", ()), ("fixed", ("--refit-damp", "0.01"))):
        report = tmp_path / f"{label}.json"
        code, _, err = invoke("prune", str(model), "-o", str(tmp_path / f"{label}.onnx"), "--ratio", "0.5", "--fast",
                              "--calib", str(calib), "--report", str(report), "--no-progress", *extra)
        assert code == 0, err
        layers = json.loads(report.read_text())["reconstruct"]["layers"]
        damps[label] = [(lf["damp"], lf["heldout_after"]) for lf in layers if lf["fitted"]]
    assert damps["fixed"] and all(d == 0.01 and h is None for d, h in damps["fixed"])
    assert damps["chosen"] and all(h is not None for _, h in damps["chosen"])
    code, _, err = invoke("prune", str(model), "-o", str(tmp_path / "bad.onnx"), "--calib", str(calib),
                          "--refit-damp", "-1")
    assert code == 2 and "--refit-damp" in err
    code, _, err = invoke("prune", str(model), "-o", str(tmp_path / "bad.onnx"), "--calib", str(calib),
                          "--refit-damp", "inf")
    assert code == 2 and "refit damping must be finite" in one_line_error(err)
    assert not (tmp_path / "bad.onnx").exists()
