"""Latency against MACs after structured pruning, and how close budgets land to their targets.

Part 1 — the physical limit of structured pruning is latency ∝ MACs. Each convolutional model is
pruned to `--target-macs 0.5` (uniform allocation, l2, no reconstruction: it does not change the
shapes) with `--round-to` 1, 8 and 16 (the one `--round-to auto` picks for this budget on this CPU
is marked: ONNX Runtime's NCHWc block, or on AVX2 16 when 16 lands the budget; where it picks the
16 plan completed with blocks of 8, that plan has its own row), and the original and pruned models
run in ONNX Runtime on the CPU as interleaved A/B pairs (`onnxprune.measure.bench.interleaved_latency`, graph optimisation on). The speedup
(median of per-pair ratios) is compared with the project's target 0.85 × (1 / MACs kept), at batch 1
and batch 8 (a static-batch-1 export is measured at batch 8 on `batch_free` copies: its batch axis made
dynamic; n/a when that copy does not run). Two sets of models: the committed
zoo files and light/real models as they are (the zoo ones run in ~0.1 ms, overhead-bound), and the
zoo architectures of `models/build_zoo.py` re-exported here at a deploy-size input (224×224 by
default) with a dynamic batch axis, into a temporary folder. The second set needs torch
(`pip install -e '.[bench]'`); `--no-deploy` skips it.

Part 2 — budgets: target vs achieved for `target_macs` / `target_params` 0.5 (uniform, global, and
per-group ratios from sensitivity curves) and for `target_latency` = 0.7 × the dense latency.

    python benchmarks/latency.py                 # both parts, writes benchmarks/README.md
    python benchmarks/latency.py --only resnet_ts --only resnet@224 --no-write --part speed

Writing one part keeps the other part's committed table in the README block.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.append(str(ROOT / "benchmarks"))  # for _readme; after tests/, whose zoo.py this folder shadows

from _readme import replace_block  # noqa: E402
from zoo import ZooEntry, zoo_entry  # noqa: E402

from onnxprune.api import PruneResult, analyse, prune  # noqa: E402
from onnxprune.graph.dependency import DependencyGraph  # noqa: E402
from onnxprune.io.inputs import graph_inputs  # noqa: E402
from onnxprune.measure.bench import (  # noqa: E402
    LatencyOptions,  # noqa: E402
    interleaved_latency,
    latency,
)
from onnxprune.measure.curves import sensitivity_curves  # noqa: E402
from onnxprune.measure.model_stats import model_stats  # noqa: E402
from onnxprune.planning.cpu_profile import cpu_name, ort_cpu_profile  # noqa: E402
from onnxprune.planning.rounding import rounding_policy  # noqa: E402

BEGIN, END = "<!-- latency:begin -->", "<!-- latency:end -->"
KEPT = "Kept from the previous run"
README = ROOT / "benchmarks" / "README.md"
TARGET_MACS = 0.5
EFFICIENCY = 0.85  # speedup must reach 0.85 × (1 / MACs kept)
ROUND_TO = (1, 8, 16)
BATCHES = (1, 8)
DEPLOY_ARCHS = ("resnet", "resnext", "mobilenetv2", "mobilenetv3", "efficientnet", "densenet", "inception",
                "shufflenetv2", "unet", "yolov8")  # the zoo's convolutional architectures that take any input size
DEPLOY_SIZE = 224
SPEED_MODELS = ("resnet_ts", "resnext_ts", "mobilenetv2_ts", "efficientnet_ts", "densenet_ts", "inception_ts",
                "shufflenetv2_ts", "vgg_ts", "unet_ts", "yolov8_ts", "light_squeezenet", "light_inception_v2",
                "light_resnet50", "light_densenet121", "real_yolov8n")
BUDGET_MODELS = ("digits", "resnet_ts", "mobilenetv2_ts", "light_squeezenet", "real_yolov8n")
LATENCY_MODELS = ("light_squeezenet", "real_yolov8n", "light_resnet50")
SECONDS_PER_AB = 6.0  # time budget of one A/B measurement (sets the repeat count)


@dataclass(frozen=True)
class Model:
    name: str
    path: Path
    shapes: dict[str, tuple[int, ...]] | None


def _model(name: str) -> Model:
    if name == "digits":
        return Model(name, ROOT / "models" / "digits" / "digits_resnet.onnx", None)
    e: ZooEntry = zoo_entry(name)
    return Model(e.name, e.path, e.shapes)


def _static_batch(model: onnx.ModelProto) -> int | None:
    for s in graph_inputs(model):
        if s.dims and isinstance(s.dims[0], int):
            return int(s.dims[0])
    return None


def batch_free(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """A copy whose batch axis is dynamic, for measuring batch 8 on a static-batch-1 export.

    Dim 0 of every graph input and output becomes "N", shape annotations are dropped, and a Reshape
    whose constant shape starts with 1 gets 0 there (ONNX: copy the input's dim 0). None when the copy
    does not run at batch 2 (some other op fixes the batch)."""
    import numpy as np
    from onnx import numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {t.name: t for t in m.graph.initializer}
    for vi in [*(i for i in m.graph.input if i.name not in inits), *m.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if not dims or not (dims[0].HasField("dim_value") and dims[0].dim_value == 1):
            return None
        dims[0].dim_param = "N"
    del m.graph.value_info[:]
    for node in m.graph.node:
        if node.op_type == "Reshape" and node.input[1] in inits:
            shape = numpy_helper.to_array(inits[node.input[1]]).copy()
            if shape.size and shape[0] == 1:
                shape[0] = 0
                inits[node.input[1]].CopyFrom(numpy_helper.from_array(shape.astype(np.int64), node.input[1]))
    try:
        runtime_outputs(m, batch=2)
    except Exception:  # noqa: BLE001 - any failure means: not batchable this way
        return None
    return m


def runtime_outputs(model: onnx.ModelProto, *, batch: int) -> None:
    import onnxruntime as ort

    from onnxprune.measure.bench import bench_feed

    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # a copy that does not run is an expected answer, not an error to print
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    sess.run(None, bench_feed(model, batch=batch))


def _repeat(model: onnx.ModelProto, batch: int, threads: int, shapes: dict[str, tuple[int, ...]] | None) -> int:
    one = latency(model, batch=batch, threads=threads, warmup=2, repeat=5, shapes=shapes).latency.median_ms
    return int(min(300, max(15, SECONDS_PER_AB / max(2 * one / 1e3, 1e-6))))


# ------------------------------------------------------------------------------------- part 1


def deploy_models(archs: list[str], size: int, folder: Path) -> list[Model]:
    """The zoo architectures re-exported at size × size with a dynamic batch axis (build_zoo's own
    models and TorchScript export; needs torch)."""
    sys.path.insert(0, str(ROOT / "models"))
    try:
        import build_zoo  # type: ignore[import-not-found]
    except ImportError as exc:
        raise SystemExit(f"deploy-size rows need torch ({exc}): run from a venv with the bench extra, "
                         f"or pass --no-deploy") from None
    out = []
    for spec in build_zoo.SPECS:
        if spec.name not in archs:
            continue
        name, shape = next(iter(spec.inputs.items()))
        deploy = (1, shape[1], size, size)
        big = dataclasses.replace(spec, inputs={name: deploy}, dynamic_batch=True)
        path = folder / f"{spec.name}_{size}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            build_zoo.export_torchscript(big, build_zoo.build_model(big), path)
        out.append(Model(f"{spec.name}@{size}", path, {name: deploy}))
    return out


def _round_to_cell(label: str, auto: str) -> str:
    return f"{label} (auto)" if label == auto else label


def _pruned(original: onnx.ModelProto, dense: DependencyGraph, m: Model, threads: int,
            round_tos: tuple[int, ...]) -> Iterator[tuple[str, PruneResult, float]]:
    """(round-to cell, result, seconds) for each multiple, and for what `--round-to auto` picks when
    that is none of them (16 completed with blocks of 8: multiple_race)."""
    # The CLI's path: the block, or on AVX2 16 first, and where 8 lands too (or only 8 and the 16
    # plan completed with blocks of 8) both timed against each other, with the table's thread count.
    t0 = time.perf_counter()
    auto = prune(original, dg=dense, target_macs=TARGET_MACS, round_to="auto", shapes=m.shapes, verify=False,
                 reconstruct=False, time_multiples=True, latency=LatencyOptions(threads=threads))
    auto_secs = time.perf_counter() - t0
    label = auto.target.label if auto.target is not None else str(auto.plan.round_to)
    for rt in round_tos:
        t0 = time.perf_counter()
        res = prune(original, dg=dense, target_macs=TARGET_MACS, round_to=rt, shapes=m.shapes, verify=False,
                    reconstruct=False)
        yield _round_to_cell(str(rt), label), res, time.perf_counter() - t0
    if label not in {str(rt) for rt in round_tos}:
        yield f"{label} (auto)", auto, auto_secs  # its seconds include the timing


def speed_rows(models: list[Model], threads: int, round_tos: tuple[int, ...]) -> list[list[str]]:
    rows = []
    for m in models:
        name = m.name
        dense = analyse(str(m.path), shapes=m.shapes)
        original = onnx.load(str(m.path))
        static = _static_batch(original)
        for cell, res, secs in _pruned(original, dense, m, threads, round_tos):
            kept = model_stats(res.model, shapes=m.shapes).macs / model_stats(dense.model, shapes=m.shapes).macs
            need = EFFICIENCY / kept
            cells = [name, cell, f"{kept:.3f}", f"{need:.2f}×"]
            for b in BATCHES:
                a_model, b_model, mark = original, res.model, ""
                if static is not None and static != b:
                    a_model, b_model, mark = batch_free(original), batch_free(res.model), "†"
                    if a_model is None or b_model is None:
                        cells.append(f"n/a (static batch {static})")
                        continue
                rep = _repeat(a_model, b, threads, m.shapes)
                ab = interleaved_latency(a_model, b_model, batch=b, threads=threads, warmup=5, repeat=rep,
                                         shapes=m.shapes)
                ok = "**met**" if ab.speedup >= need else "missed"
                cells.append(f"{ab.a.median_ms:.2f} → {ab.b.median_ms:.2f} ms{mark}, {ab.speedup:.2f}× "
                             f"(p10–p90 {ab.speedup_p10:.2f}–{ab.speedup_p90:.2f}) {ok}")
            cells.append(f"{secs:.1f}")
            print(" | ".join(cells), flush=True)
            rows.append(cells)
    return rows


def speed_table(rows: list[list[str]], threads: int, *, lead: str = "") -> str:
    head = ["model", "round-to", "MACs kept", "target speedup", *(f"batch {b}: orig → pruned, speedup" for b in BATCHES),
            "prune s"]
    profile, multiple = ort_cpu_profile(), rounding_policy("auto")
    lines = [f"{lead}ONNX Runtime CPU, {threads} intra-op thread(s), graph optimisation on, interleaved A/B pairs "
             f"(`interleaved_latency`), `--target-macs {TARGET_MACS}` uniform l2, no reconstruction. "
             f"Target: speedup ≥ {EFFICIENCY} × (1 / MACs kept). `(auto)` marks the multiple `--round-to auto` "
             f"(the CLI default) picks for this budget here: {profile.describe()}"
             + (f", and {multiple.prefer} first when it lands the budget within 3 %, timed against "
                f"{multiple.value} where both land (kept unless {multiple.value} runs > 5 % faster); where only "
                f"{multiple.value} lands, the {multiple.prefer} plan completed with blocks of {multiple.value} is "
                f"timed against it and has its own row when it wins (its prune s include the timing)"
                if multiple.prefer else "")
             + ". † batch 8 of a static-batch-1 export, "
             "measured on `batch_free` copies of both models (dim 0 made dynamic, a Reshape's leading 1 "
             "made 0 = copy); n/a when such a copy does not run.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- part 2


def budget_rows(names: list[str]) -> list[list[str]]:
    rows = []
    for name in names:
        m = _model(name)
        dg = analyse(str(m.path), shapes=m.shapes)
        calib = ROOT / "models" / "digits" / "calib.npz" if name == "digits" else None
        t0 = time.perf_counter()
        sens = sensitivity_curves(dg, calibration=calib, shapes=m.shapes, samples=16,
                                  ratios=(0.2, 0.4, 0.6, 0.8), model_name=name)
        s_secs = time.perf_counter() - t0
        for metric in ("macs", "params"):
            for how in ("uniform", "global", "sensitivity"):
                kw = {f"target_{metric}": 0.5}
                res = prune(str(m.path), dg=dg, shapes=m.shapes, verify=False, reconstruct=False,
                            allocation="global" if how == "global" else "uniform",
                            sensitivity=sens if how == "sensitivity" else None, **kw)  # type: ignore[arg-type]
                assert res.target is not None
                err = abs(res.target.achieved - 0.5) / 0.5
                note = f" (curves: {s_secs:.0f} s)" if how == "sensitivity" else ""
                rows.append([name, metric, how + note, "50.0%", f"{res.target.achieved:.1%}", f"{err:.1%}",
                             "yes" if err <= 0.03 else "no"])
                print(" | ".join(rows[-1]), flush=True)
    return rows


def latency_rows(names: list[str], threads: int) -> list[list[str]]:
    rows = []
    for name in names:
        m = _model(name)
        dg = analyse(str(m.path), shapes=m.shapes)
        dense_ms = latency(dg.model, threads=threads, warmup=5, repeat=30, shapes=m.shapes).latency.median_ms
        want = 0.7 * dense_ms
        opts = LatencyOptions(threads=threads, repeat=30)
        # round_to="auto", as the CLI's --target-latency does with --for ort: at 1, odd channel counts
        # make ONNX Runtime's latency jump around (not monotonic in MACs) and the search lands far low.
        res = prune(str(m.path), dg=dg, shapes=m.shapes, verify=False, reconstruct=False, target_latency=want,
                    latency=opts, round_to="auto")
        assert res.choice is not None and res.choice.latency is not None
        s = res.choice.latency
        err = abs(s.achieved_ms - want) / want
        rows.append([name, "latency (batch 1)", "uniform", f"{want:.2f} ms (0.7 × {dense_ms:.2f})",
                     f"{s.achieved_ms:.2f} ms at {s.chosen.achieved if s.chosen else 1.0:.1%} MACs, "
                     f"{len(s.steps)} steps (the search's own dense reading: {s.dense_ms:.2f} ms)",
                     f"{err:.1%}", "yes" if s.within else "no"])
        print(" | ".join(rows[-1]), flush=True)
    return rows


def budget_table(rows: list[list[str]]) -> str:
    head = ["model", "budget", "allocation", "target", "achieved", "|error| / target", "within 3 %"]
    lines = ["MACs and params (`round_to=1`, the API default) measured with `model_stats` on the pruned model; "
             "sensitivity curves at ratios "
             "0.2/0.4/0.6/0.8 on 16 samples (digits: its calibration set; others: random inputs). Latency: "
             "`target_latency` = 0.7 × this script's dense median (30 runs), searched over the MAC budget "
             "(each step timed against the dense model, 30 interleaved pairs: dense reading / speedup), "
             "channel multiple `--round-to auto` as the CLI's default. The search's own dense reading, "
             "taken seconds later, shows how far this host drifts between two runs of one model.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- README


def _kept_sections(old_block: str, fresh: list[str]) -> list[str]:
    """`### ` sections of the old block whose heading is not regenerated now, with where they came from
    (hand-written notes after them are dropped: they described the old run as a whole)."""
    lines = old_block.splitlines()
    when = lines[0].strip() if lines else ""
    command = next((ln.strip() for ln in lines[1:6] if ln.startswith("    ")), "")
    heads = {f.splitlines()[0] for f in fresh}
    out = []
    for part in old_block.split("\n### ")[1:]:
        head = "### " + part.splitlines()[0]
        if head in heads:
            continue
        body = part.split("\n\nNotes (")[0].rstrip()
        title, _, rest = body.partition("\n")
        if not rest.lstrip().startswith(KEPT):  # kept once already: it names its own run
            rest = f"\n{KEPT} ({when.removeprefix('Measured ').removesuffix(', with')}: `{command}`).\n{rest}"
        out.append(f"### {title}\n{rest}")
    return out


def write_block(parts: list[str], command: str) -> None:
    """Replace (or append) the latency block of benchmarks/README.md; other blocks are left alone, and
    sections of this block that were not re-run are kept."""
    body = README.read_text() if README.exists() else "# Benchmarks\n"
    env = (f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()} ({cpu_name()}), {os.cpu_count()} CPUs, "
           f"load average at the end {' / '.join(f'{x:.1f}' for x in os.getloadavg())}, "
           f"Python {platform.python_version()}")
    old = body[body.index(BEGIN) + len(BEGIN): body.index(END)].strip("\n") if BEGIN in body and END in body else ""
    text = "\n\n".join([*parts, *_kept_sections(old, parts)])
    replace_block(README, BEGIN, END, f"{env}, with\n\n    {command}\n\n{text}",
                  "Latency vs MACs, and budgets (`benchmarks/latency.py`)")


def _python() -> str:
    exe = Path(sys.executable)
    try:
        return str(exe.relative_to(ROOT))
    except ValueError:
        return str(exe)


def _selected(names: tuple[str, ...] | list[str], only: list[str] | None) -> list[str]:
    return [n for n in names if not only or n in only]


def speed_parts(args: argparse.Namespace) -> list[str]:
    round_tos = tuple(args.round_to or ROUND_TO)
    rows = speed_rows([_model(n) for n in _selected(SPEED_MODELS, args.only)], args.threads, round_tos)
    out = ["### Speedup at 0.5× MACs\n\n" + speed_table(rows, args.threads, lead="Committed zoo files (as built: "
                                                         "64×64 or 32×32 inputs), ONNX light models, real YOLOv8n at "
                                                         "320. ")]
    if args.no_deploy:
        return out
    archs = [a for a in DEPLOY_ARCHS if not args.only or a in args.only or f"{a}@{args.deploy_size}" in args.only]
    if not archs:
        return out
    with tempfile.TemporaryDirectory(prefix="onnxprune-deploy-") as tmp:
        models = deploy_models(archs, args.deploy_size, Path(tmp))
        rows = speed_rows(models, args.threads, round_tos)
    lead = (f"The zoo architectures of `models/build_zoo.py` (same modules, seeds and TorchScript export) "
            f"re-exported at {args.deploy_size}×{args.deploy_size} with a dynamic batch axis, into a temporary "
            f"folder. ")
    out.append(f"### Speedup at 0.5× MACs, deploy-size inputs ({args.deploy_size}×{args.deploy_size})\n\n"
               + speed_table(rows, args.threads, lead=lead))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", help="model name, deploy arch or arch@size (repeatable)")
    ap.add_argument("--part", choices=("speed", "budget", "all"), default="all")
    ap.add_argument("--threads", type=int, default=1, help="ORT intra-op threads (default 1: steadier on a shared box)")
    ap.add_argument("--round-to", type=int, action="append", help=f"round-to columns (repeatable; default {ROUND_TO})")
    ap.add_argument("--deploy-size", type=int, default=DEPLOY_SIZE, help="input size of the re-exported zoo rows")
    ap.add_argument("--no-deploy", action="store_true", help="skip the re-exported zoo rows (no torch needed)")
    ap.add_argument("--no-write", action="store_true", help="print only, leave benchmarks/README.md alone")
    args = ap.parse_args()
    parts = []
    if args.part in ("speed", "all"):
        parts += speed_parts(args)
    if args.part in ("budget", "all"):
        rows = budget_rows(_selected(BUDGET_MODELS, args.only))
        rows += latency_rows(_selected(LATENCY_MODELS, args.only), args.threads)
        parts.append("### Budgets: target vs achieved\n\n" + budget_table(rows))
    print("\n\n".join(parts))
    if not args.no_write:
        write_block(parts, f"{_python()} benchmarks/latency.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
