"""Fetch three real pretrained ONNX exports from PyPI wheels into models/real/ (run by `make models`).

* ``models/real/yolov8n_320n.onnx``: the YOLOv8n detector ``nudenet/320n.onnx`` from nudenet 3.4.2
  (input ``images``: batch x 3 x H x W, use 1x3x320x320).
* ``models/real/ppocrv4_det.onnx``: the PP-OCRv4 text detector
  ``rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx`` from rapidocr-onnxruntime 1.4.4
  (input ``x``: dynamic N x 3 x H x W, H and W multiples of 32).
* ``models/real/ppocrv4_rec.onnx``: the PP-OCRv4 text recogniser
  ``rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx`` from the same wheel (input ``x``:
  N x 3 x 48 x W; output N x W/8 x 6625 CTC probabilities; its character list is the model's
  ``character`` metadata).

The wheels are fetched with ``pip download --no-deps`` (no torch needed) and the models are read
straight out of the wheel zips. Files are written atomically, then ``models/real/.fetched`` is
touched. Re-running is cheap: nothing is downloaded when every file is already present.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

REAL_DIR = Path(__file__).resolve().parent / "real"
STAMP = REAL_DIR / ".fetched"


@dataclass(frozen=True)
class RealModel:
    requirement: str
    wheel_prefix: str
    member: str
    dest: str


MODELS: tuple[RealModel, ...] = (
    RealModel("nudenet==3.4.2", "nudenet-3.4.2-", "nudenet/320n.onnx", "yolov8n_320n.onnx"),
    RealModel(
        "rapidocr-onnxruntime==1.4.4",
        "rapidocr_onnxruntime-1.4.4-",
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        "ppocrv4_det.onnx",
    ),
    RealModel(
        "rapidocr-onnxruntime==1.4.4",
        "rapidocr_onnxruntime-1.4.4-",
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
        "ppocrv4_rec.onnx",
    ),
)


class FetchError(RuntimeError):
    pass


def download_wheels(dest: Path, models: tuple[RealModel, ...]) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest)]
    cmd += list(dict.fromkeys(m.requirement for m in models))
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR")] or lines or ["no output"]
        raise FetchError(f"pip download of {', '.join(m.requirement for m in models)} failed: {errors[-1]}")


def find_wheel(folder: Path, prefix: str) -> Path:
    wheels = sorted(folder.glob(f"{prefix}*.whl"))
    if not wheels:
        raise FetchError(f"no wheel matching {prefix}*.whl was downloaded")
    return wheels[0]


def extract_atomic(wheel: Path, member: str, dest: Path) -> None:
    """Copy one member of the wheel zip to ``dest`` via a temp file in the same folder + os.replace."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(member)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise FetchError(f"cannot read {member} from {wheel.name}: {exc}") from exc
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fetch(real_dir: Path = REAL_DIR) -> list[Path]:
    missing = [m for m in MODELS if not (real_dir / m.dest).is_file()]
    if missing:
        with tempfile.TemporaryDirectory(prefix="onnxprune-wheels-") as tmp:
            download_wheels(Path(tmp), tuple(missing))
            for m in missing:
                extract_atomic(find_wheel(Path(tmp), m.wheel_prefix), m.member, real_dir / m.dest)
    (real_dir / STAMP.name).touch()
    return [real_dir / m.dest for m in MODELS]


def main() -> int:
    try:
        paths = fetch()
    except (FetchError, OSError) as exc:
        print(f"fetch_real: error: {exc}", file=sys.stderr)
        return 1
    for p in paths:
        print(f"fetch_real: {p.relative_to(REAL_DIR.parent.parent)} ({p.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
