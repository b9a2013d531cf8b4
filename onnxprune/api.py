"""The Python API: `analyse` a model, `prune` it with a `PruneConfig`.

    >>> from onnxprune.api import prune
    >>> result = prune("model.onnx", ratio=0.3, verify=True)      # flat options, or prune(model, config)
    >>> result.save("model.pruned.onnx")
    >>> report = result.to_json()

`prune` fills the knobs the caller left unset from the recipe (planning/recipe.py: with the user's
data and a budget, the quality recipe; `recipe="fast"` the quick path), then runs the pipeline
(pipeline/stages.py: analyse, score, curves, plan, tune, apply, verify, reconstruct, distill
(opt-in), passes, annotate) once, or in steps (pipeline/schedule.py) when the
config asks for steps or thresholds. The flat options are the names of `PruneConfig.create` (onnxprune/config.py).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from typing import Any

import onnx

from onnxprune.calib.source import CalibrationLike, CalibrationSource
from onnxprune.config import PruneConfig
from onnxprune.errors import OnnxPruneError
from onnxprune.graph.context import APPROXIMATE_KINDS, DEFAULT_GROUPED, DEFAULT_HEADS
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.io.model_io import load_model
from onnxprune.io.progress import ProgressFn
from onnxprune.io.types import Shapes
from onnxprune.pipeline.analyse import analyse_model
from onnxprune.pipeline.result import PruneResult
from onnxprune.pipeline.schedule import prune_in_steps
from onnxprune.pipeline.stages import Pipeline, PruneState, default_pipeline, fidelity_of, timing_options
from onnxprune.planning.plan import Plan
from onnxprune.planning.recipe import CURVE_SAMPLES, choose_recipe
from onnxprune.scoring.obs import gram_bytes

ModelLike = onnx.ModelProto | str | os.PathLike[str]

__all__ = ["PruneConfig", "PruneResult", "analyse", "prune"]


def _as_model(model: ModelLike) -> onnx.ModelProto:
    return model if isinstance(model, onnx.ModelProto) else load_model(model)


def analyse(model: ModelLike, *, shapes: Shapes | None = None, approximate: Iterable[str] = (),
            grouped: str = DEFAULT_GROUPED, heads: str = DEFAULT_HEADS,
            calibration: CalibrationLike = None) -> DependencyGraph:
    """Normalise a copy of the model and build its channel dependency graph.

    calibration: the user's data (as `prune`); the shape probe runs on its first samples (kept in
    `dg.feeds` for the oracle) instead of random inputs (`onnxprune.io.inputs.random_inputs`).
    approximate: opt-in rules that cannot be proven exact, e.g. ("layernorm",); those groups are
    marked approximate. grouped: how grouped convolutions lose channels ("index", "whole" or "auto";
    onnxprune/graph/rules/conv.py). heads: what an attention loses: "whole" heads (with GQA, a KV head
    and the query heads sharing it), "dim" (one head_dim index of every head; a RoPE rotate-half pair)
    or "auto" (whole heads where they can be removed, head_dim elsewhere); `Group.kind` says which.
    """
    unknown = set(approximate) - set(APPROXIMATE_KINDS)
    if unknown:
        raise OnnxPruneError(f"unknown --approximate kind(s) {sorted(unknown)}; known: {list(APPROXIMATE_KINDS)}")
    return analyse_model(_as_model(model), shapes=shapes, approximate=approximate, grouped=grouped, heads=heads,
                         calibration=calibration)


def prune(model: ModelLike, config: PruneConfig | None = None, *, dg: DependencyGraph | None = None,
          plan: Plan | None = None, progress: ProgressFn | None = None, pipeline: Pipeline | None = None,
          **options: Any) -> PruneResult:
    """Structured channel pruning of `model` as `config` says (or the flat `options`, see
    `PruneConfig.create`). Raises NothingToPruneError if no group can lose a channel, or if the plan
    removes nothing (the message says why).

    dg: an analysis of the model already made (`analyse`); plan: replay this plan instead of
    planning; progress: a callback for long steps (onnxprune.io.progress), nothing is printed;
    pipeline: the stages to run (default: `pipeline.stages.default_pipeline()`).
    """
    if config is not None and options:
        raise OnnxPruneError(f"give either a PruneConfig or options, not both ({', '.join(options)})")
    cfg = (config or PruneConfig.create(**options)).validate()
    source = dg.model if dg is not None else _as_model(model)
    # The user's data is opened once (bad data fails here) and every stage and step reads that source.
    data = CalibrationSource.of(cfg.calibration, source, shapes=cfg.analysis.shapes)
    cfg = dataclasses.replace(cfg, calibration=data)
    recipe = None
    if plan is None:  # a replayed plan was scored and allocated when it was made
        cfg, recipe = choose_recipe(cfg, samples=data.count(CURVE_SAMPLES), obs_bytes=gram_bytes(source))
    if cfg.stepped:
        if plan is not None:
            raise OnnxPruneError("--plan replays one plan: it cannot be combined with --steps/--min-cosine/"
                                 "--max-acc-drop")
        steps = prune_in_steps(source, cfg, progress=progress, pipeline=pipeline)
        assert steps.result is not None
        result = steps.result
        result.steps, result.dense, result.config = steps, steps.original, cfg  # the whole run's, not step k's
        if result.fidelity is not None:
            result.fidelity = fidelity_of(steps.original, result.model, cfg)
    else:
        state = PruneState(cfg, source, progress, dg=dg, plan=plan)
        result = (pipeline or default_pipeline()).run(state).result()
    result.recipe = recipe
    if cfg.latency.measure:
        result.latency_ms = result.measure_latency(timing_options(cfg, result.dense))
    elif result.choice is not None and result.choice.latency is not None:
        search = result.choice.latency
        result.latency_ms = (search.dense_ms, search.achieved_ms)
    return result
