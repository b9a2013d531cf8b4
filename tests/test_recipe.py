"""The recipe (planning/recipe.py): what fills the knobs a caller leaves unset, and why."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from graphs import Graph

from onnxprune.api import prune
from onnxprune.cli import main
from onnxprune.config import PruneConfig
from onnxprune.errors import OnnxPruneError
from onnxprune.io.model_io import save_model
from onnxprune.planning.recipe import (
    HEAD_FLOOR,
    LEAN_CRITERION,
    MIN_CURVE_SAMPLES,
    OBS_GRAM_LIMIT,
    QUALITY_CRITERION,
    choose_recipe,
)
from onnxprune.scoring.obs import gram_bytes

pytestmark = pytest.mark.filterwarnings("ignore::onnxprune.calib.source.CalibrationWarning")


def chain() -> onnx.ModelProto:
    g = Graph(seed=3)
    x = g.input("x", (None, 3, 8, 8))
    h = g.relu(g.conv(x, 3, 16, name="a"))
    h = g.relu(g.conv(h, 16, 16, name="b"))
    g.output(g.conv(h, 16, 4, name="c"))
    return g.build()


def feeds(n: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [{"x": rng.normal(size=(n, 3, 8, 8)).astype(np.float32)}]


def test_quality_recipe_fills_unset_knobs_with_data_and_a_budget() -> None:
    cfg, recipe = choose_recipe(PruneConfig.create(target_macs=0.5, calibration=feeds(16)), samples=16)
    assert recipe.name == "quality" and "calibration data" in recipe.why
    assert cfg.scoring.criterion == QUALITY_CRITERION and cfg.scoring.allocation == "curves"
    assert cfg.recovery.head_floor == HEAD_FLOOR and cfg.steps.steps == 2
    light, _ = choose_recipe(PruneConfig.create(target_macs=0.7, calibration=feeds(16)), samples=16)
    assert light.steps.steps == 1  # a light budget goes in one step


def test_given_knobs_stay_and_resolving_twice_changes_nothing() -> None:
    cfg, recipe = choose_recipe(PruneConfig.create(target_macs=0.5, calibration=feeds(16), criterion="l1",
                                                   steps=3), samples=16)
    assert cfg.scoring.criterion == "l1" and cfg.steps.steps == 3
    assert "criterion" not in recipe.chosen and "steps" not in recipe.chosen
    again, second = choose_recipe(cfg, samples=16)
    assert again == cfg and second.name == "given"


def test_without_data_or_with_fast_the_quick_path() -> None:
    cfg, recipe = choose_recipe(PruneConfig.create(target_macs=0.5), samples=0)
    assert recipe.name == "fast" and "no calibration data" in recipe.why
    assert (cfg.scoring.criterion, cfg.scoring.allocation, cfg.steps.steps) == ("l2", "uniform", 1)
    cfg, recipe = choose_recipe(PruneConfig.create(target_macs=0.5, calibration=feeds(16), recipe="fast"),
                                samples=16)
    assert recipe.name == "fast" and cfg.scoring.criterion == "l2" and cfg.recovery.head_floor is None


def test_fallbacks_are_named() -> None:
    few = MIN_CURVE_SAMPLES - 1
    cfg, recipe = choose_recipe(PruneConfig.create(target_macs=0.7, calibration=feeds(few)), samples=few)
    assert cfg.scoring.allocation == "uniform"
    assert any(f"need {MIN_CURVE_SAMPLES} calibration samples, the data has {few}" in f for f in recipe.fallbacks)
    assert f"the data has {few}" in recipe.describe()
    cfg, recipe = choose_recipe(PruneConfig.create(ratio=0.3, calibration=feeds(16)), samples=16)
    assert cfg.scoring.allocation == "uniform" and cfg.scoring.criterion == QUALITY_CRITERION
    assert any("--target-macs/--target-params" in f for f in recipe.fallbacks)


def test_obs_gives_way_where_its_grams_would_not_fit() -> None:
    m = chain()
    inits = {t.name: tuple(t.dims) for t in m.graph.initializer}
    weights = [inits[n.input[1]] for n in m.graph.node if n.op_type == "Conv"]
    assert gram_bytes(m) == sum(2 * 8 * (w[1] * w[2] * w[3]) ** 2 for w in weights)  # a Gram and its inverse each
    big = OBS_GRAM_LIMIT + 1
    cfg, recipe = choose_recipe(PruneConfig.create(target_macs=0.7, calibration=feeds(16)), samples=16, obs_bytes=big)
    assert cfg.scoring.criterion == LEAN_CRITERION and cfg.scoring.allocation == "curves"
    assert any(f"criterion {LEAN_CRITERION}: obs would hold 2.0 GiB" in f for f in recipe.fallbacks)
    asked, named = choose_recipe(PruneConfig.create(target_macs=0.7, calibration=feeds(16), criterion="obs"),
                                 samples=16, obs_bytes=big)
    assert asked.scoring.criterion == "obs" and not named.fallbacks  # a criterion the caller set stays


def test_unknown_recipe_and_curves_without_budget_are_refused() -> None:
    with pytest.raises(OnnxPruneError, match="unknown recipe"):
        PruneConfig.create(recipe="best")
    with pytest.raises(OnnxPruneError, match="--allocation curves needs a budget"):
        PruneConfig.create(allocation="curves")


def test_prune_measures_curves_in_the_run_and_reports_the_recipe() -> None:
    res = prune(chain(), target_macs=0.5, calibration=feeds(16), verify=True)
    assert res.recipe is not None and res.recipe.name == "quality"
    assert res.verify is not None and res.verify.ok
    assert res.curves_from() == "curves measured on each step's model" and res.stepped
    assert any(n.startswith("sensitivity curves measured in this run") for n in res.notes)
    assert res.to_json()["recipe"]["chosen"]["allocation"] == "curves"
    one = prune(chain(), target_macs=0.8, calibration=feeds(16))
    assert not one.stepped and one.curves_from() == "curves measured in this run"
    replay = prune(chain(), plan=one.plan, calibration=feeds(16))
    assert replay.recipe is None and replay.plan.removals == one.plan.removals  # a replayed plan needs no recipe


def test_cli_says_which_recipe_ran(tmp_path: Path) -> None:
    model, npz = tmp_path / "m.onnx", tmp_path / "c.npz"
    save_model(chain(), model)
    np.savez(npz, x=feeds(16)[0]["x"])
    runner = CliRunner()
    out = runner.invoke(main, ["prune", str(model), "-o", str(tmp_path / "q.onnx"), "--target-macs", "0.8",
                               "--calib", str(npz), "--no-progress", "--report", str(tmp_path / "q.json")])
    assert out.exit_code == 0, out.output
    assert "recipe: quality (criterion obs" in out.stdout and "--fast: the quick path" in out.stdout
    assert json.loads((tmp_path / "q.json").read_text())["recipe"]["name"] == "quality"
    out = runner.invoke(main, ["prune", str(model), "-o", str(tmp_path / "f.onnx"), "--target-macs", "0.8",
                               "--calib", str(npz), "--no-progress", "--fast"])
    assert out.exit_code == 0, out.output
    assert "recipe: fast (criterion l2, allocation uniform, steps 1): --fast asked for it" in out.stdout


DIGITS = Path(__file__).resolve().parent.parent / "models" / "digits"


@pytest.mark.skipif(not (DIGITS / "digits_resnet.onnx").exists(), reason="digits model not built")
def test_curves_land_a_budget_past_a_coarse_jump() -> None:
    # At multiples of 16 the digits net's 32-channel groups lose half at once (0.61 -> 0.37 of the MACs
    # on the curves' path): the landing fills past that jump with the other groups' later levels.
    res = prune(str(DIGITS / "digits_resnet.onnx"), target_macs=0.5, round_to=16, steps=1,
                calibration=str(DIGITS / "calib.npz"))
    assert res.target is not None and res.target.ok and abs(res.target.achieved - 0.5) <= 0.03
