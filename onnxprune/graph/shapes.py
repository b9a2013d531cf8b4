"""Concrete shapes of every tensor, from one ONNX Runtime run on random inputs.

Static shape inference misses shapes in many real exports (dynamic dims, shape subgraphs); a
single run with every intermediate tensor exposed is exact. Dynamic dims take the values of
`shapes`, or batch 1 and DEFAULT_DYNAMIC_DIM elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx

from onnxprune.inputs import random_inputs
from onnxprune.runtime import run, session


def probe_tensors(model: onnx.ModelProto, *, shapes: Mapping[str, tuple[int, ...]] | None = None,
                  seed: int = 0) -> tuple[dict[str, tuple[int, ...]], dict[str, np.dtype]]:
    """Shape and dtype of every tensor of the main graph (outputs exposed untyped: ORT fills them in)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.ValueInfoProto(name=o) for n in probe.graph.node for o in n.output
                              if o and o not in existing)
    feed = random_inputs(model, shapes=shapes, seed=seed)
    values = {**feed, **run(session(probe), feed)}
    return ({k: tuple(int(d) for d in v.shape) for k, v in values.items()},
            {k: np.asarray(v).dtype for k, v in values.items()})

