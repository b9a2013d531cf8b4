"""Before/after comparison of two ModelStats: a rich table for people, plain dicts for JSON."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

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


def print_compare(before: ModelStats, after: ModelStats, *,
                  latency_ms: tuple[float, float] | None = None,
                  console: Console | None = None, title: str | None = "before / after") -> None:
    (console or Console()).print(compare_table(before, after, latency_ms=latency_ms, title=title))


def middle(text: str, width: int) -> str:
    """`text` cut to `width` characters in its middle, which paths can best spare: "/layer2/…/Conv"."""
    if len(text) <= width:
        return text
    if width <= 1:
        return text[:width]
    head = (width - 1) // 2
    return text[:head] + "…" + text[len(text) - (width - 1 - head):]


SOURCE_MIN = 16  # below this many characters for the source name, a list reads better than a table


def sensitivity_table(result: SensitivityResult, *, error: str = "channel_error", title: str | None = None,
                      width: int = 80) -> RenderableType:
    """One row per group: `error` at each ratio (and accuracy when measured), worst groups first.

    Numbers are never cut: the source name gives way (its middle abbreviated) to fit `width`
    columns, and where even that leaves it too little room, each group becomes a line of its own."""
    curves = sorted(result.curves, key=lambda c: -max((p.error(error) for p in c.points), default=0.0))
    rows = []
    for c in curves:
        cells = []
        for p in c.points:
            cell = f"{p.error(error):.3g}"
            if p.accuracy is not None:
                cell += f" {100 * p.accuracy:.1f}%"
            cells.append(cell)
        rows.append((str(c.group), c.sources[0] if c.sources else "", str(c.channels), cells))
    head = ["group", "first source", "channels", *(f"{r:g}" for r in result.ratios)]
    fixed = [max([len(head[i]), *(len(r[i]) for r in rows)]) for i in (0, 2)]
    numbers = [max([len(head[3 + k]), *(len(r[3][k]) for r in rows if k < len(r[3]))]) for k in range(len(result.ratios))]
    # a rich table spends 3 characters per column (borders and padding) plus 1
    room = width - sum(fixed) - sum(numbers) - 3 * (len(head)) - 1
    name = title or f"sensitivity ({error}{', accuracy' if result.dense_accuracy is not None else ''})"
    if room < SOURCE_MIN:
        lines = [Text(name, style="italic")]
        for gid, source, channels, cells in rows:
            lines.append(Text(f"group {gid} ({channels} channels) {middle(source, width - 24)}"))
            line = "   "
            for r, v in zip(result.ratios, cells, strict=False):
                pair = f" {r:g}: {v} "
                if len(line) + len(pair) > width and line.strip():  # wrap between pairs, never inside one
                    lines.append(Text(line.rstrip()))
                    line = "   "
                line += pair
            lines.append(Text(line.rstrip()))
        return Group(*lines)
    table = Table(title=name)
    table.add_column("group", justify="right", no_wrap=True)
    table.add_column("first source", no_wrap=True, max_width=room)
    table.add_column("channels", justify="right", no_wrap=True)
    for r in result.ratios:
        table.add_column(f"{r:g}", justify="right", no_wrap=True)
    for gid, source, channels, cells in rows:
        table.add_row(gid, middle(source, room), channels, *cells)
    return table
