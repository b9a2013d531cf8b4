"""The recipe grid: every model pruned at 0.8x, 0.7x and 0.5x MACs by each recipe, through the CLI in a
fresh process, with its time to prune and its accuracy.

    python benchmarks/recipes.py                          # the whole grid; each model writes its own README block
    python benchmarks/recipes.py --models rec --budgets 0.5 --recipes distill   # adds or replaces those rows only
    python benchmarks/recipes.py --models rec --budgets 0.7 --recipes plain,default --no-write
    python benchmarks/recipes.py --quick                  # digits, 0.7x, plain; nothing written (smoke test)

Each run is `onnxprune prune M -o OUT --target-macs X --calib DIR --shapes IN:SHAPE --report R.json
--no-progress` plus the recipe's flags (RECIPES), in its own process; "time to prune" is the wall time of
that process (model loading and the oracle included). What the run did is read back from its report:
the "recipe" entry when the CLI writes one, else criterion / allocation / curves / steps / re-fit /
distillation as the report gives them, so a change of the CLI's defaults shows in the table.

Models, calibration (never an evaluation image or string) and metrics:
- digits (models/digits): its calib.npz; top-1 accuracy on its test set.
- YOLOv8n (nudenet 320n) at 1x3x320x320: CALIB_COUNT crops of _acc_images.YOLO_CALIB; box F1 against the
  dense model (_acc_metrics) on _acc_images.wide_eval_views of YOLO_EVAL_WIDE (YOLO_AUGMENTED augmented
  views per photograph besides its 7 fixed views).
- PP-OCRv4 det at 1x3x640x640: CALIB_COUNT crops of OCR_CALIB at 640x640; mask IoU against the dense
  model on OCR_EVAL and mirrors at rapidocr's sizes.
- PP-OCRv4 rec at 1x3x48x320: the calibration split of the rendered text lines (_acc_text), at 48x320
  (wider lines squeezed, as rapidocr's fixed-width batches do); exact-line and character accuracy
  against the ground truth on the evaluation split, each line at its own width, next to the dense
  model's own.
Targets at 0.7x MACs (issue 24): YOLOv8n box F1 >= 0.9; rec exact-line within 3 points of the dense
model and character accuracy within 1 point.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if str(Path(__file__).resolve().parent) not in sys.path:  # loaded as a module (tests): the _acc_* helpers,
    sys.path.append(str(Path(__file__).resolve().parent))  # after the packages (benchmarks/transformers.py)

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from _acc_common import DIGITS, README, REAL, commit, environment  # noqa: E402
from _readme import replace_block  # noqa: E402

TRANSFORMERS = DIGITS.parent / "transformers"
DISTILL_SECONDS = 120
# The recipes, as the CLI arguments each adds to the common command (defined here once).
RECIPES: dict[str, list[str]] = {
    "plain": ["--fast"],                                        # the quick path
    "default": [],                                              # whatever the CLI does by default
    "distill": ["--distill", "--distill-time", str(DISTILL_SECONDS)],
    "onestep": ["--steps", "1"],                                # the default in one step: do the steps pay?
    "fixed-damp": ["--refit-damp", "0.001"],                    # the default with the re-fit's former fixed damping
}
BUDGETS = (0.8, 0.7, 0.5)
TARGET_BUDGET = 0.7
CALIB_COUNT = 64
YOLO_AUGMENTED = 24
REC_EVAL, REC_CALIB = 240, 64
QUICK = ("digits", (0.7,), ("plain",))
CLI = [sys.executable, "-c", "import sys; from onnxprune.cli import main; sys.exit(main())"]


@dataclass(frozen=True)
class Score:
    cell: str
    ok: bool | None = None  # against the target at TARGET_BUDGET (None: no target)


@dataclass(frozen=True)
class Setup:
    calib: Path
    dense: str                                   # the dense model's own figures, for the block's header
    score: Callable[[onnx.ModelProto], Score]
    target: str = ""                             # the target, in words


@dataclass(frozen=True)
class Case:
    key: str
    name: str
    path: Path
    shapes: str                                  # the --shapes value
    metric: str                                  # the table's column
    setup: Callable[[Path], Setup]               # writes the calibration data into the folder
    extra: tuple[str, ...] = ()                  # further input options of the model (not recipe flags)


def _npy_folder(folder: Path, samples: Sequence[np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, x in enumerate(samples):
        np.save(folder / f"{i:03d}.npy", x.astype(np.float32))
    return folder


def _digits(folder: Path) -> Setup:
    from _acc_common import accuracy, load_digits

    d = load_digits()
    dense = accuracy(d.model, d.x, d.y)
    return Setup(d.calib_path, f"dense test accuracy {100 * dense:.1f} % ({len(d.y)} images)",
                 lambda m: Score(f"{100 * accuracy(m, d.x, d.y):.1f} %"))


def _yolo(folder: Path) -> Setup:
    import _acc_images as im
    from _acc_common import outputs
    from _acc_metrics import box_agreement

    calib = _npy_folder(folder, [im.yolo_input(v) for v in im.calibration_views(im.YOLO_CALIB, CALIB_COUNT)])
    inputs = [im.yolo_input(v) for v in im.wide_eval_views(im.YOLO_EVAL_WIDE, YOLO_AUGMENTED)]
    dense_out = outputs(onnx.load(str(REAL / "yolov8n_320n.onnx")), inputs)
    boxes = box_agreement(dense_out, dense_out).dense

    def score(m: onnx.ModelProto) -> Score:
        a = box_agreement(dense_out, outputs(m, inputs))
        return Score(f"{a.f1:.3f} ({a.matched} of {a.dense} dense / {a.pruned} pruned boxes)", a.f1 >= 0.9)

    return Setup(calib, f"{boxes} dense boxes at confidence 0.25 on {len(inputs)} views of "
                 f"{len(im.YOLO_EVAL_WIDE)} photographs ({', '.join(im.YOLO_EVAL_WIDE)})", score,
                 "box F1 >= 0.9 at 0.7x MACs")


def _det(folder: Path) -> Setup:
    import _acc_images as im
    from _acc_common import outputs
    from _acc_metrics import mask_iou

    views = im.calibration_views(im.OCR_CALIB, CALIB_COUNT)
    calib = _npy_folder(folder, [im.ocr_input(v, (640, 640)) for v in views])
    inputs = im.eval_inputs(im.OCR_EVAL, im.ocr_input, im.mirror_views)
    dense_out = outputs(onnx.load(str(REAL / "ppocrv4_det.onnx")), inputs)
    return Setup(calib, f"{len(inputs)} evaluation images ({', '.join(im.OCR_EVAL)} and their mirrors)",
                 lambda m: Score(f"{mask_iou(dense_out, outputs(m, inputs)):.3f}"))


def _rec(folder: Path) -> Setup:
    import _acc_images as im
    import _acc_text as tx

    lines = tx.text_set(REC_EVAL, REC_CALIB)
    calib = _npy_folder(folder, [im.rec_input(line.image) for line in lines.calib])
    dense_model = onnx.load(str(REAL / "ppocrv4_rec.onnx"))
    chars = tx.classes(dense_model)
    truth = [line.text for line in lines.eval]
    read = tx.read_lines(dense_model, lines.eval, chars)
    dense = tx.ocr_score(truth, read)
    weakest = {key: min(tx.breakdown(lines.eval, read, key).items(), key=lambda kv: (kv[1].exact, kv[1].chars))
               for key in ("font", "size", "kind")}
    cjk = f"CJK font {lines.cjk_font.name}" if lines.cjk_font else "no CJK font installed: Latin lines only"

    def score(m: onnx.ModelProto) -> Score:
        s = tx.ocr_score(truth, tx.read_lines(m, lines.eval, chars))
        return Score(s.cells(), s.exact >= dense.exact - 0.03 and s.chars >= dense.chars - 0.01)

    weak = "; ".join(f"weakest {k} {v[0]}: {v[1].cells()}" for k, v in weakest.items())
    return Setup(calib, f"{len(truth)} rendered lines ({len(tx.FONTS)} DejaVu fonts, sizes "
                 f"{', '.join(map(str, tx.SIZES))} px; {cjk}); dense model {dense.cells()}; {weak}", score,
                 "exact-line within 3 points of the dense model, character accuracy within 1 point, at 0.7x MACs")


def _zookit() -> Any:
    sys.path.insert(0, str(TRANSFORMERS))
    import zookit  # type: ignore[import-not-found]

    return zookit


def _lm(folder: Path) -> Setup:
    from onnxprune.io.runtime import session

    zk = _zookit()
    dense = zk.heldout_perplexity(session(onnx.load(str(TRANSFORMERS / "lm_llama.onnx"))))
    return Setup(TRANSFORMERS / "lm_calib.npz", f"dense held-out perplexity {dense:.3f} (first 64 windows of "
                 "lm_heldout.npz, lower is better)", lambda m: Score(f"{zk.heldout_perplexity(session(m)):.3f}"))


def _vit(folder: Path) -> Setup:
    from _acc_common import load_digits

    from onnxprune.io.runtime import session

    zk = _zookit()
    dense = zk.digits_accuracy(session(onnx.load(str(TRANSFORMERS / "vit_digits.onnx"))), "pixel_values")
    return Setup(load_digits().calib_path, f"dense test accuracy {dense:.1f} % (models/digits/test.npz)",
                 lambda m: Score(f"{zk.digits_accuracy(session(m), 'pixel_values'):.1f} %"))


CASES = (
    Case("digits", "digits_resnet", DIGITS / "digits_resnet.onnx", "input:1x1x8x8", "test accuracy", _digits),
    Case("yolo", "YOLOv8n (nudenet 320n)", REAL / "yolov8n_320n.onnx", "images:1x3x320x320", "box F1 vs dense",
         _yolo),
    Case("det", "PP-OCRv4 det", REAL / "ppocrv4_det.onnx", "x:1x3x640x640", "mask IoU vs dense", _det),
    Case("rec", "PP-OCRv4 rec", REAL / "ppocrv4_rec.onnx", "x:1x3x48x320", "vs ground truth", _rec),
    Case("lm", "lm_llama", TRANSFORMERS / "lm_llama.onnx", "input_ids:1x128", "held-out perplexity", _lm,
         ("--calib-samples", "64")),
    Case("vit", "vit_digits", TRANSFORMERS / "vit_digits.onnx", "pixel_values:1x1x8x8", "test accuracy", _vit),
)


def as_run(report: dict[str, Any]) -> str:
    """What the run did, from its report: the recipe's name when the CLI reports one, then the parts."""
    cfg = report.get("config") or {}
    parts = [f"{cfg.get('criterion', report.get('criterion'))} / {cfg.get('allocation', report.get('allocation'))}"]
    if (cfg.get("sensitivity") or report.get("sensitivity")) and "curves" not in parts[0]:
        parts.append("curves")
    steps = cfg.get("steps") or 1
    if steps > 1:
        parts.append(f"{steps} steps")
    rec = report.get("reconstruct")
    parts.append(f"re-fit {rec['fitted']} layers" if rec and rec.get("fitted") else "no re-fit")
    if cfg.get("head_floor") is not None:
        parts.append("weighted")
    if report.get("distill"):
        parts.append("distill")
    recipe = report.get("recipe")
    return (f"{recipe['name']}: " if isinstance(recipe, dict) else "") + ", ".join(parts)


