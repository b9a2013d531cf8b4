"""Model input signatures and random feeds, with user overrides for dynamic dimensions."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from onnxprune.errors import OnnxPruneError

DEFAULT_BATCH = 1
DEFAULT_DYNAMIC_DIM = 64
MAX_INPUT_ELEMENTS = 2**31 - 1  # ONNX Runtime indexes many kernels with 32-bit ints; 8 GiB of float32


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: np.dtype
    dims: tuple[int | str | None, ...]  # int for static, str/None for dynamic

    def concrete(self, *, shapes: Mapping[str, tuple[int, ...]] | None = None,
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


def check_shapes(model: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]] | None) -> None:
    """Where --shapes meets the model: every name must be an input (a typo is not a no-op), and each
    shape must fit that input's rank and static dims."""
    specs = {s.name: s for s in graph_inputs(model)}
    for name, shape in (shapes or {}).items():
        if name not in specs:
            raise OnnxPruneError(f"--shapes {name}: the model has no input {name!r} "
                                 f"(its inputs: {', '.join(specs) or 'none'})")
        specs[name].concrete(shapes={name: shape})


def random_inputs(model: onnx.ModelProto, *, shapes: Mapping[str, tuple[int, ...]] | None = None,
                  batch: int = DEFAULT_BATCH, seed: int = 0) -> dict[str, np.ndarray]:
    """One random feed per input: N(0,1) floats, small non-negative ints, random bools."""
    rng = np.random.default_rng(seed)
    feed: dict[str, np.ndarray] = {}
    for spec in graph_inputs(model):
        shape = spec.concrete(shapes=shapes, batch=batch)
        if spec.dtype.kind == "f":
            feed[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        elif spec.dtype.kind in "iu":
            feed[spec.name] = rng.integers(0, 4, size=shape).astype(spec.dtype)
        elif spec.dtype.kind == "b":
            feed[spec.name] = rng.random(shape) > 0.5
        else:
            raise OnnxPruneError(f"input {spec.name}: unsupported dtype {spec.dtype}")
    return feed
