"""What `--for tensorrt` means to `prune` and `sparsify`.

TensorRT runs Conv/Gemm/MatMul on tensor cores. Their kernels want:

- channel counts that are multiples of 8 for FP16 (16 bytes of FP16 per vector load; anything else is
  padded up, so pruning 64 -> 60 channels buys nothing and may cost a reformat). INT8 kernels want
  multiples of 32 (16 at the least). `round_to` is the multiple structured pruning rounds kept
  channels to.
- for sparse tensor cores (Ampere and later, including Jetson Orin): the 2:4 pattern, i.e. at most 2
  non-zeros in every group of 4 consecutive weights along the input-channel (reduction) axis. See
  `onnxprune.sparsity.layout` for the axis of each op.

The profile assumes FP16 unless asked for INT8; it does not change the model's precision itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from onnxprune.errors import OnnxPruneError

FP16_CHANNEL_MULTIPLE = 8
INT8_CHANNEL_MULTIPLE = 32


@dataclass(frozen=True)
class TensorRTProfile:
    round_to: int = FP16_CHANNEL_MULTIPLE
    n: int = 2
    m: int = 4
    precision: str = "fp16"  # "fp16" or "int8": the precision the channel multiple is chosen for

    @property
    def pattern(self) -> str:
        return f"{self.n}:{self.m}"


def tensorrt_profile(*, precision: str = "fp16", round_to: int | None = None) -> TensorRTProfile:
    """The profile for a precision; `round_to` overrides the channel multiple."""
    if precision not in ("fp16", "int8"):
        raise OnnxPruneError(f"--for tensorrt: precision must be fp16 or int8, not {precision!r}")
    default = FP16_CHANNEL_MULTIPLE if precision == "fp16" else INT8_CHANNEL_MULTIPLE
    multiple = default if round_to is None else round_to
    if multiple < 1:
        raise OnnxPruneError(f"--round-to must be a positive integer, not {multiple}")
    return TensorRTProfile(round_to=multiple, precision=precision)


TENSORRT = TensorRTProfile()