HEAD = ["budget", "recipe", "as run (from the report)", "MACs kept", "{metric}", f"meets the {TARGET_BUDGET:g}× target",
        "time to prune s", "load 1-min start → end"]
ROW = re.compile(r"^\| (\d[\d.]*)× \| ([\w-]+) \|")
COMMAND_LINE = "    python benchmarks/recipes.py"


@dataclass(frozen=True)
class Row:
    budget: float
    recipe: str
    ran: str
    macs: str
    score: Score
    seconds: float
    load: tuple[float, float]

    def cells(self) -> list[str]:
        ok = "" if self.score.ok is None or self.budget != TARGET_BUDGET else "yes" if self.score.ok else "no"
        return [f"{self.budget:g}×", self.recipe, self.ran, self.macs, self.score.cell, ok, f"{self.seconds:.1f}",
                f"{self.load[0]:.1f} → {self.load[1]:.1f}"]


def prune_once(case: Case, setup: Setup, budget: float, recipe: str, tmp: Path) -> Row:
    """One CLI run in its own process, timed around the process, then scored."""
    out, report = tmp / f"{case.key}_{budget:g}_{recipe}.onnx", tmp / f"{case.key}_{budget:g}_{recipe}.json"
    cmd = [*CLI, "prune", str(case.path), "-o", str(out), "--target-macs", f"{budget:g}", "--calib",
           str(setup.calib), "--shapes", case.shapes, "--report", str(report), "--no-progress", *case.extra,
           *RECIPES[recipe]]
    load0 = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    secs = time.perf_counter() - start
    load = (load0, os.getloadavg()[0])
    if proc.returncode != 0 or not out.is_file():
        why = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return Row(budget, recipe, "failed", "n/a", Score(f"n/a (exit {proc.returncode}: {why})"), secs, load)
    rep = json.loads(report.read_text())
    macs = (rep.get("removal") or {}).get("macs_kept") or (rep.get("target") or {}).get("achieved")
    score = setup.score(onnx.load(str(out)))
    out.unlink()
    return Row(budget, recipe, as_run(rep), "n/a" if macs is None else f"{macs:.3f}", score, secs, load)


