"""Concrete shapes of every tensor, from one ONNX Runtime run on random inputs.

Static shape inference misses shapes in many real exports (dynamic dims, shape subgraphs); a
single run with every intermediate tensor exposed is exact. Dynamic dims take the values of
`shapes`, or batch 1 and DEFAULT_DYNAMIC_DIM elsewhere.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import onnx
from onnx import helper

from onnxprune.inputs import random_inputs
from onnxprune.runtime import run, session
from onnxprune.skeleton import elem_types


def concrete_shapes(model: onnx.ModelProto, *, shapes: Mapping[str, tuple[int, ...]] | None = None,
                    seed: int = 0) -> dict[str, tuple[int, ...]]:
    types = elem_types(model)
    probe = copy.copy(model)
    probe.CopyFrom(model)
    existing = {o.name for o in probe.graph.output}
    names = [o for n in probe.graph.node for o in n.output if o and o not in existing and o in types]
    probe.graph.output.extend(helper.make_tensor_value_info(n, types[n], None) for n in names)
    feed = random_inputs(model, shapes=shapes, seed=seed)
    out = {k: tuple(int(d) for d in v.shape) for k, v in feed.items()}
    values = run(session(probe), feed)
    out.update({k: tuple(int(d) for d in v.shape) for k, v in values.items()})
    return out
