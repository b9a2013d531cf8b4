"""The one adapter from onnxprune's calibration sources to the quantizers' calibration readers.

ONNX Runtime's `quantize_static` pulls feeds through a `CalibrationDataReader` (`get_next()` until
None); Olive's data configs and ModelOpt take the same feeds. `FeedReader` serves the batches of
`onnxprune.calib.source.feed_factory` (npz / npy / folders of .npy files or images / token npz, or
random inputs with a CalibrationWarning), so every step of prune -> sparsify -> quantize reads the
same samples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader

from onnxprune.calib.source import CalibrationLike, Feed, FeedLike, feed_factory
from onnxprune.errors import OnnxPruneError


class FeedReader(CalibrationDataReader):  # type: ignore[misc]  # onnxruntime ships no type hints
    """ORT CalibrationDataReader over a factory of feed iterators; `rewind()` starts over.

    The first batch is read when the reader is made, so a source that does not match the model
    (wrong input names, shapes, dtypes) fails with onnxprune's one-line error before any quantizer runs.
    """

    def __init__(self, batches: Callable[[], Iterable[FeedLike]]) -> None:
        self._batches = batches
        self._it: Iterator[FeedLike] = iter(batches())
        first = next(self._it, None)
        if first is None:
            raise OnnxPruneError("the calibration source holds no samples")
        self._first: Feed | None = dict(first)
        self.samples = 0

    @classmethod
    def for_model(cls, model: onnx.ModelProto, calibration: CalibrationLike, *,
                  shapes: Mapping[str, tuple[int, ...]] | None = None) -> FeedReader:
        """`shapes`: concrete dims of dynamic inputs, for random inputs only."""
        return cls(feed_factory(model, calibration, shapes=shapes))

    def get_next(self) -> Feed | None:
        feed: Feed | None = self._first
        if feed is not None:
            self._first = None
        else:
            nxt = next(self._it, None)
            feed = None if nxt is None else dict(nxt)
        if feed is not None:
            self.samples += int(next(iter(feed.values())).shape[0]) if feed else 0
        return feed

    def rewind(self) -> None:
        self._it = iter(self._batches())
        self._first = None
        self.samples = 0

    def __iter__(self) -> Iterator[Feed]:
        self.rewind()
        return iter(self.get_next, None)

    def stacked(self) -> dict[str, np.ndarray]:
        """All calibration samples concatenated per input (for quantizers that take arrays)."""
        parts: dict[str, list[np.ndarray]] = {}
        for feed in self:
            for name, value in feed.items():
                parts.setdefault(name, []).append(value)
        return {name: np.concatenate(v) for name, v in parts.items()}
