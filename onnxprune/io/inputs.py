"""Model input signatures and random feeds, with user overrides for dynamic dimensions.

`random_inputs` is the one place that makes up feeds for a run of a model (shape probe, oracle,
statistics, benchmarks, validation): floats N(0, 1), integer inputs valid values inferred from the
graph (`onnxprune.io.input_values`: token ids below the vocabulary, masks of ones...).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from onnxprune.errors import OnnxPruneError
from onnxprune.io.input_values import PAST_PREFIXES, describe_rules, infer_rules, past_length, sequence_length
from onnxprune.io.types import Feed, Shapes

DEFAULT_BATCH = 1
DEFAULT_DYNAMIC_DIM = 64
PAST_SEQUENCE = "past_sequence_length"
MAX_INPUT_ELEMENTS = 2**31 - 1  # ONNX Runtime indexes many kernels with 32-bit ints; 8 GiB of float32


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: np.dtype
    dims: tuple[int | str | None, ...]  # int for static, str/None for dynamic

    def concrete(self, *, shapes: Shapes | None = None,
                 batch: int = DEFAULT_BATCH, dynamic_dim: int = DEFAULT_DYNAMIC_DIM) -> tuple[int, ...]:
        if shapes and self.name in shapes:
            shape = tuple(shapes[self.name])
            if len(shape) != len(self.dims):
                raise OnnxPruneError(f"--shapes {self.name}: rank {len(shape)} but the model expects {len(self.dims)}")
            for got, want in zip(shape, self.dims, strict=True):
                if isinstance(want, int) and want != got:
                    raise OnnxPruneError(f"--shapes {self.name}: {shape} does not match the static shape {self.dims}")
            return shape
        return tuple(d if isinstance(d, int) else (batch if i == 0 else dynamic_dim) for i, d in enumerate(self.dims))


def graph_inputs(model: onnx.ModelProto) -> list[InputSpec]:
    """Real inputs: graph inputs that are not initializers (IR<4 models list weights as inputs)."""
    inits = {t.name for t in model.graph.initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
        dims: list[int | str | None] = []
        for d in tt.shape.dim:
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            else:
                dims.append(d.dim_param or None)
        specs.append(InputSpec(vi.name, dtype, tuple(dims)))
    return specs


def concrete_shapes(specs: list[InputSpec], *, shapes: Shapes | None = None,
                    batch: int = DEFAULT_BATCH, dynamic_dim: int = DEFAULT_DYNAMIC_DIM) -> dict[str, tuple[int, ...]]:
    """The shape of every input. A dynamic dim takes the value its name (dim_param) has in `shapes`
    (`--shapes input_ids:1x16` also sizes `attention_mask`'s `sequence`). A KV cache is empty unless
    given: `past_sequence_length` (and axis 2 of a `past_key_values.*` input) is 0, a prefill, so that
    GenAI's `total_sequence_length` (`past_sequence_length + sequence_length`) is the sequence length
    and fits the rotary caches. Else batch on axis 0, `dynamic_dim` elsewhere."""
    given = {s.name: s.concrete(shapes=shapes) for s in specs if shapes and s.name in shapes}
    bound: dict[str, int] = {}
    for spec in specs:
        for d, v in zip(spec.dims, given.get(spec.name, ()), strict=False):
            if isinstance(d, str):
                bound.setdefault(d, v)
    params = {d for s in specs for d in s.dims if isinstance(d, str)}
    if "total_sequence_length" not in bound and {"past_sequence_length", "sequence_length"} <= params:
        bound["total_sequence_length"] = (bound.get("past_sequence_length", 0)
                                          + bound.get("sequence_length", dynamic_dim))
    out = dict(given)
    for spec in specs:
        if spec.name not in out:
            out[spec.name] = tuple(d if isinstance(d, int) else bound[d] if d in bound
                                   else 0 if _past_length_dim(spec, i, d)
                                   else (batch if i == 0 else dynamic_dim) for i, d in enumerate(spec.dims))
    return out


def _past_length_dim(spec: InputSpec, axis: int, dim: str | None) -> bool:
    """The past-sequence axis of a KV cache input (empty by default)."""
    return dim == PAST_SEQUENCE or (axis == 2 and len(spec.dims) == 4 and spec.name.startswith(PAST_PREFIXES))
def parse_dims(text: str, item: str) -> tuple[int, ...]:
    """`1x3x224x224` (or `1,3,224,224`) of the --shapes item `item`: positive dims, a sane total."""
    try:
        dims = tuple(int(x) for x in text.replace(",", "x").split("x") if x)
    except ValueError:
        raise OnnxPruneError(f"--shapes {item!r}: dimensions must be integers") from None
    if not dims:
        raise OnnxPruneError(f"--shapes {item!r}: expected NAME:DxDxD")
    if min(dims) < 1:
        raise OnnxPruneError(f"--shapes {item!r}: every dimension must be at least 1")
    if math.prod(dims) > MAX_INPUT_ELEMENTS:
        raise OnnxPruneError(f"--shapes {item!r}: {math.prod(dims):,} elements, more than the "
                             f"{MAX_INPUT_ELEMENTS:,} one input may hold")
    return dims


def parse_shapes(items: tuple[str, ...] | list[str]) -> dict[str, tuple[int, ...]]:
    """Parse `name:1x3x224x224` (or `name:1,3,224,224`) items."""
    out: dict[str, tuple[int, ...]] = {}
    for item in items:
        name, sep, dims = item.rpartition(":")
        if not sep or not name:
            raise OnnxPruneError(f"--shapes {item!r}: expected NAME:DxDxD")
        if name in out:
            raise OnnxPruneError(f"--shapes {item!r}: {name!r} is given twice")
        out[name] = parse_dims(dims, item)
    return out


def feed_rows(feed: Feed) -> int:
    """The samples a feed holds: dim 0 of its first input (1 for a scalar)."""
    first = next(iter(feed.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim else 1


def feed_shapes(feed: Feed) -> dict[str, tuple[int, ...]]:
    return {k: tuple(int(d) for d in np.shape(v)) for k, v in feed.items()}


def _plural(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def describe_feeds(model: onnx.ModelProto, feeds: Sequence[Feed] = (), *, random: int = 0) -> str:
    """What a run used: "4 calibration samples", "2 random inputs (input_ids: index below 300; attention_mask:
    ones)" (the rules of the inputs that are not N(0, 1)), or both joined by "and"."""
    parts = [_plural(sum(feed_rows(f) for f in feeds), "calibration sample")] if feeds else []
    if random:
        rules = describe_rules(infer_rules(model))
        parts.append(_plural(random, "random input") + (f" ({rules})" if rules else ""))
    return " and ".join(parts)
