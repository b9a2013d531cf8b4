"""Valid values for a model's inputs when no data is given, inferred from the graph.

Random integers are not valid inputs: token ids past the vocabulary make Gather fail, and an
attention mask of 3 turns `(1 - mask) * finfo.min` into inf, then NaN. So each integer input is
followed through ops that only move or cast its values (Cast, Unsqueeze, Reshape, Expand, Slice,
Concat...) to the ops that read them:

- the indices of a Gather, or the ids ONNX Runtime's contrib ops look up (EmbedLayerNormalization's
  word, segment and position tables, the rotary caches' positions): an index, random in [0, rows) of
  the smallest table it indexes (token ids, token types, position ids alike);
- `1 - x`, the condition of a Where, Not, a Cast to bool, a product after a Cast to float, a
  ReduceSum (the count of real tokens, as GenAI exports derive `seqlens_k`), the mask input of an
  ONNX Runtime attention or embedding op: a mask, all ones (nothing masked);
- ONNX Runtime GenAI's `seqlens_k` (the total sequence length - 1 per batch row) and
  `total_sequence_length`, by name: consistent with the sequence length of the other inputs.

A mask use wins over an index use (ones index every table of 2 rows or more). An integer input
with none of these uses keeps random values in [0, 4), and says so. Floats are N(0, 1); booleans
are all True where they are a mask, else random.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx

from onnxprune.graph.view import GraphView, node_attr
from onnxprune.io.types import Shapes

NORMAL, BOOL, INDEX, MASK, SEQLENS_K, TOTAL_LENGTH, SMALL = (
    "normal", "bool", "index", "mask", "seqlens_k", "total_sequence_length", "small")
SMALL_HIGH = 4  # the range of an integer input nothing tells about
# Ops whose output holds (some of) the values of their first input, unchanged or cast.
MOVES = {"Cast", "CastLike", "Unsqueeze", "Squeeze", "Reshape", "Expand", "Flatten", "Identity", "Transpose",
         "Slice", "Tile", "Concat", "Split", "Gather", "GatherElements", "GatherND", "Pad"}
FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
               onnx.TensorProto.BFLOAT16}
GATHERS = {"Gather", "GatherElements", "GatherND"}  # input 1: the indices
# ONNX Runtime contrib ops (com.microsoft) that look an input up in a table: (op, input) -> the table input.
# Position ids pick rows of the rotary cos/sin caches.
TABLE_LOOKUPS = {("EmbedLayerNormalization", 0): 2, ("EmbedLayerNormalization", 1): 4,
                 ("EmbedLayerNormalization", 8): 3, ("RotaryEmbedding", 1): 2, ("GroupQueryAttention", 9): 7}
# ... and the contrib inputs that are attention masks (1 = attend).
MASK_INPUTS = {("EmbedLayerNormalization", 7), ("Attention", 3), ("MultiHeadAttention", 4), ("QAttention", 5)}
CONTRIB_DOMAIN = "com.microsoft"
PAST_PREFIXES = ("past_key_values", "past_key", "past_value", "past.")


@dataclass(frozen=True)
class InputRule:
    """How the values of one input are made up: `kind` is one of the constants above."""

    kind: str
    high: int | None = None  # INDEX: the number of rows of the smallest table indexed (None: unknown)

    def __str__(self) -> str:
        if self.kind == INDEX:
            return f"index below {self.high}" if self.high is not None else "index into a table of unknown size: zeros"
        return {NORMAL: "N(0, 1)", BOOL: "random booleans", MASK: "ones",
                SEQLENS_K: "total sequence length - 1", TOTAL_LENGTH: "total sequence length",
                SMALL: f"no rule found: random in [0, {SMALL_HIGH})"}[self.kind]

    def sample(self, shape: tuple[int, ...], dtype: np.dtype, rng: np.random.Generator, *,
               total_length: int) -> np.ndarray:
        if self.kind == NORMAL:
            return rng.standard_normal(shape).astype(dtype)
        if self.kind == BOOL:
            return np.asarray(rng.random(shape) > 0.5)
        if self.kind == MASK:
            return np.ones(shape, dtype=dtype)
        if self.kind in (SEQLENS_K, TOTAL_LENGTH):
            return np.full(shape, total_length - (1 if self.kind == SEQLENS_K else 0), dtype=dtype)
        high = SMALL_HIGH if self.kind == SMALL else self.high or 1
        return rng.integers(0, high, size=shape).astype(dtype)


def describe_rules(rules: Mapping[str, InputRule], *, every: bool = False) -> str:
    """`input_ids: index below 30522; attention_mask: ones`: the inputs that are not plain N(0, 1)
    (`every`: all of them)."""
    return "; ".join(f"{name}: {rule}" for name, rule in rules.items() if every or rule.kind != NORMAL)


def infer_rules(model: onnx.ModelProto, names: list[str] | None = None) -> dict[str, InputRule]:
    """A rule per graph input (weights listed as inputs excluded), or per name of `names`."""
    view = GraphView(model)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in model.graph.input}
    wanted = names if names is not None else [n for n in types if n not in view.initializers]
    out: dict[str, InputRule] = {}
    for name in wanted:
        np_type = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(types[name]))
        if np_type.kind in "fc":
            out[name] = InputRule(NORMAL)
        elif np_type.kind == "b":  # a boolean mask is all True; other booleans random
            out[name] = InputRule(MASK) if _integer_rule(view, name).kind == MASK else InputRule(BOOL)
        elif name.rsplit("/", 1)[-1] in (SEQLENS_K, TOTAL_LENGTH):
            out[name] = InputRule(name.rsplit("/", 1)[-1])
        else:
            out[name] = _integer_rule(view, name)
    return out


def _integer_rule(view: GraphView, name: str) -> InputRule:
    rows: list[int | None] = []
    mask = False
    seen: set[str] = set()
    stack: list[tuple[str, bool]] = [(name, False)]  # (tensor, cast to float on the way)
    while stack:
        tensor, floated = stack.pop()
        for node, idx in view.consumers.get(tensor, []):
            op = node.op_type
            contrib = node.domain == CONTRIB_DOMAIN
            if op in GATHERS and idx == 1 and not contrib:  # GatherND's index tuples span several axes: zeros
                rows.append(_table_rows(view, node.input[0], _axis(node)) if op != "GatherND" else None)
            elif contrib and (op, idx) in TABLE_LOOKUPS:
                table = TABLE_LOOKUPS[(op, idx)]
                rows.append(_table_rows(view, node.input[table], 0) if table < len(node.input) else None)
            elif (contrib and (op, idx) in MASK_INPUTS) or _masks(view, node, idx, floated):
                mask = True
            elif op in MOVES and (idx == 0 or op == "Concat") and node.output and node.output[0] not in seen:
                cast_to = node_attr(node, "to")
                outs = list(node.output) if op == "Split" else [node.output[0]]
                seen.update(outs)
                stack.extend((o, floated or cast_to in FLOAT_TYPES) for o in outs)
    if mask:
        return InputRule(MASK)
    if rows:
        known = [r for r in rows if r is not None]
        return InputRule(INDEX, min(known) if len(known) == len(rows) else None)
    return InputRule(SMALL)


def _masks(view: GraphView, node: onnx.NodeProto, idx: int, floated: bool) -> bool:
    """Whether this use reads the tensor as a mask: 1 - x, Where's condition, Not, Cast to bool,
    or a product once cast to float."""
    op = node.op_type
    if op == "Sub" and idx == 1:
        one = _constant(view, node.input[0])
        return one is not None and one.size == 1 and float(one.reshape(-1)[0]) == 1.0
    return ((op == "Where" and idx == 0) or op in ("Not", "ReduceSum") or (op == "Mul" and floated)
            or (op == "Cast" and node_attr(node, "to") == onnx.TensorProto.BOOL))


def _constant(view: GraphView, name: str) -> np.ndarray | None:
    """A small constant (initializer or Constant node), else None."""
    if name in view.initializers:
        t = view.initializers[name]
        if t.data_location == onnx.TensorProto.EXTERNAL or int(np.prod(t.dims)) > 16:
            return None
        return view.array(name)
    made = view.producer.get(name)
    if made is not None and made[0].op_type == "Constant":
        value = node_attr(made[0], "value")
        if isinstance(value, onnx.TensorProto) and int(np.prod(value.dims)) <= 16:
            return onnx.numpy_helper.to_array(value)
    return None


def _axis(gather: onnx.NodeProto) -> int:
    attr = node_attr(gather, "axis", 0)
    return attr if isinstance(attr, int) else 0


def _table_rows(view: GraphView, data: str, axis: int) -> int | None:
    """The size of axis `axis` of the table `data` an index input looks up, where the graph states it."""
    dims: list[int] | None = None
    if data in view.initializers:
        dims = list(view.initializers[data].dims)
    elif (made := view.producer.get(data)) is not None and made[0].op_type == "Constant":
        value = node_attr(made[0], "value")
        dims = list(value.dims) if isinstance(value, onnx.TensorProto) else None
    else:
        for vi in (*view.graph.value_info, *view.graph.input, *view.graph.output):
            if vi.name == data:
                dims = [d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim]
    if not dims or not -len(dims) <= axis < len(dims) or dims[axis] <= 0:
        return None
    return int(dims[axis])


def past_length(shapes: Shapes) -> int:
    """The past sequence length of a decoder with a KV cache: axis 2 of `past_key_values.*` inputs."""
    for name, shape in shapes.items():
        if name.startswith(PAST_PREFIXES) and len(shape) == 4:
            return int(shape[2])
    return 0


def sequence_length(shapes: Shapes, rules: Mapping[str, InputRule]) -> int:
    """The new tokens' count: axis 1 of `input_ids`, else of the first 2-D index input (1 when none)."""
    candidates = [n for n in shapes if n.endswith("input_ids")] + [
        n for n, r in rules.items() if r.kind == INDEX and len(shapes.get(n, ())) == 2]
    for name in candidates:
        if len(shapes.get(name, ())) >= 2:
            return int(shapes[name][1])
    return 1
