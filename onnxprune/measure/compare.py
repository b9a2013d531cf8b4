"""Before/after comparison of two ModelStats: a rich table for people, plain dicts for JSON."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from onnxprune.measure.model_stats import ModelStats

if TYPE_CHECKING:
    from onnxprune.measure.curves import SensitivityResult


def human_count(n: float) -> str:
    """1234 -> '1.23K', 4.1e9 -> '4.10G'."""
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:g}" if isinstance(n, float) else str(n)


def human_bytes(n: float) -> str:
    """Binary units: 1536 -> '1.50 KiB'."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"


def _ratio(before: float, after: float) -> float | None:
    return after / before if before else None


def _row(metric: str, before: float, after: float, unit: str) -> dict[str, Any]:
    return {"metric": metric, "unit": unit, "before": before, "after": after,
            "delta": after - before, "ratio": _ratio(before, after)}


def changed_op_counts(before: ModelStats, after: ModelStats) -> dict[str, tuple[int, int]]:
    """Op types whose count differs: op -> (before, after), sorted by op name."""
    ops = sorted(set(before.op_counts) | set(after.op_counts))
    out = {}
    for op in ops:
        b, a = before.op_counts.get(op, 0), after.op_counts.get(op, 0)
        if a != b:
            out[op] = (b, a)
    return out


def compare_rows(before: ModelStats, after: ModelStats, *,
                 latency_ms: tuple[float, float] | None = None) -> list[dict[str, Any]]:
    """One JSON-friendly dict per compared metric (ratio = after / before, None when before is 0)."""
    rows = [
        _row("params", before.params, after.params, "count"),
        _row("MACs", before.macs, after.macs, "count"),
        _row("size", before.size_bytes, after.size_bytes, "bytes"),
        _row("nodes", before.num_nodes, after.num_nodes, "count"),
    ]
    if latency_ms is not None:
        rows.append(_row("latency", float(latency_ms[0]), float(latency_ms[1]), "ms"))
    for op, (b, a) in changed_op_counts(before, after).items():
        rows.append(_row(f"op:{op}", b, a, "count"))
    return rows


def compare_dict(before: ModelStats, after: ModelStats, *,
                 latency_ms: tuple[float, float] | None = None) -> dict[str, Any]:
    """Everything `compare_table` shows, plus both full stats, as plain JSON-ready data."""
    out: dict[str, Any] = {
        "before": before.to_dict(),
        "after": after.to_dict(),
        "rows": compare_rows(before, after, latency_ms=latency_ms),
        "macs_kept": _ratio(before.macs, after.macs),
        "params_kept": _ratio(before.params, after.params),
    }
    if latency_ms is not None:
        out["latency_ms"] = {"before": latency_ms[0], "after": latency_ms[1],
                             "speedup": latency_ms[0] / latency_ms[1] if latency_ms[1] else None}
    return out


def _fmt(value: float, unit: str) -> str:
    if unit == "bytes":
        return human_bytes(value)
    if unit == "ms":
        return f"{value:.3f} ms"
    return human_count(value) if abs(value) >= 10_000 else str(int(value))


def _fmt_delta(delta: float, unit: str) -> str:
    sign = "+" if delta > 0 else "-" if delta < 0 else ""
    return sign + _fmt(abs(delta), unit) if delta else "0"


def compare_table(before: ModelStats, after: ModelStats, *,
                  latency_ms: tuple[float, float] | None = None,
                  title: str | None = "before / after") -> Table:
    """Params, MACs, size, node count, latency (if given) and the op counts that changed."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    table.add_column("change", justify="right")
    table.add_column("kept", justify="right")
    for row in compare_rows(before, after, latency_ms=latency_ms):
        unit, ratio = row["unit"], row["ratio"]
        kept = f"{100 * ratio:.1f}%" if ratio is not None else "-"
        if row["metric"] == "latency" and row["after"]:
            kept += f" ({row['before'] / row['after']:.2f}x faster)"
        delta = row["delta"]
        style = "green" if delta < 0 else "red" if delta > 0 else ""
        table.add_row(row["metric"], _fmt(row["before"], unit), _fmt(row["after"], unit),
                      f"[{style}]{_fmt_delta(delta, unit)}[/{style}]" if style else _fmt_delta(delta, unit), kept)
    return table


def stats_table(stats: ModelStats, *, title: str | None = None, top_ops: int = 12) -> Table:
    """One model: totals, then the most frequent op types with their MACs."""
    table = Table(title=title)
    table.add_column("item")
    table.add_column("value", justify="right")
    table.add_column("MACs", justify="right")
    shapes = ", ".join(f"{k}:{'x'.join(map(str, v))}" for k, v in stats.input_shapes.items())
    table.add_row("params", human_count(stats.params), "")
    table.add_row("MACs", human_count(stats.macs), "")
    table.add_row("size", human_bytes(stats.size_bytes), "")
    table.add_row("nodes", str(stats.num_nodes), "")
    if shapes:
        table.add_row("input shapes", shapes, "")
    if stats.unresolved:
        table.add_row("MACs unknown for", f"{len(stats.unresolved)} nodes", "")
    ranked = sorted(stats.op_counts.items(), key=lambda kv: (-stats.macs_by_op.get(kv[0], 0), -kv[1], kv[0]))
    for op, n in ranked[:top_ops]:
        m = stats.macs_by_op.get(op, 0)
        table.add_row(f"op:{op}", str(n), human_count(m) if m else "")
    if len(ranked) > top_ops:
        table.add_row(f"... {len(ranked) - top_ops} more op types", "", "")
    return table


def print_compare(before: ModelStats, after: ModelStats, *,
                  latency_ms: tuple[float, float] | None = None,
                  console: Console | None = None, title: str | None = "before / after") -> None:
    (console or Console()).print(compare_table(before, after, latency_ms=latency_ms, title=title))


def sensitivity_table(result: SensitivityResult, *, error: str = "channel_error", title: str | None = None) -> Table:
    """One row per group: `error` at each ratio (and accuracy when measured), worst groups first."""
    table = Table(title=title or f"sensitivity ({error}{', accuracy' if result.dense_accuracy is not None else ''})")
    table.add_column("group", justify="right")
    table.add_column("first source")
    table.add_column("channels", justify="right")
    for r in result.ratios:
        table.add_column(f"{r:g}", justify="right")
    for c in sorted(result.curves, key=lambda c: -max((getattr(p, error) for p in c.points), default=0.0)):
        cells = []
        for p in c.points:
            cell = f"{getattr(p, error):.3g}"
            if p.accuracy is not None:
                cell += f"\n{100 * p.accuracy:.1f}%"
            cells.append(cell)
        table.add_row(str(c.group), c.sources[0] if c.sources else "", str(c.channels), *cells)
    return table
