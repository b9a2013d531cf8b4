"""Every family of channel rules: importing this module registers them all (graph/rules/registry.py).
A new family module is added to this list."""

from __future__ import annotations

from onnxprune.graph.rules import (  # noqa: F401 - imported for their registrations
    concat_split,
    contrib_activations,
    contrib_attention,
    contrib_embedding,
    contrib_norms,
    contrib_quantized,
    contrib_rotary,
    conv,
    elementwise,
    linear,
    norm,
    pooling,
    reduce,
    reshape,
    rnn,
    shape_ops,
)
