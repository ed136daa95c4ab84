"""Small pixel helpers shared by the edits: resizing, fitting, colours, fonts, alpha blending."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import cv2
import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

# TrueType fonts that ship with matplotlib (a dependency): DejaVu covers Latin text and many symbols.
FONTS = ("DejaVuSans", "DejaVuSans-Bold", "DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSansMono-Bold")


def font_path(name: str) -> Path:
    if name not in FONTS:
        raise KeyError(f"unknown font {name!r}; known: {', '.join(FONTS)}")
    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / f"{name}.ttf"


@functools.lru_cache(maxsize=64)
def load_font(name: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(font_path(name)), max(1, int(size)))


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (height, width, 3) uint8; area filter when shrinking, linear otherwise."""
    height, width = max(1, int(height)), max(1, int(width))
    if (height, width) == image.shape[:2]:
        return image
    shrink = height * width < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def fit_within(height: int, width: int, max_h: float, max_w: float) -> tuple[int, int]:
    """Largest (h, w) with the aspect of (height, width) inside (max_h, max_w); at least 1x1."""
    scale = min(max_h / height, max_w / width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def cover(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, 3) -> (height, width, 3): scaled to cover the target, then centre-cropped."""
    h, w = image.shape[:2]
    scale = max(height / h, width / w)
    sh, sw = max(height, round(h * scale)), max(width, round(w * scale))
    scaled = resize(image, sh, sw)
    top, left = (sh - height) // 2, (sw - width) // 2
    return scaled[top : top + height, left : left + width]


def uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def sample_box(rng: np.random.Generator, area: tuple[float, float], ratio: tuple[float, float]) -> dict:
    """A box inside the image, as fractions {"top", "left", "height", "width"}: a uniform `area`
    fraction of the image, its relative aspect (width / height fractions) log-uniform in `ratio`."""
    a, r = uniform(rng, *area), log_uniform(rng, *ratio)
    fw = min(1.0, a / min(1.0, math.sqrt(a / r)))
    fh = a / fw
    return {"top": uniform(rng, 0, 1 - fh), "left": uniform(rng, 0, 1 - fw), "height": fh, "width": fw}


def box_pixels(box: dict, height: int, width: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) pixel bounds of a fractional box; at least 1x1, inside the image."""

    def span(start: float, length: float, size: int) -> tuple[int, int]:
        a = min(size - 1, int(start * size))
        return a, a + max(1, min(size - a, round(length * size)))

    return *span(box["top"], box["height"], height), *span(box["left"], box["width"], width)


def random_color(rng: np.random.Generator) -> list[int]:
    return [int(c) for c in rng.integers(0, 256, size=3)]


def blend(base: np.ndarray, top: np.ndarray, alpha: np.ndarray | float) -> np.ndarray:
    """base * (1 - alpha) + top * alpha, rounded to uint8; alpha is a float or (H, W) in 0..1."""
    a = np.asarray(alpha, np.float32)
    if a.ndim == 2:
        a = a[..., None]
    out = base.astype(np.float32) * (1.0 - a) + top.astype(np.float32) * a
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def random_text(rng: np.random.Generator, n_words: tuple[int, int] = (1, 4)) -> str:
    """A few pseudo-words of Latin letters, sometimes capitalised, sometimes with digits."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = []
    for _ in range(int(rng.integers(n_words[0], n_words[1] + 1))):
        alphabet = letters + "0123456789" if rng.random() < 0.2 else letters
        word = "".join(rng.choice(list(alphabet), size=int(rng.integers(2, 9))))
        words.append(word.upper() if rng.random() < 0.3 else word)
    return " ".join(words)


def new_layer(height: int, width: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    """A transparent RGBA layer of the given size, and a drawing handle on it."""
    layer = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    return layer, ImageDraw.Draw(layer)


def composite(image: np.ndarray, layer: Image.Image, opacity: float = 1.0) -> np.ndarray:
    """(H, W, 3) uint8 with an RGBA layer of the same size drawn over it at `opacity`."""
    rgba = np.asarray(layer)
    return blend(image, rgba[..., :3], rgba[..., 3].astype(np.float32) * (opacity / 255.0))


def draw_text(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, font_name: str, size: float,
              color: list[int], stroke: bool = False) -> None:
    """Text at `xy` (top left, pixels), `size` pixels high; a dark or light outline when `stroke`."""
    font = load_font(font_name, max(1, round(size)))
    outline = (0, 0, 0, 255) if sum(color) > 384 else (255, 255, 255, 255)
    width = max(1, round(size / 15)) if stroke else 0
    draw.text(xy, text, font=font, fill=(*color, 255), stroke_width=width, stroke_fill=outline)
