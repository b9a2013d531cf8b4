"""Real photographs from scikit-image (`skimage.data`, the files bundled with the wheel) for the
fidelity runs on the two real models: evaluation sets, disjoint calibration sets, preprocessing.

YOLOv8n (nudenet 320n): RGB / 255, letterbox to 320x320 with grey (114) padding.
PP-OCRv4 det: BGR (rapidocr converts every image to BGR, as PaddleOCR does), / 255, then
(x - mean) / std with the ImageNet mean/std of PaddleOCR's det config; resized as rapidocr 1.4.4's
DetPreProcess does (limit_type "min", limit_side_len 736: the shorter side up to 736, then H and W
rounded to multiples of 32). At the images' own sizes the detector misses the large glyphs of
`text()`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from PIL import Image

YOLO_SIZE = 320
OCR_MIN_SIDE = 736
OCR_CALIB_SIZE = (448, 448)
OCR_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
OCR_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

# Colour images bundled with scikit-image (no download). Which of them calibrate and which
# evaluate is decided per model below; the two sets never share an image.
YOLO_EVAL = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "colorwheel", "logo")
YOLO_CALIB = ("hubble_deep_field", "immunohistochemistry", "retina", "camera", "clock", "coins", "lfw")
OCR_EVAL = ("text", "page", "logo", "rocket", "coffee", "astronaut", "chelsea", "motorcycle_left")
OCR_CALIB = ("camera", "clock", "coins", "hubble_deep_field", "immunohistochemistry", "retina",
             "colorwheel", "lfw")


def to_rgb(a: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 from grey, RGB, RGBA (composited on white) or float [0, 1] images."""
    if a.dtype != np.uint8:
        a = (np.clip(a.astype(np.float64), 0, 1) * 255).round().astype(np.uint8)
    if a.ndim == 2:
        return np.repeat(a[:, :, None], 3, axis=2)
    if a.shape[2] == 4:
        alpha = a[:, :, 3:].astype(np.float32) / 255
        return (a[:, :, :3] * alpha + 255 * (1 - alpha)).round().astype(np.uint8)
    return a[:, :, :3]


def lfw_faces() -> np.ndarray:
    """The 200 faces of the LFW subset (25x25 grey, [0, 1])."""
    import skimage.data as data

    return data.lfw_subset()


def lfw_mosaic(faces: np.ndarray, start: int, n: int) -> np.ndarray:
    """n x n faces tiled into one image, starting at face `start` (wrapping around)."""
    idx = [(start + i) % len(faces) for i in range(n * n)]
    rows = [np.concatenate([faces[j] for j in idx[r * n:(r + 1) * n]], axis=1) for r in range(n)]
    return to_rgb(np.concatenate(rows, axis=0))


# Photographs bundled with other installed packages (no download): matplotlib's portrait of Grace
# Hopper, scikit-learn's two sample photographs.
OTHER_PHOTOS = ("grace_hopper", "china", "flower")


def _other_photo(name: str) -> np.ndarray:
    if name == "grace_hopper":
        from matplotlib import cbook

        with cbook.get_sample_data("grace_hopper.jpg") as f:
            return to_rgb(np.asarray(Image.open(f).convert("RGB")))
    from sklearn.datasets import load_sample_image

    return to_rgb(load_sample_image(f"{name}.jpg"))


def load(name: str) -> np.ndarray:
    """A bundled skimage image (or one of OTHER_PHOTOS) as uint8 RGB."""
    import skimage.data as data

    if name in OTHER_PHOTOS:
        return _other_photo(name)
    if name == "motorcycle_left":
        return to_rgb(data.stereo_motorcycle()[0])
    return to_rgb(getattr(data, name)())


def resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    return np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))


