"""`onnxprune validate ORIGINAL PRUNED`: compare outputs (and accuracy) of a pruned model with its original."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from onnxprune.errors import OnnxPruneError
from onnxprune.io.inputs import check_shapes, parse_shapes
from onnxprune.io.model_io import check_paths, load_model, write_json
from onnxprune.measure.validate import (
    DEFAULT_SAMPLES,
    LabelReport,
    ValidationReport,
    check_thresholds,
    load_feeds,
    load_labels,
    threshold_failures,
    validate,
)

PER_CLASS_ROWS = 10


def _num(x: float | None, fmt: str = ".6g") -> str:
    return "N/A" if x is None else format(x, fmt)


def _outputs_table(report: ValidationReport) -> Table:
    table = Table(title=f"outputs ({report.num_samples} samples in {report.num_batches} batches, {report.source})")
    for col in ("output", "shape", "max abs err", "max rel err", "cosine", "top-1 agree"):
        table.add_column(col, justify="left" if col == "output" else "right")
    for o in report.outputs:
        top1 = "N/A" if o.top1_agreement is None else f"{100 * o.top1_agreement:.2f}%"
        table.add_row(o.name, "x".join(map(str, o.shape)), _num(o.max_abs_error, ".3e"),
                      _num(o.max_rel_error, ".3e"), _num(o.cosine, ".6f"), top1)
    return table


def _label_tables(lab: LabelReport) -> list[Table]:
    summary = Table(title=f"labels on output {lab.output} ({lab.num_samples} samples, {lab.num_classes} classes)")
    for col in ("", "original", "pruned"):
        summary.add_column(col, justify="right" if col else "left")
    summary.add_row("accuracy", f"{100 * lab.original.accuracy:.2f}%", f"{100 * lab.pruned.accuracy:.2f}%")
    summary.add_row("accuracy drop", "", f"{lab.acc_drop:+.2f} points")
    summary.add_row("flips (right -> wrong)", "", str(lab.flips))
    summary.add_row("fixes (wrong -> right)", "", str(lab.fixes))

    def change(c: int) -> float:
        a, b = lab.original.recall[c], lab.pruned.recall[c]
        return abs((b or 0.0) - (a or 0.0)) + abs((lab.pruned.fpr[c] or 0.0) - (lab.original.fpr[c] or 0.0))

    classes = sorted(range(lab.num_classes), key=lambda c: (-change(c), c))[:PER_CLASS_ROWS]
    per_class = Table(title="per class (largest changes first)" if lab.num_classes > PER_CLASS_ROWS else "per class")
    for col in ("class", "recall orig", "recall pruned", "FPR orig", "FPR pruned"):
        per_class.add_column(col, justify="right")
    for c in sorted(classes) if lab.num_classes <= PER_CLASS_ROWS else classes:
        per_class.add_row(str(c), _num(lab.original.recall[c], ".3f"), _num(lab.pruned.recall[c], ".3f"),
                          _num(lab.original.fpr[c], ".3f"), _num(lab.pruned.fpr[c], ".3f"))
    confused = Table(title="most confused (true -> predicted)")
    confused.add_column("original")
    confused.add_column("pruned")
    left = [f"{t} -> {p}: {n}" for t, p, n in lab.original.confused]
    right = [f"{t} -> {p}: {n}" for t, p, n in lab.pruned.confused]
    if not left and not right:
        confused.add_row("none", "none")
    for i in range(max(len(left), len(right))):
        confused.add_row(left[i] if i < len(left) else "", right[i] if i < len(right) else "")
    return [summary, per_class, confused]


@click.command("validate")
@click.argument("original")
@click.argument("pruned")
@click.option("--data", help=".npz keyed by input name (labels under key 'y'), or one array for a single-input model.")
@click.option("--labels", help="Class ids (.npy, or key 'y' of a .npz), one per data row; adds accuracy metrics.")
@click.option("--shapes", multiple=True, help="Dynamic input shape for random inputs, NAME:1x3x224x224 (repeatable).")
@click.option("--samples", type=int, default=DEFAULT_SAMPLES, show_default=True,
              help="Random batches to compare when no --data is given.")
@click.option("--batch", type=int, default=None,
              help="Rows per batch: random inputs (default 1) or --data on a dynamic-batch model (default 32).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random inputs.")
@click.option("--label-output", default=None, help="Output scored against --labels (default: first [N, C] output).")
@click.option("--min-cosine", type=float, default=None, help="Fail (exit 5) if any output's cosine is below this.")
@click.option("--max-acc-drop", type=float, default=None,
              help="Fail (exit 5) if accuracy drops by more than this many percentage points (needs labels).")
@click.option("--json", "json_out", default=None, help="Write the full report as JSON to this file.")
def command(original: str, pruned: str, data: str | None, labels: str | None, shapes: tuple[str, ...],
            samples: int, batch: int | None, seed: int, label_output: str | None, min_cosine: float | None,
            max_acc_drop: float | None, json_out: str | None) -> None:
    """Compare PRUNED with ORIGINAL on the same inputs (ONNX Runtime, graph optimisation off)."""
    if batch is not None and batch < 1:
        raise OnnxPruneError("--batch must be at least 1")
    check_paths(models={"ORIGINAL": original, "PRUNED": pruned}, inputs={"--data": data, "--labels": labels},
                outputs={"--json": json_out})
    shape_map = parse_shapes(shapes)
    ref_model, cand_model = load_model(original), load_model(pruned)
    check_shapes(ref_model, shape_map)
    feeds, y = load_feeds(data, ref_model, batch=batch) if data else (None, None)
    if labels:
        y = load_labels(labels)
    report = validate(ref_model, cand_model, feeds=feeds, labels=y, shapes=shape_map, samples=samples,
                      batch=batch, seed=seed, label_output=label_output, source=data or "random")
    failures = threshold_failures(report, min_cosine=min_cosine, max_acc_drop=max_acc_drop)
    console = Console()
    console.print(_outputs_table(report))
    if report.labels is not None:
        for table in _label_tables(report.labels):
            console.print(table)
    if json_out:
        doc = {"original": original, "pruned": pruned, **report.to_dict(),
               "thresholds": {"min_cosine": min_cosine, "max_acc_drop": max_acc_drop},
               "passed": not failures}
        write_json(json_out, doc)
    if min_cosine is not None or max_acc_drop is not None:
        if not failures:
            console.print("[green]PASS[/green]: within thresholds")
        check_thresholds(report, min_cosine=min_cosine, max_acc_drop=max_acc_drop)
