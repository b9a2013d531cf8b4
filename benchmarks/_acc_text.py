"""Rendered text lines with ground truth for PP-OCRv4 rec, its CTC decode, and OCR accuracy.

Lines: words, numbers (prices, dates, times, codes) and mixed strings of Latin letters, digits and
ASCII punctuation, plus a few CJK lines when a CJK font is installed (DejaVu has no CJK glyphs; Debian's
fonts-dejavu-core is all CI has, so without one the CJK lines are left out and `TextSet.cjk_font` is
None). Each line is drawn in one of FONTS at one of SIZES, dark on a light background of varying
contrast, then lightly blurred and noised; everything follows from one seed. The calibration split and
the evaluation split share no string.

Reading: rapidocr's preprocessing (`_acc_images.rec_input`, height 48, the width the line needs, at
least 320, a multiple of 8), greedy CTC decode with the model's `character` metadata (blank = class 0,
" " appended as the last class, as rapidocr does). Exact-line accuracy: the share of lines read exactly
(leading and trailing spaces ignored); character accuracy: 1 - (edit distance summed over the lines) /
(characters of the ground truth summed over the lines).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from _acc_common import outputs
from _acc_images import rec_input
from PIL import Image, ImageDraw, ImageFilter, ImageFont

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")  # Debian's fonts-dejavu-core
FONTS = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSans-Bold.ttf",
         "DejaVuSansCondensed.ttf", "DejaVuSerif-Bold.ttf")
SIZES = (14, 20, 28, 40)   # font size in pixels, before the recogniser's resize to height 48
CJK_GLOBS = ("**/*CJK*.tt[fc]", "**/*CJK*.otf", "**/wqy*.tt[fc]", "**/DroidSansFallback*.ttf", "**/NotoSansSC*")
CJK = "中国人大小上下年月日时分天工作学生文字数据东西南北出入口电话号码价格公司名称地址"
WORDS = ("the", "and", "data", "model", "prune", "open", "close", "north", "river", "garden", "station",
         "coffee", "market", "street", "window", "yellow", "orange", "silver", "engine", "signal", "ticket",
         "number", "total", "price", "office", "exit", "entrance", "platform", "hotel", "museum", "library",
         "bridge", "harbour", "school", "summer", "winter", "monday", "friday", "invoice", "account",
         "quality", "service", "delivery", "express", "limited", "central", "public", "parking", "daily",
         "fresh", "bakery", "pharmacy", "airport", "terminal", "gate", "floor", "room", "order", "receipt")
KINDS = ("words", "number", "mixed")


@dataclass(frozen=True)
class TextLine:
    text: str
    kind: str          # words | number | mixed | cjk
    font: str          # file name
    size: int          # pixels
    image: np.ndarray  # uint8 H x W x 3, RGB


@dataclass(frozen=True)
class TextSet:
    eval: list[TextLine]
    calib: list[TextLine]
    cjk_font: Path | None


def dejavu_fonts() -> list[Path]:
    """FONTS in FONT_DIR; a clear error when the package is missing (never a silent font fallback)."""
    paths = [FONT_DIR / f for f in FONTS]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise SystemExit(f"fonts missing in {FONT_DIR}: {', '.join(missing)} (apt-get install fonts-dejavu-core)")
    return paths


def cjk_font(root: Path = Path("/usr/share/fonts")) -> Path | None:
    """The first installed font with CJK glyphs, or None."""
    for pattern in CJK_GLOBS:
        hit = next(iter(sorted(root.glob(pattern))), None)
        if hit is not None:
            return hit
    return None


def _word(rng: np.random.Generator) -> str:
    w = str(rng.choice(WORDS))
    style = rng.integers(0, 3)
    return w.upper() if style == 0 else w.capitalize() if style == 1 else w


def _number(rng: np.random.Generator) -> str:
    k = int(rng.integers(0, 7))
    r = rng.integers
    return (str(r(0, 10 ** int(r(1, 7)))), f"{r(0, 1000)}.{r(0, 100):02d}", f"${r(1, 500)}.{r(0, 100):02d}",
            f"{r(1990, 2031)}-{r(1, 13):02d}-{r(1, 29):02d}", f"{r(0, 24):02d}:{r(0, 60):02d}",
            f"{r(0, 101)}%", f"+{r(1, 99)} {r(100, 1000)} {r(1000, 10000)}")[k]


def _mixed(rng: np.random.Generator) -> str:
    k = int(rng.integers(0, 6))
    r = rng.integers
    letters = "ABCDEFGHJKLMNPRSTUVWXYZ"
    code = "".join(str(rng.choice(list(letters + "0123456789"))) for _ in range(int(r(3, 7))))
    return (f"{_word(rng)} {r(1, 999)}{rng.choice(list(letters))}", f"{code}-{r(10, 99)}",
            f"v{r(0, 10)}.{r(0, 20)}.{r(0, 50)}", f"No. {r(1, 9999)}", f"{_word(rng)} #{r(100, 99999)}",
            f"{r(1, 99)} x {_word(rng)}")[k]


def _cjk(rng: np.random.Generator) -> str:
    s = "".join(str(c) for c in rng.choice(list(CJK), size=int(rng.integers(2, 7))))
    return s + (str(rng.integers(1, 100)) if rng.random() < 0.3 else "")


def _string(kind: str, rng: np.random.Generator) -> str:
    if kind == "words":
        return " ".join(_word(rng) for _ in range(int(rng.integers(1, 4))))
    return {"number": _number, "mixed": _mixed, "cjk": _cjk}[kind](rng)


def render(text: str, font: Path, size: int, rng: np.random.Generator) -> np.ndarray:
    """One line, dark on light with a margin, contrast / blur / noise varied by `rng`."""
    face = ImageFont.truetype(str(font), size)
    left, top, right, bottom = face.getbbox(text)
    pad_x, pad_y = (max(2, int(size * rng.uniform(a, b))) for a, b in ((0.2, 0.6), (0.15, 0.4)))
    w, h = right - left + 2 * pad_x, max(bottom - top, size) + 2 * pad_y
    bg = rng.integers(170, 256, size=3)
    fg = rng.integers(0, 90) + rng.integers(0, 20, size=3)
    img = Image.new("RGB", (w, h), tuple(int(v) for v in bg))
    ImageDraw.Draw(img).text((pad_x - left, pad_y - top + (h - 2 * pad_y - (bottom - top)) // 2), text,
                             font=face, fill=tuple(int(v) for v in fg))
    img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.0, 0.8))))
    noisy = np.asarray(img, dtype=np.float32) + rng.normal(0.0, rng.uniform(0.0, 6.0), size=(h, w, 3))
    return np.clip(noisy, 0, 255).round().astype(np.uint8)


def text_set(n_eval: int, n_calib: int, seed: int = 0, *, cjk_share: float = 0.1) -> TextSet:
    """`n_eval` evaluation and `n_calib` calibration lines, no string in both; fonts and sizes round robin
    (the evaluation split covers every font x size pair evenly)."""
    fonts = dejavu_fonts()
    cjk = cjk_font()
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    out: list[TextLine] = []
    while len(out) < n_eval + n_calib:
        i = len(out)
        # kind changes every font x size cycle, so each kind meets every font at every size
        kind = "cjk" if cjk is not None and rng.random() < cjk_share else KINDS[i // (len(fonts) * len(SIZES)) % len(KINDS)]
        text = _string(kind, rng)
        if text in seen:
            continue
        seen.add(text)
        font = cjk if kind == "cjk" and cjk is not None else fonts[i % len(fonts)]
        size = SIZES[(i // len(fonts)) % len(SIZES)]
        out.append(TextLine(text, kind, font.name, size, render(text, font, size, rng)))
    return TextSet(out[:n_eval], out[n_eval:], cjk)


# --------------------------------------------------------------------------------- reading and scoring


def classes(model: onnx.ModelProto) -> list[str]:
    """CTC classes of a PaddleOCR recogniser: blank, the `character` metadata, then " " (rapidocr)."""
    meta = {p.key: p.value for p in model.metadata_props}
    if "character" not in meta:
        raise SystemExit("the recogniser has no 'character' metadata (PP-OCR rec models from rapidocr carry it)")
    return ["", *meta["character"].splitlines(), " "]


def ctc_greedy(probs: np.ndarray, chars: Sequence[str]) -> str:
    """[T, C] per-step class probabilities -> text: best class per step, repeats merged, blanks dropped."""
    best = probs.argmax(-1)
    keep = np.ones(len(best), dtype=bool)
    keep[1:] = best[1:] != best[:-1]
    return "".join(chars[int(c)] for c in best[keep] if c != 0)


def line_width(img: np.ndarray, height: int = 48, minimum: int = 320) -> int:
    """The input width rapidocr gives one line: its width at `height`, at least `minimum`, a multiple of 8."""
    h, w = img.shape[:2]
    return max(minimum, 8 * math.ceil(height * w / h / 8))


def read_lines(model: onnx.ModelProto, lines: Sequence[TextLine], chars: Sequence[str]) -> list[str]:
    """What the recogniser reads on each line (one session, each line at its own width)."""
    probs = outputs(model, [rec_input(line.image, (48, line_width(line.image))) for line in lines])
    return [ctc_greedy(p[0], chars) for p in probs]


def edit_distance(a: Sequence[object], b: Sequence[object]) -> int:
    """Levenshtein distance (insertions, deletions, substitutions) of two strings or id sequences."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


@dataclass(frozen=True)
class OcrScore:
    lines: int
    exact: float   # share of lines read exactly
    chars: float   # 1 - edits / ground-truth characters

    def cells(self) -> str:
        return f"exact {100 * self.exact:.1f} %, char {100 * self.chars:.1f} %"


def ocr_score(truth: Sequence[str], read: Sequence[str]) -> OcrScore:
    pairs = list(zip(truth, (r.strip() for r in read), strict=True))
    edits = sum(edit_distance(t, r) for t, r in pairs)
    total = sum(len(t) for t, _ in pairs)
    exact = sum(t == r for t, r in pairs)
    return OcrScore(len(pairs), exact / max(len(pairs), 1), 1.0 - edits / max(total, 1))


def breakdown(lines: Sequence[TextLine], read: Sequence[str], key: str) -> dict[str, OcrScore]:
    """The score per font, size or kind (`key`: an attribute of TextLine)."""
    groups: dict[str, tuple[list[str], list[str]]] = {}
    for line, r in zip(lines, read, strict=True):
        t, p = groups.setdefault(str(getattr(line, key)), ([], []))
        t.append(line.text)
        p.append(r)
    return {k: ocr_score(t, p) for k, (t, p) in groups.items()}
