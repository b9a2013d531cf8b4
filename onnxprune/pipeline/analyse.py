"""The first stage on its own: normalise a copy of a model and build its channel dependency graph.

Commands that only read a model (`inspect`) use this alone, without the planning and recovery stages.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

import onnx

from onnxprune.calib.source import CalibrationLike, CalibrationSource
from onnxprune.graph.context import DEFAULT_HEADS, allowed_kinds
from onnxprune.graph.dependency import DependencyGraph, dependency_graph
from onnxprune.graph.keep import keep_layers
from onnxprune.graph.layernorm_chains import find_layernorm_chains
from onnxprune.io.types import Shapes
from onnxprune.passes.centre import centre_layernorm_streams
from onnxprune.passes.normalize import Normalize
from onnxprune.passes.rotate import Rotation, rotate_hidden


def analyse_model(model: onnx.ModelProto, *, shapes: Shapes | None = None, approximate: Iterable[str] = (),
                  grouped: str, heads: str = DEFAULT_HEADS, calibration: CalibrationLike = None) -> DependencyGraph:
    """Normalise a copy of `model` and build its dependency graph; the shape probe runs on the first
    samples of `calibration` when it names data (kept in `dg.feeds` for the oracle)."""
    normalised = Normalize()(model)
    return dependency_graph(normalised.model, shapes=shapes, allow_approximate=allowed_kinds(approximate),
                            grouped=grouped, heads=heads,
                            feeds=CalibrationSource.of(calibration, normalised.model, shapes=shapes).real_samples(),
                            normalised=normalised.notes)


def centre_for_rotation(dg: DependencyGraph, *, shapes: Shapes | None = None, approximate: Iterable[str] = (),
                        grouped: str, heads: str = DEFAULT_HEADS,
                        calibration: CalibrationLike = None) -> tuple[DependencyGraph, list[str]]:
    """Under `--approximate rotate`: the analysis of dg's model with every pre-LN LayerNorm stream made a
    centred RMSNorm stream (passes/centre.py; the model computes the same), and notes; dg when none is."""
    if not any(n.op_type == "LayerNormalization" for n in dg.model.graph.node) and \
            not find_layernorm_chains(dg.analysis.view, lambda t: len(dg.analysis.view.shape(t) or ()) or None):
        return dg, []
    again = functools.partial(analyse_model, shapes=shapes, grouped=grouped, heads=heads, calibration=calibration)
    centring = centre_layernorm_streams(again(dg.model, approximate={*approximate, "layernorm"}))
    if not centring.groups:
        return dg, centring.notes
    return again(centring.model, approximate=approximate), centring.notes


def rotate_for_pruning(dg: DependencyGraph, *, shapes: Shapes | None = None, approximate: Iterable[str] = (),
                       grouped: str, heads: str = DEFAULT_HEADS, keep: Sequence[str] = (),
                       calibration: CalibrationLike = None) -> tuple[DependencyGraph, Rotation]:
    """`--approximate rotate`, as every command that prunes or measures runs it: pre-LN streams centred,
    hidden streams rotated (passes/rotate.py). Returns the analysis of the rotated model (dg itself when
    nothing was rotated) and the rotation, whose notes say what was and was not rotated and why."""
    centred, notes = centre_for_rotation(dg, shapes=shapes, approximate=approximate, grouped=grouped, heads=heads,
                                         calibration=calibration)
    if centred is not dg:
        centred = keep_layers(centred, keep)
    rotation = rotate_hidden(centred, calibration=calibration, shapes=shapes)
    rotation.notes[:0] = notes
    if not rotation.scores:
        if centred is not dg:  # a centred stream not rotated gains nothing: the LayerNorms stay
            rotation.notes.append("rotate (approximate): nothing rotated, the LayerNorm model is pruned as it was")
        return dg, rotation
    return keep_layers(analyse_model(rotation.model, shapes=shapes, approximate=approximate, grouped=grouped,
                                     heads=heads, calibration=calibration), keep), rotation