def random_view(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random crop (40-100 % of each side), maybe flipped, at its own scale."""
    h, w = img.shape[:2]
    ch, cw = (max(16, int(s * rng.uniform(0.4, 1.0))) for s in (h, w))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    view = img[y:y + ch, x:x + cw]
    if rng.random() < 0.5:
        view = view[:, ::-1]
    if rng.random() < 0.3:
        view = view[::-1]
    return np.ascontiguousarray(view)


def lfw_views(rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Random mosaics (2x2 to 5x5) of LFW faces, maybe mirrored."""
    faces = lfw_faces()
    while True:
        view = lfw_mosaic(faces, int(rng.integers(0, len(faces))), int(rng.integers(2, 6)))
        yield np.ascontiguousarray(view[:, ::-1]) if rng.random() < 0.5 else view


def calibration_views(names: tuple[str, ...], count: int, seed: int = 0) -> list[np.ndarray]:
    """`count` crops/flips of the named images, round robin (`lfw`: mosaics of LFW faces)."""
    rng = np.random.default_rng(seed)
    sources = {n: load(n) for n in names if n != "lfw"}
    faces = lfw_views(rng) if "lfw" in names else None
    out: list[np.ndarray] = []
    for i in range(count):
        name = names[i % len(names)]
        out.append(next(faces) if name == "lfw" and faces is not None else random_view(sources[name], rng))
    return out


def letterbox(img: np.ndarray, size: int = YOLO_SIZE) -> np.ndarray:
    h, w = img.shape[:2]
    r = size / max(h, w)
    nh, nw = max(1, round(h * r)), max(1, round(w * r))
    out = np.full((size, size, 3), 114, dtype=np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top:top + nh, left:left + nw] = resize(img, nh, nw)
    return out


def yolo_input(img: np.ndarray) -> np.ndarray:
    """[1, 3, 320, 320] float32: letterboxed RGB / 255."""
    return (letterbox(img).transpose(2, 0, 1)[None] / np.float32(255)).astype(np.float32)


def ocr_size(h: int, w: int, min_side: int = OCR_MIN_SIDE) -> tuple[int, int]:
    """rapidocr's det resize: the shorter side up to `min_side` (never down), multiples of 32."""
    r = max(1.0, min_side / min(h, w))
    return max(32, round(int(h * r) / 32) * 32), max(32, round(int(w * r) / 32) * 32)


def ocr_input(img: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """[1, 3, H, W] float32: BGR / 255, ImageNet mean/std, H and W multiples of 32."""
    h, w = size or ocr_size(*img.shape[:2])
    x = resize(img, h, w)[:, :, ::-1].astype(np.float32) / 255
    return (((x - OCR_MEAN) / OCR_STD).transpose(2, 0, 1)[None]).astype(np.float32)


def eval_views(img: np.ndarray, crop: float = 0.6) -> list[np.ndarray]:
    """The image, its mirror, and its four corner crops and centre crop at `crop` of each side."""
    h, w = img.shape[:2]
    ch, cw = int(h * crop), int(w * crop)
    corners = [(0, 0), (0, w - cw), (h - ch, 0), (h - ch, w - cw), ((h - ch) // 2, (w - cw) // 2)]
    views = [img, img[:, ::-1]] + [img[y:y + ch, x:x + cw] for y, x in corners]
    return [np.ascontiguousarray(v) for v in views]


# YOLOv8n's wider evaluation set (benchmarks/recipes.py): the evaluation photographs and OTHER_PHOTOS,
# none of them a calibration image (YOLO_CALIB).
YOLO_EVAL_WIDE = YOLO_EVAL + OTHER_PHOTOS
assert not set(YOLO_EVAL_WIDE) & set(YOLO_CALIB)


def augmented_view(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random_view shrunk to 50-100 % of its size on a grey (114) frame, brightness x 0.7-1.3 and
    contrast x 0.7-1.3 about the mean."""
    view = random_view(img, rng)
    h, w = view.shape[:2]
    s = rng.uniform(0.5, 1.0)
    nh, nw = max(8, int(h * s)), max(8, int(w * s))
    frame = np.full_like(view, 114)
    y, x = int(rng.integers(0, h - nh + 1)), int(rng.integers(0, w - nw + 1))
    frame[y:y + nh, x:x + nw] = resize(view, nh, nw)
    f = frame.astype(np.float32)
    f = (f - f.mean()) * rng.uniform(0.7, 1.3) + f.mean() * rng.uniform(0.7, 1.3)
    return np.clip(f, 0, 255).round().astype(np.uint8)


def wide_eval_views(names: tuple[str, ...], per_image: int, seed: int = 0) -> list[np.ndarray]:
    """Every named image's eval_views and `per_image` augmented views of it."""
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    for name in names:
        img = load(name)
        out += eval_views(img) + [augmented_view(img, rng) for _ in range(per_image)]
    return out


def mirror_views(img: np.ndarray) -> list[np.ndarray]:
    return [img, np.ascontiguousarray(img[:, ::-1])]


def eval_inputs(names: tuple[str, ...], prep: Callable[[np.ndarray], np.ndarray],
                views: Callable[[np.ndarray], list[np.ndarray]] = eval_views) -> list[np.ndarray]:
    """The evaluation views of every named image, preprocessed."""
    return [prep(v) for n in names for v in views(load(n))]


def calib_array(views: list[np.ndarray], prep: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    return np.concatenate([prep(v) for v in views], axis=0)


REC_SHAPE = (48, 320)  # PP-OCRv4 rec: rapidocr 1.4.4's rec_img_shape [3, 48, 320]


def rec_input(img: np.ndarray, shape: tuple[int, int] = REC_SHAPE) -> np.ndarray:
    """[1, 3, 48, 320] float32 as rapidocr's TextRecognizer feeds a text line: BGR, resized to height 48
    keeping the aspect ratio (width at most 320), (x / 255 - 0.5) / 0.5, zero-padded on the right."""
    h, w = img.shape[:2]
    th, tw = shape
    nw = min(tw, max(1, int(np.ceil(th * w / h))))
    x = resize(img, th, nw)[:, :, ::-1].astype(np.float32) / 255
    out = np.zeros((3, th, tw), dtype=np.float32)
    out[:, :, :nw] = ((x - 0.5) / 0.5).transpose(2, 0, 1)
    return out[None]


def line_views(names: tuple[str, ...], count: int, seed: int = 0) -> list[np.ndarray]:
    """`count` wide strips (10-30 % of the height, 40-100 % of the width) of the named images, like the
    text lines a recogniser reads, round robin."""
    rng = np.random.default_rng(seed)
    sources = [load(n) for n in names if n != "lfw"]
    out: list[np.ndarray] = []
    for i in range(count):
        img = sources[i % len(sources)]
        h, w = img.shape[:2]
        sh, sw = max(8, int(h * rng.uniform(0.1, 0.3))), max(16, int(w * rng.uniform(0.4, 1.0)))
        y, x = int(rng.integers(0, h - sh + 1)), int(rng.integers(0, w - sw + 1))
        out.append(np.ascontiguousarray(img[y:y + sh, x:x + sw]))
    return out