def check_shapes(model: onnx.ModelProto, shapes: Shapes | None) -> None:
    """Where --shapes meets the model: every name must be an input (a typo is not a no-op), and each
    shape must fit that input's rank and static dims."""
    specs = {s.name: s for s in graph_inputs(model)}
    for name, shape in (shapes or {}).items():
        if name not in specs:
            raise OnnxPruneError(f"--shapes {name}: the model has no input {name!r} "
                                 f"(its inputs: {', '.join(specs) or 'none'})")
        specs[name].concrete(shapes={name: shape})


def random_inputs(model: onnx.ModelProto, *, shapes: Shapes | None = None,
                  batch: int = DEFAULT_BATCH, seed: int = 0) -> dict[str, np.ndarray]:
    """One random feed per input, each input's values by its rule (`input_values.infer_rules`)."""
    rng = np.random.default_rng(seed)
    specs = graph_inputs(model)
    for spec in specs:
        if spec.dtype.kind not in "fiub":
            raise OnnxPruneError(f"input {spec.name}: unsupported dtype {spec.dtype}")
    rules = infer_rules(model, [s.name for s in specs])
    sizes = concrete_shapes(specs, shapes=shapes, batch=batch)
    total = past_length(sizes) + sequence_length(sizes, rules)
    return {s.name: rules[s.name].sample(sizes[s.name], s.dtype, rng, total_length=total) for s in specs}