def _row_key(line: str) -> tuple[float, int] | None:
    """(budget, recipe) order of a table row of the current layout; None for any other line (a row of an
    older layout, with other columns, is dropped rather than mixed in)."""
    m = ROW.match(line)
    if m is None or m.group(2) not in RECIPES or line.count(" | ") != len(HEAD) - 1:
        return None
    return -float(m.group(1)), list(RECIPES).index(m.group(2))


def merge(old: str, rows: Sequence[Row], command: str) -> tuple[list[str], list[str]]:
    """The table lines and commands of the block `old` (this model's README block, or "") with this run's:
    a row of this run replaces the row of the same budget and recipe; the others stay (split runs)."""
    lines = {_row_key(x): x for x in old.splitlines() if _row_key(x) is not None}
    for r in rows:
        line = "| " + " | ".join(r.cells()) + " |"
        lines[_row_key(line)] = line
    commands = [x.strip() for x in old.splitlines() if x.startswith(COMMAND_LINE)]
    commands = [c for c in commands if c != command] + [command]
    return [lines[k] for k in sorted(k for k in lines if k is not None)], commands


def target_line(setup: Setup, table: Sequence[str]) -> str:
    if not setup.target:
        return ""
    col = HEAD.index(f"meets the {TARGET_BUDGET:g}× target")
    judged = [(ROW.match(x), x.strip("|").split("|")[col].strip()) for x in table]
    judged = [(m.group(2), v) for m, v in judged if m is not None and v in ("yes", "no")]
    if not judged:
        return f"Target ({setup.target}): not measured."
    met = [recipe for recipe, v in judged if v == "yes"]
    return (f"Target ({setup.target}): met by {', '.join(met) if met else 'no recipe'} "
            f"({len(met)} of {len(judged)} runs at {TARGET_BUDGET:g}×).")


