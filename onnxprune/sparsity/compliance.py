"""Per-weight sparsity and N:M compliance on the TensorRT axis (see layout.py)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnx
from rich.table import Table

from onnxprune.sparsity.layout import is_nm_compliant, weight_sites
from onnxprune.sparsity.sites import read_weight


@dataclass(frozen=True)
class WeightSparsity:
    node: str
    op_type: str
    initializer: str
    shape: tuple[int, ...]
    reduction_axis: int
    sparsity: float  # fraction of exact zeros
    nm_compliant: bool  # every group of m along the reduction axis has at most n non-zeros
    pattern: str  # "2:4"

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


def nm_report(model: onnx.ModelProto, *, n: int = 2, m: int = 4) -> list[WeightSparsity]:
    """One row per Conv/Gemm/MatMul initializer weight, in graph order."""
    rows = []
    for site in weight_sites(model):
        w = read_weight(model, site.initializer)
        sparsity = 1.0 - np.count_nonzero(w) / w.size if w.size else 0.0
        rows.append(WeightSparsity(site.node, site.op_type, site.initializer, site.shape, site.reduction_axis,
                                   float(sparsity), is_nm_compliant(w, site.reduction_axis, n, m), f"{n}:{m}"))
    return rows


def total_sparsity(rows: list[WeightSparsity]) -> float:
    sizes = np.array([int(np.prod(r.shape, dtype=np.int64)) for r in rows], dtype=np.float64)
    if not sizes.sum():
        return 0.0
    return float((sizes * np.array([r.sparsity for r in rows])).sum() / sizes.sum())


def report_json(rows: list[WeightSparsity]) -> dict[str, Any]:
    return {"weights": [r.to_json() for r in rows], "total_sparsity": total_sparsity(rows),
            "nm_compliant": sum(r.nm_compliant for r in rows), "count": len(rows)}


def report_table(rows: list[WeightSparsity], *, title: str = "Weight sparsity") -> Table:
    pattern = rows[0].pattern if rows else "2:4"
    table = Table(title=title)
    table.add_column("node", overflow="fold")
    for col, justify in (("op", "left"), ("shape", "left"), ("axis", "right"), ("sparsity", "right"),
                         (f"{pattern} ok", "center")):
        table.add_column(col, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for r in rows:
        table.add_row(r.node or r.initializer, r.op_type, "x".join(map(str, r.shape)), str(r.reduction_axis),
                      f"{r.sparsity:.1%}", "[green]yes[/]" if r.nm_compliant else "[red]no[/]")
    ok = sum(r.nm_compliant for r in rows)
    table.caption = f"{len(rows)} weights, total sparsity {total_sparsity(rows):.1%}, {ok} {pattern}-compliant"
    return table
