"""report.py: before/after rows, JSON dicts and the rich table."""

from __future__ import annotations

import io
import json
from types import MappingProxyType

from rich.console import Console

from onnxprune.measure.compare import (
    changed_op_counts,
    compare_dict,
    compare_rows,
    compare_table,
    human_bytes,
    human_count,
    print_compare,
)
from onnxprune.measure.model_stats import ModelStats


def _stats(params: int, macs: int, size: int, ops: dict[str, int]) -> ModelStats:
    return ModelStats(params=params, param_bytes=4 * params, macs=macs, size_bytes=size,
                      op_counts=MappingProxyType(ops), node_macs={"conv": macs}, macs_by_op={"Conv": macs},
                      input_shapes={"x": (1, 3, 8, 8)})


BEFORE = _stats(1_000_000, 4_000_000_000, 4_000_000, {"Conv": 10, "Relu": 10, "Add": 2})
AFTER = _stats(600_000, 2_000_000_000, 2_400_000, {"Conv": 10, "Relu": 9, "Concat": 1})


def test_rows_and_changed_ops() -> None:
    assert changed_op_counts(BEFORE, AFTER) == {"Add": (2, 0), "Concat": (0, 1), "Relu": (10, 9)}
    rows = {r["metric"]: r for r in compare_rows(BEFORE, AFTER, latency_ms=(10.0, 5.0))}
    assert rows["MACs"]["ratio"] == 0.5
    assert rows["params"]["delta"] == -400_000
    assert rows["latency"]["after"] == 5.0
    assert "op:Conv" not in rows and rows["op:Relu"]["after"] == 9


def test_compare_dict_is_json_ready() -> None:
    d = compare_dict(BEFORE, AFTER, latency_ms=(10.0, 5.0))
    json.dumps(d)
    assert d["macs_kept"] == 0.5 and d["latency_ms"]["speedup"] == 2.0
    assert d["before"]["input_shapes"] == {"x": [1, 3, 8, 8]}


def test_table_renders() -> None:
    buf = io.StringIO()
    console = Console(file=buf, width=120, color_system=None)
    print_compare(BEFORE, AFTER, latency_ms=(10.0, 5.0), console=console)
    text = buf.getvalue()
    for word in ("params", "MACs", "size", "latency", "op:Relu", "50.0%", "2.00x faster", "4.00G"):
        assert word in text
    assert compare_table(BEFORE, BEFORE).row_count == 4  # nothing changed: no op rows, no latency


def test_human_units() -> None:
    assert human_count(4_100_000_000) == "4.10G"
    assert human_count(999) == "999"
    assert human_bytes(1536) == "1.50 KiB"
    assert human_bytes(10) == "10 B"


def _curves(ratios: tuple[float, ...]) -> object:
    from onnxprune.measure.curves import CurvePoint, GroupCurve, SensitivityResult

    name = "/model.22/cv3.2/cv3.2.1/conv/Conv_output_of_a_long_export_path"
    points = [CurvePoint(r, int(64 * r), 0.123456 * (k + 1), 0.5, None, 0.5, 0.5) for k, r in enumerate(ratios)]
    return SensitivityResult("m.onnx", "l2", 1, list(ratios), 16, 1000, 100, [GroupCurve(0, [name], 64, points)])


def _rendered(obj: object, width: int) -> list[str]:
    from onnxprune.measure.compare import sensitivity_table

    console = Console(width=width, record=True, file=io.StringIO())
    console.print(sensitivity_table(obj, error="rel_error", width=width))  # type: ignore[arg-type]
    return console.export_text().splitlines()


def test_sensitivity_table_stays_readable_at_80_columns() -> None:
    """Numbers are never cut: the source's middle gives way, and with many ratios groups become lines."""
    for ratios in ((0.2, 0.4, 0.6), (0.1, 0.2, 0.3, 0.4, 0.5, 0.6), tuple(k / 10 for k in range(1, 10))):
        lines = _rendered(_curves(ratios), 80)
        text = "\n".join(lines)
        assert max(len(line) for line in lines) <= 80, text
        for k in range(len(ratios)):
            assert f"{0.123456 * (k + 1):.3g}" in text, text  # every number in full
        assert "/model.22/" in text and "export_path" in text  # both ends of the path
    wide = "\n".join(_rendered(_curves((0.1, 0.2, 0.3, 0.4, 0.5, 0.6)), 200))
    assert "/model.22/cv3.2/cv3.2.1/conv/Conv_output_of_a_long_export_path" in wide  # room: the whole name