def block(case: Case, setup: Setup, table: Sequence[str], commands: Sequence[str], at: str) -> str:
    used = sorted({m.group(2) for x in table if (m := ROW.match(x))}, key=list(RECIPES).index)
    recipes = "\n".join(f"- {k}: `{' '.join(RECIPES[k]) or '(no recipe flags)'}`" for k in used)
    head = [h.format(metric=case.metric) for h in HEAD]
    runs = "\n".join(f"    {c}" for c in commands)
    text = (f"{environment()}, last run at commit {at}; rows from the runs of\n\n{runs}\n\n(the load average of the "
            f"machine during each run is in its row). Common command: `onnxprune prune M -o OUT --target-macs X "
            f"--calib DIR --shapes {case.shapes} --report R.json --no-progress"
            f"{''.join(' ' + a for a in case.extra)}`, one process per run; recipes:\n\n{recipes}\n\n"
            f"{case.name}: {setup.dense}.\n\n" + "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
                                                            *table]))
    line = target_line(setup, table)
    return text + (f"\n\n{line}" if line else "")


def markers(case: Case) -> tuple[str, str]:
    return f"<!-- recipes-{case.key}:begin -->", f"<!-- recipes-{case.key}:end -->"


def write(case: Case, setup: Setup, rows: Sequence[Row], command: str, at: str) -> str:
    """Merge this run's rows into the model's block of benchmarks/README.md (under a lock: split runs of one
    model may finish together) and return the block."""
    import fcntl

    begin, end = markers(case)
    with open(Path(tempfile.gettempdir()) / "onnxprune-recipes-readme.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        body = README.read_text() if README.exists() else ""
        old = body[body.index(begin):body.index(end)] if begin in body and end in body else ""
        text = block(case, setup, *merge(old, rows, command), at)
        replace_block(README, begin, end, text, f"Recipe grid: {case.name} (`benchmarks/recipes.py`)")
    return text


def _choice(ap: argparse.ArgumentParser, text: str, allowed: Sequence[str], what: str) -> list[str]:
    got = [t for t in text.split(",") if t]
    bad = [t for t in got if t not in allowed]
    if bad or not got:
        ap.error(f"unknown {what} {', '.join(bad) or '(none given)'}; choose from {', '.join(allowed)}")
    return got


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(c.key for c in CASES), help="comma-separated: " + ",".join(c.key for c in CASES))
    ap.add_argument("--budgets", default=",".join(f"{b:g}" for b in BUDGETS), help="MACs kept, comma-separated")
    ap.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated: {','.join(RECIPES)}")
    ap.add_argument("--write", dest="write", action="store_true", default=True,
                    help="write each model's block of benchmarks/README.md (the default)")
    ap.add_argument("--no-write", dest="write", action="store_false", help="print only")
    ap.add_argument("--quick", action="store_true", help="digits at 0.7x with the plain recipe; nothing written")
    args = ap.parse_args(argv)
    models = _choice(ap, args.models, [c.key for c in CASES], "model")
    recipes = _choice(ap, args.recipes, list(RECIPES), "recipe")
    try:
        budgets = [float(b) for b in args.budgets.split(",")]
    except ValueError:
        ap.error(f"--budgets: not numbers: {args.budgets}")
    if not all(0 < b <= 1 for b in budgets):
        ap.error("--budgets: each in (0, 1]")
    if args.quick:
        models, budgets, recipes, args.write = [QUICK[0]], list(QUICK[1]), list(QUICK[2]), False
    missing = [c.path.name for c in CASES if c.key in models and not c.path.is_file()]
    if missing:
        ap.error(f"missing {', '.join(missing)}: run `python models/fetch_real.py`")
    command = "python benchmarks/recipes.py " + " ".join(argv if argv is not None else sys.argv[1:])
    at = commit()  # the code that runs, even if the branch moves on during a long run
    with tempfile.TemporaryDirectory(prefix="onnxprune-recipes-") as tmp:
        for case in (c for c in CASES if c.key in models):
            setup = case.setup(Path(tmp) / f"{case.key}_calib")
            print(f"{case.name}: {setup.dense}", flush=True)
            rows: list[Row] = []
            for budget in budgets:
                for recipe in recipes:
                    rows.append(prune_once(case, setup, budget, recipe, Path(tmp)))
                    print("  " + " | ".join(rows[-1].cells()), flush=True)
                    if args.write:  # after every run: an interrupted grid keeps what it measured
                        write(case, setup, rows[-1:], command.strip(), at)
            print(block(case, setup, *merge("", rows, command.strip()), at), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
