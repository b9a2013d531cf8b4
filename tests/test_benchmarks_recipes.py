"""benchmarks/_acc_text.py (rendered text lines, CTC decode, OCR accuracy), the wider YOLOv8n
evaluation set of _acc_images, and benchmarks/recipes.py (the recipe grid)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from bench_scripts import load_script, run_quick

ROOT = Path(__file__).resolve().parent.parent
# appended, not first: benchmarks/transformers.py must not shadow the transformers package for later tests
sys.path.append(str(ROOT / "benchmarks"))

import _acc_images as im  # noqa: E402
import _acc_text as tx  # noqa: E402

needs_fonts = pytest.mark.skipif(not all((tx.FONT_DIR / f).is_file() for f in tx.FONTS),
                                 reason=f"DejaVu fonts missing in {tx.FONT_DIR} (fonts-dejavu-core)")
REC = ROOT / "models" / "real" / "ppocrv4_rec.onnx"


def test_ctc_greedy_merges_repeats_then_drops_blanks() -> None:
    chars = ["", "a", "b", " "]
    steps = [1, 1, 0, 1, 2, 2, 3, 0, 2]  # "a a" needs the blank between the two a's
    probs = np.eye(4, dtype=np.float32)[steps]
    assert tx.ctc_greedy(probs, chars) == "aab b"


def test_ocr_score_counts_exact_lines_and_edits() -> None:
    assert tx.edit_distance("kitten", "sitting") == 3
    assert tx.edit_distance("", "abc") == 3
    s = tx.ocr_score(["ab", "cd", "ef"], [" ab ", "c", "xf"])  # edges' spaces ignored; 2 edits of 6 chars
    assert s.lines == 3 and s.exact == pytest.approx(1 / 3) and s.chars == pytest.approx(4 / 6)


@needs_fonts
def test_text_set_is_deterministic_and_its_splits_share_no_string() -> None:
    a, b = tx.text_set(48, 16, seed=3), tx.text_set(48, 16, seed=3)
    assert [x.text for x in a.eval] == [x.text for x in b.eval]
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a.calib, b.calib, strict=True))
    assert not {x.text for x in a.eval} & {x.text for x in a.calib}
    assert {x.font for x in a.eval if x.kind != "cjk"} == set(tx.FONTS)
    assert {x.size for x in a.eval} == set(tx.SIZES)
    assert [x.text for x in tx.text_set(48, 16, seed=4).eval] != [x.text for x in a.eval]


@needs_fonts
@pytest.mark.skipif(not REC.is_file(), reason="models/real/ppocrv4_rec.onnx missing (make models)")
def test_dense_recogniser_reads_rendered_lines() -> None:
    """The decode and the character list line up with the model: the dense model reads most lines exactly
    (measured: 92 % of 240 lines; a wrong class offset reads none)."""
    lines = tx.text_set(24, 0, seed=1).eval
    model = onnx.load(str(REC))
    score = tx.ocr_score([x.text for x in lines], tx.read_lines(model, lines, tx.classes(model)))
    assert score.exact >= 0.7 and score.chars >= 0.9, score


def test_wide_yolo_views_never_use_calibration_photos() -> None:
    assert not set(im.YOLO_EVAL_WIDE) & set(im.YOLO_CALIB)
    views = im.wide_eval_views(("astronaut",), 3, seed=0)
    again = im.wide_eval_views(("astronaut",), 3, seed=0)
    assert len(views) == 7 + 3 and all(np.array_equal(a, b) for a, b in zip(views, again, strict=True))
    assert all(v.dtype == np.uint8 and v.ndim == 3 for v in views)


def test_recipe_as_run_names_the_reports_recipe() -> None:
    recipes = load_script("recipes")
    report = {"config": {"criterion": "obs", "allocation": "uniform", "sensitivity": {"metric": "x"}, "steps": 2},
              "reconstruct": {"fitted": 5}, "distill": None}
    assert recipes.as_run(report) == "obs / uniform, curves, 2 steps, re-fit 5 layers"
    assert recipes.as_run({**report, "recipe": {"name": "quality"}}) == \
        "quality: obs / uniform, curves, 2 steps, re-fit 5 layers"
    assert recipes.as_run({"criterion": "l2", "allocation": "uniform", "reconstruct": None}) == \
        "l2 / uniform, no re-fit"


def test_recipes_quick_prunes_digits_through_the_cli() -> None:
    out = run_quick("recipes", "--quick")
    row = next(line for line in out.splitlines() if line.startswith("| 0.7× | plain |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2].startswith("fast: l2 / uniform, re-fit ")  # 7 layers at --round-to 16, more under the suite's 1
    assert abs(float(cells[3]) - 0.7) <= 0.03
    assert float(cells[4].rstrip(" %")) >= 95.0   # measured 100.0 % (dense 100.0 %)
    assert cells[5] == "" and float(cells[6]) > 0.0  # no target for digits; the time to prune


def test_recipe_rows_of_a_split_run_merge_into_the_block() -> None:
    """A run's rows replace the rows of the same budget and recipe; the others, and the earlier commands,
    stay; a row of an older column layout is dropped; the target line reads the merged rows."""
    recipes = load_script("recipes")
    case = next(c for c in recipes.CASES if c.key == "rec")
    setup = recipes.Setup(Path("calib"), "dense", lambda m: None, "the target")

    def row(budget: float, recipe: str, cell: str, ok: bool | None) -> object:
        return recipes.Row(budget, recipe, "l2 / uniform", f"{budget:.3f}", recipes.Score(cell, ok), 1.0, (1.0, 2.0))

    stale = "| 0.5× | default | l2 / uniform | 0.500 | 0.1 | 9.9 | 1.0 → 1.0 |"
    first = recipes.block(case, setup, *recipes.merge(stale, [row(0.7, "plain", "A", True), row(0.8, "plain", "B", None)],
                                                     "python benchmarks/recipes.py --one"), "abc1234")
    table, commands = recipes.merge(first, [row(0.7, "plain", "C", False), row(0.5, "default", "D", None)],
                                    "python benchmarks/recipes.py --two")
    assert [line.split(" | ")[:2] for line in table] == [["| 0.8×", "plain"], ["| 0.7×", "plain"], ["| 0.5×", "default"]]
    assert " C | no |" in table[1] and " D |  |" in table[2]
    assert commands == ["python benchmarks/recipes.py --one", "python benchmarks/recipes.py --two"]
    assert recipes.target_line(setup, table).endswith("met by no recipe (0 of 1 runs at 0.7×).")
    assert "- default: `(no recipe flags)`" in recipes.block(case, setup, table, commands, "abc1234")
