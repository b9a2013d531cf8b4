"""One preflight finding: what is wrong (or worth knowing) about one node, and how bad it is."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any


class Severity(str, Enum):
    """ERROR: the ONNX parser or the builder will reject it. WARNING: it may fail or lose speed.
    INFO: worth knowing, nothing to fix."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True)
class Finding:
    severity: Severity
    check: str  # short machine-readable id, e.g. "unsupported-op", "resize-mode", "not-2:4"
    node: str  # node name ("" for model-level findings)
    op_type: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["severity"] = self.severity.value
        return d
