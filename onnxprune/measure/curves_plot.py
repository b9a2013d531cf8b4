"""A PNG of the sensitivity curves (matplotlib, imported only here: `pip install 'onnxprune[plot]'`)."""

from __future__ import annotations

import io
import os

from onnxprune.errors import OnnxPruneError
from onnxprune.io.model_io import write_atomic
from onnxprune.measure.curves import DEFAULT_METRIC, SensitivityResult

MAX_LEGEND = 12


def plot_curves(result: SensitivityResult, path: str | os.PathLike[str], *, error: str = DEFAULT_METRIC) -> None:
    """One line per group: `error` (and accuracy on a second panel when measured) against the ratio."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise OnnxPruneError("--plot needs matplotlib: pip install 'onnxprune[plot]'") from None
    has_acc = result.dense_accuracy is not None
    fig, axes = plt.subplots(1, 2 if has_acc else 1, figsize=(12 if has_acc else 7, 4.5), squeeze=False)
    ranked = sorted(result.curves, key=lambda c: -max((p.error(error) for p in c.points), default=0.0))
    for i, c in enumerate(ranked):
        label = f"g{c.group} {c.sources[0][:24]} ({c.channels})" if i < MAX_LEGEND else None
        xs = [0.0, *(p.ratio for p in c.points)]
        axes[0][0].plot(xs, [0.0, *(p.error(error) for p in c.points)], marker=".", label=label)
        if has_acc:
            axes[0][1].plot(xs, [result.dense_accuracy, *(p.accuracy for p in c.points)], marker=".")
    axes[0][0].set_xlabel("ratio of the group's channels removed (others dense)")
    axes[0][0].set_ylabel({"rel_error": "relative L2 error of the outputs", "cos_error": "1 - cosine",
                             "channel_error": "relative L2 error per output channel (mean)",
                             "argmax": "lines whose argmax changes", "margin": "eroded argmax margin (per line)",
                             "threshold": "probability change near the decision"}.get(error, error))
    axes[0][0].set_title(f"{os.path.basename(result.model) or 'model'}: {result.samples} samples, {result.criterion}")
    axes[0][0].legend(fontsize=7, title=f"largest {min(MAX_LEGEND, len(ranked))} of {len(ranked)}")
    if has_acc:
        axes[0][1].set_xlabel("ratio of the group's channels removed")
        axes[0][1].set_ylabel(f"accuracy ({result.accuracy_samples} labelled samples)")
    fig.tight_layout()
    png = io.BytesIO()
    try:
        fig.savefig(png, format="png", dpi=120)
    finally:
        plt.close(fig)
    write_atomic(path, png.getvalue())
