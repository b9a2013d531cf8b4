"""Time per stage of `onnxprune prune --target-macs 0.7 --calib DIR` on the real models, for the recipes
users run, with the machine's load average next to every figure.

Models (64 calibration images each, a folder of .npy samples, `--calib DIR`, batches of 16 as the CLI):
YOLOv8n (nudenet 320n) at 1x3x320x320, PP-OCRv4 det at 1x3x640x640, PP-OCRv4 rec at 1x3x48x320.
Recipes, each the CLI command shown in the table's notes, run through the Python API in a fresh process:

* `l2`: prune --target-macs 0.7 --calib DIR (l2 order, reconstruction on with --calib)
* `obs`: the same with --criterion obs
* `curves + obs`: onnxprune sensitivity --calib DIR --ratios 0.1,...,0.6 --json S.json, then
  prune --sensitivity S.json --criterion obs (the detector recipe of docs/user_loop.md)
* `curves + obs, 2 steps`: the same prune with --steps 2 (the curves re-measured on step 1's model)
* `curves@16`: onnxprune sensitivity --calib DIR --ratios 0.1,...,0.6 --samples 16 alone (the curves a
  budgeted prune measures inline), timed as the `curves` stage

`--compare DIR` runs every model and recipe twice, alternately, in fresh processes: with the library of
DIR (another checkout, e.g. a `git worktree` of the commit before a change; on PYTHONPATH) and with this
one, and prints both with the ratio, so that both see the same load:

    python benchmarks/stage_times.py --models yolo,det,rec --recipes l2,curves16 --compare ../base --label compare

Every stage of the pipeline (pipeline/stages.py) is wrapped in a timer; a run in steps adds its stages
up over the steps, and "other" is the rest of the wall time (the steps' analysis of the original,
model statistics and checks). "stats + re-fit" is scoring plus reconstruction: every pass over the
calibration data of the prune command but the oracle's.

    python benchmarks/stage_times.py --label before          # all models and recipes, writes README
    python benchmarks/stage_times.py --models rec --recipes l2 --no-write
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _acc_images as im  # noqa: E402
from _acc_common import commit  # noqa: E402
from _readme import replace_block  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT / "models" / "real"
README = ROOT / "benchmarks" / "README.md"
SAMPLES = 64
TARGET = 0.7
CURVE_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
STAGES = ("analyse", "score", "curves", "plan", "apply", "verify", "depth", "reconstruct", "fidelity", "annotate")


@dataclass(frozen=True)
class Case:
    key: str
    name: str
    file: str
    input: str
    shape: tuple[int, int, int, int]
    views: Callable[[], list[np.ndarray]]  # the calibration images, preprocessed, one [1, 3, H, W] each


def _yolo() -> list[np.ndarray]:
    return [im.yolo_input(v) for v in im.calibration_views(im.YOLO_CALIB, SAMPLES)]


def _det() -> list[np.ndarray]:
    return [im.ocr_input(v, (640, 640)) for v in im.calibration_views(im.OCR_CALIB, SAMPLES)]


def _rec() -> list[np.ndarray]:
    return [im.rec_input(v) for v in im.line_views(im.OCR_CALIB, SAMPLES)]


CASES = (
    Case("yolo", "YOLOv8n@320", "yolov8n_320n.onnx", "images", (1, 3, 320, 320), _yolo),
    Case("det", "PP-OCRv4 det@640×640", "ppocrv4_det.onnx", "x", (1, 3, 640, 640), _det),
    Case("rec", "PP-OCRv4 rec@48×320", "ppocrv4_rec.onnx", "x", (1, 3, 48, 320), _rec),
)


@dataclass(frozen=True)
class Recipe:
    key: str
    label: str
    criterion: str
    curves: bool
    steps: int
    samples: int | None = None  # curves alone, on this many held samples (no prune)
    default: bool = False  # no recipe knob given: the CLI's default (planning/recipe.py)

    def command(self, case: Case) -> str:
        shape = "x".join(map(str, case.shape))
        ratios = ",".join(f"{r:g}" for r in CURVE_RATIOS)
        if self.samples is not None:
            return (f"onnxprune sensitivity M --calib DIR --shapes {case.input}:{shape} --ratios {ratios} "
                    f"--samples {self.samples} --json S.json")
        prune = f"onnxprune prune M -o OUT --target-macs {TARGET} --calib DIR --shapes {case.input}:{shape}"
        if self.default:
            return prune
        prune = (prune + " --fast" + (f" --criterion {self.criterion}" if self.criterion != "l2" else "")
                 + (" --sensitivity S.json" if self.curves else "") + (f" --steps {self.steps}" if self.steps > 1 else ""))
        if not self.curves:
            return prune
        return f"onnxprune sensitivity M --calib DIR --shapes {case.input}:{shape} --ratios {ratios} --json S.json; {prune}"


RECIPES = (
    Recipe("l2", "l2", "l2", False, 1),
    Recipe("obs", "obs", "obs", False, 1),
    Recipe("curves", "curves + obs", "obs", True, 1),
    Recipe("steps", "curves + obs, 2 steps", "obs", True, 2),
    Recipe("curves16", "curves@16", "l2", True, 1, samples=16),
    Recipe("default", "default (quality recipe)", "obs", False, 1, default=True),
)


def write_calibration(case: Case, folder: Path) -> Path:
    """The case's calibration images as one .npy file per sample in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, x in enumerate(case.views()):
        np.save(folder / f"{i:03d}.npy", x.astype(np.float32))
    return folder


