"""The one adapter from onnxprune's calibration sources to the quantizers' calibration readers.

ONNX Runtime's `quantize_static` pulls feeds through a `CalibrationDataReader` (`get_next()` until
None); Olive's data configs and ModelOpt take the same feeds. `FeedReader` serves the batches of a
`onnxprune.calib.source.CalibrationSource` (npz / npy / folders of .npy files or images / token npz,
or random inputs with a CalibrationWarning), so every step of prune -> sparsify -> quantize reads the
same samples.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from onnxprune.calib.source import CalibrationSource
from onnxprune.errors import OnnxPruneError
from onnxprune.io.inputs import feed_rows
from onnxprune.io.types import Feed


class FeedReader(CalibrationDataReader):  # type: ignore[misc]  # onnxruntime ships no type hints
    """ORT CalibrationDataReader over a calibration source; `rewind()` starts over.

    The first batch is read when the reader is made, so a source that does not match the model
    (wrong input names, shapes, dtypes) fails with onnxprune's one-line error before any quantizer runs.
    """

    def __init__(self, source: CalibrationSource) -> None:
        self.source = source
        self._it: Iterator[Feed] = source.batches()
        first = next(self._it, None)
        if first is None:
            raise OnnxPruneError(f"the calibration source ({source.describe()}) holds no samples")
        self._first: Feed | None = first
        self.samples = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        feed: Feed | None = self._first
        if feed is not None:
            self._first = None
        else:
            feed = next(self._it, None)
        if feed is None:
            return None
        self.samples += feed_rows(feed) if feed else 0
        return dict(feed)

    def rewind(self) -> None:
        self._it = self.source.batches()
        self._first = None
        self.samples = 0

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        self.rewind()
        return iter(self.get_next, None)
