"""Concrete shapes of every tensor, from one ONNX Runtime run on the user's data or random inputs.

Static shape inference misses shapes in many real exports (dynamic dims, shape subgraphs); a
single run with every intermediate tensor exposed is exact. It runs on `feed` (real samples) when
given, else on `inputs.random_inputs` (valid values inferred from the graph) whose dynamic dims
take the values of `shapes`, or batch 1 and DEFAULT_DYNAMIC_DIM elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx

from onnxprune.io.inputs import feed_shapes, random_inputs
from onnxprune.io.runtime import run, session
from onnxprune.io.types import Shapes


def probe_tensors(model: onnx.ModelProto, *, shapes: Shapes | None = None,
                  seed: int = 0, feed: Mapping[str, np.ndarray] | None = None,
                  ) -> tuple[dict[str, tuple[int, ...]], dict[str, np.dtype]]:
    """Shape and dtype of every tensor of the main graph (outputs exposed untyped: ORT fills them in)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.ValueInfoProto(name=o) for n in probe.graph.node for o in n.output
                              if o and o not in existing)
    if feed is None:
        feed = random_inputs(model, shapes=shapes, seed=seed)
    values = {**feed, **run(session(probe), feed)}
    return feed_shapes(values), {k: np.asarray(v).dtype for k, v in values.items()}