@dataclass
class Timings:
    seconds: dict[str, float] = field(default_factory=dict)
    total: float = 0.0
    load: tuple[float, float] = (0.0, 0.0)  # 1-min load average at the start and at the end
    macs_kept: float = 0.0
    cosine: float | None = None
    rss_mb: float = 0.0  # peak resident memory of the run's process

    def add(self, stage: str, secs: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + secs


class Timed:
    """A pipeline stage that adds its wall time to `timings` under its own name."""

    def __init__(self, stage: Any, timings: Timings) -> None:
        self.stage, self.timings, self.name = stage, timings, stage.name

    def run(self, state: Any) -> None:
        start = time.perf_counter()
        try:
            self.stage.run(state)
        finally:
            self.timings.add(self.name, time.perf_counter() - start)


def run_one(case: Case, recipe: Recipe, calib: Path) -> Timings:
    """One recipe on one model, in this process; every stage timed."""
    import onnx

    import onnxprune.pipeline.schedule as schedule
    from onnxprune.api import analyse, prune
    from onnxprune.calib.source import CalibConfig, CalibrationSource
    from onnxprune.measure.curves import DEFAULT_SAMPLES, sensitivity_curves
    from onnxprune.measure.model_stats import model_stats
    from onnxprune.pipeline.stages import Pipeline, default_pipeline

    t = Timings(load=(os.getloadavg()[0], 0.0))
    model = onnx.load(str(REAL / case.file))
    shapes = {case.input: case.shape}
    start = time.perf_counter()
    source = CalibrationSource.of(CalibConfig(path=calib), model, shapes=shapes)
    curves = None
    if recipe.curves:  # onnxprune sensitivity
        s0 = time.perf_counter()
        dg = analyse(model, shapes=shapes, calibration=source)
        t.add("analyse", time.perf_counter() - s0)
        s0 = time.perf_counter()
        curves = sensitivity_curves(dg, calibration=source, ratios=CURVE_RATIOS, shapes=shapes, round_to="auto",
                                    samples=recipe.samples or DEFAULT_SAMPLES)
        t.add("curves", time.perf_counter() - s0)
    if recipe.samples is not None:
        t.total = time.perf_counter() - start
        t.load = (t.load[0], os.getloadavg()[0])
        return t
    remeasured = schedule.remeasured

    def timed_remeasure(*args: Any, **kwargs: Any) -> Any:
        s0 = time.perf_counter()
        try:
            return remeasured(*args, **kwargs)
        finally:
            t.add("curves", time.perf_counter() - s0)

    schedule.remeasured = timed_remeasure  # type: ignore[assignment]
    pipeline = Pipeline([Timed(s, t) for s in default_pipeline().stages])
    knobs: dict[str, Any] = {} if recipe.default else {"recipe": "fast", "criterion": recipe.criterion,
                                                        "sensitivity": curves, "steps": recipe.steps}
    result = prune(model, pipeline=pipeline, target_macs=TARGET, calibration=source, shapes=shapes, round_to=None,
                   **knobs)
    t.total = time.perf_counter() - start
    t.load = (t.load[0], os.getloadavg()[0])
    t.macs_kept = model_stats(result.model, shapes=shapes).macs / max(model_stats(result.dense, shapes=shapes).macs, 1)
    rec = result.reconstruction
    if rec is not None and rec.after:
        t.cosine = min(f.cosine for f in rec.after.values() if f.cosine is not None)
    return t


def _cell(t: Timings, stage: str) -> str:
    s = t.seconds.get(stage)
    return "–" if s is None else f"{s:.1f}"


def table(rows: Sequence[tuple[Case, Recipe, Timings]]) -> str:
    head = ["model", "recipe", *STAGES, "other", "total s", "stats + re-fit s", "MACs kept", "load 1-min start → end"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for case, recipe, t in rows:
        other = t.total - sum(t.seconds.values())
        refit = t.seconds.get("score", 0.0) + t.seconds.get("reconstruct", 0.0)
        cells = [case.name, recipe.label, *(_cell(t, s) for s in STAGES), f"{max(other, 0.0):.1f}", f"{t.total:.1f}",
                 f"**{refit:.1f}**", f"{t.macs_kept:.3f}", f"{t.load[0]:.1f} → {t.load[1]:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def block(label: str, rows: Sequence[tuple[Case, Recipe, Timings]], command: str, commit: str) -> str:
    ran = {r.key for _, r, _ in rows}
    cmds = "\n".join(f"- {r.label}: `{r.command(CASES[0])}`" for r in RECIPES if r.key in ran)
    return (f"Measured {time.strftime('%Y-%m-%d')} at commit {commit} on {platform.machine()}, {os.cpu_count()} CPUs "
            f"(shared: the load average of the machine is in the last column), Python {platform.python_version()}, "
            f"with\n\n    {command}\n\nSeconds (time.perf_counter) per stage, {SAMPLES} calibration images. "
            f"Recipes (shapes per model):\n\n{cmds}\n\n" + table(rows))


def _child(case_key: str, recipe_key: str, calib: str) -> None:
    case = next(c for c in CASES if c.key == case_key)
    recipe = next(r for r in RECIPES if r.key == recipe_key)
    t = run_one(case, recipe, Path(calib))
    import resource

    print("RESULT " + json.dumps({"seconds": t.seconds, "total": t.total, "load": t.load, "macs_kept": t.macs_kept,
                                  "cosine": t.cosine,
                                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def _run_child(case: Case, recipe: Recipe, calib: Path, library: Path | None = None) -> Timings:
    """A fresh process per run: no cache or memory of an earlier run carries over. library: a checkout
    whose `onnxprune` the run imports instead of this one's."""
    env = dict(os.environ)
    if library is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(library), *filter(None, [env.get("PYTHONPATH")])])
    proc = subprocess.run([sys.executable, __file__, "--child", case.key, recipe.key, str(calib)],
                          capture_output=True, text=True, check=False, env=env)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"{case.key}/{recipe.key} failed:\n{proc.stderr[-3000:]}")
    d = json.loads(line[len("RESULT "):])
    return Timings(d["seconds"], d["total"], tuple(d["load"]), d["macs_kept"], d["cosine"], d["rss_mb"])


def compare_table(rows: Sequence[tuple[Case, Recipe, Timings, Timings]]) -> str:
    """Before (the --compare library) and after (this one) of the stages that took time, with the ratio."""
    head = ["model", "recipe", "stage", "before s", "after s", "after / before", "peak RSS MB before → after",
            "load 1-min before", "load 1-min after"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for case, recipe, b, a in rows:
        for stage in ("curves", "reconstruct", "total"):
            sb = b.total if stage == "total" else b.seconds.get(stage)
            sa = a.total if stage == "total" else a.seconds.get(stage)
            if sb is None or sa is None:
                continue
            lines.append("| " + " | ".join([
                case.name, recipe.label, stage, f"{sb:.1f}", f"{sa:.1f}", f"{sa / max(sb, 1e-9):.2f}",
                f"{b.rss_mb:.0f} → {a.rss_mb:.0f}", f"{b.load[0]:.1f} → {b.load[1]:.1f}",
                f"{a.load[0]:.1f} → {a.load[1]:.1f}"]) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(c.key for c in CASES), help="comma-separated: yolo,det,rec")
    ap.add_argument("--recipes", default=",".join(r.key for r in RECIPES), help="comma-separated: l2,obs,curves,steps")
    ap.add_argument("--label", default="after", help="names the README block: stage-times-<label>")
    ap.add_argument("--no-write", action="store_true", help="print the table, leave benchmarks/README.md alone")
    ap.add_argument("--compare", type=Path, metavar="DIR",
                    help="also run the library of checkout DIR, alternately with this one (before / after)")
    ap.add_argument("--child", nargs=3, metavar=("MODEL", "RECIPE", "CALIB"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(*args.child)
        return 0
    models = args.models.split(",")
    recipes = args.recipes.split(",")
    unknown = [m for m in models if m not in {c.key for c in CASES}] + \
        [r for r in recipes if r not in {x.key for x in RECIPES}]
    if unknown:
        ap.error(f"unknown model or recipe: {', '.join(unknown)}")
    missing = [c.file for c in CASES if c.key in models and not (REAL / c.file).is_file()]
    if missing:
        ap.error(f"missing {', '.join(missing)} in models/real: run `python models/fetch_real.py`")
    rows: list[tuple[Case, Recipe, Timings]] = []
    pairs: list[tuple[Case, Recipe, Timings, Timings]] = []
    with tempfile.TemporaryDirectory(prefix="onnxprune-stages-") as tmp:
        for case in (c for c in CASES if c.key in models):
            calib = write_calibration(case, Path(tmp) / case.key)
            for recipe in (r for r in RECIPES if r.key in recipes):
                before = _run_child(case, recipe, calib, args.compare.resolve()) if args.compare else None
                t = _run_child(case, recipe, calib)
                rows.append((case, recipe, t))
                if before is not None:
                    pairs.append((case, recipe, before, t))
                    print(f"{case.name} / {recipe.label} before: {before.total:.1f} s "
                          f"({', '.join(f'{k} {v:.1f}' for k, v in before.seconds.items())}), load {before.load}")
                print(f"{case.name} / {recipe.label}: {t.total:.1f} s "
                      f"({', '.join(f'{k} {v:.1f}' for k, v in t.seconds.items())}), load {t.load}", flush=True)
    command = "python benchmarks/stage_times.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = block(args.label, rows, command.strip(), commit())
    if pairs:
        text = (f"Measured {time.strftime('%Y-%m-%d')}, this library at commit {commit()}, before = the library of "
                f"`--compare` (run first, then after, per row, fresh processes), with\n\n    {command.strip()}\n\n"
                + compare_table(pairs))
    print(text)
    if not args.no_write:
        replace_block(README, f"<!-- stage-times-{args.label}:begin -->", f"<!-- stage-times-{args.label}:end -->",
                      text, f"Time per stage, {args.label} (`benchmarks/stage_times.py`)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
