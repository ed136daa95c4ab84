"""Composite copy edits: the image pasted small into an unrelated photo, into a screenshot-like
frame, or under a meme caption. Output sizes come from the params: canvases of at most
MAX_CANVAS pixels a side; a meme is the image at most MAX_CANVAS high plus its caption band.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from copyscope.pipeline.augment.imaging import (
    cover, draw_text, fit_within, load_font, log_uniform, random_color, random_text, resize, uniform,
)
from copyscope.pipeline.augment.registry import Edit, register

MAX_CANVAS = 1024


# paste_into: the image covers 4-30 % of another photo, anywhere in it.
def _sample_paste_into(rng, height, width):
    long, ratio = int(rng.integers(512, MAX_CANVAS + 1)), log_uniform(rng, 0.75, 1.33)
    canvas = [long, round(long * ratio)] if ratio < 1 else [round(long / ratio), long]
    return {"canvas": canvas, "area": uniform(rng, 0.04, 0.3), "x": uniform(rng, 0, 1),
            "y": uniform(rng, 0, 1), "border": 0.0 if rng.random() < 0.7 else uniform(rng, 0.01, 0.04)}


def _shape_canvas(p, height, width):
    return tuple(p["canvas"])


def _apply_paste_into(image, p, ctx):
    ch, cw = p["canvas"]
    out = np.array(cover(ctx.other(p["other"]), ch, cw))
    h, w = image.shape[:2]
    scale = math.sqrt(p["area"] * ch * cw / (h * w))
    ph, pw = fit_within(h, w, min(h * scale, 0.95 * ch), min(w * scale, 0.95 * cw))
    b = min(round(p["border"] * max(ph, pw)), (ch - ph) // 2, (cw - pw) // 2)
    top, left = round(p["y"] * (ch - ph - 2 * b)), round(p["x"] * (cw - pw - 2 * b))
    out[top : top + ph + 2 * b, left : left + pw + 2 * b] = 255
    out[top + b : top + b + ph, left + b : left + b + pw] = resize(image, ph, pw)
    return out


# screenshot: a phone or desktop app frame with a header, the image, caption text and icons.
def _sample_screenshot(rng, height, width):
    if rng.random() < 0.6:
        w = int(rng.integers(360, 541))
        canvas = [min(MAX_CANVAS, round(w * uniform(rng, 1.7, 2.1))), w]
    else:
        w = int(rng.integers(800, MAX_CANVAS + 1))
        canvas = [round(w * uniform(rng, 0.56, 0.75)), w]
    return {"canvas": canvas, "dark": bool(rng.random() < 0.4), "accent": random_color(rng),
            "title": random_text(rng, (1, 3)), "image_frac": uniform(rng, 0.2, 0.5),
            "caption": [random_text(rng, (2, 6)) for _ in range(int(rng.integers(1, 5)))],
            "icons": int(rng.integers(0, 6))}


def _apply_screenshot(image, p, ctx):
    ch, cw = p["canvas"]
    bg, fg = ((24, 24, 28), (225, 225, 225)) if p["dark"] else ((250, 250, 250), (40, 40, 40))
    frame = Image.new("RGB", (cw, ch), bg)
    draw, unit = ImageDraw.Draw(frame), ch / 40
    draw.rectangle((0, 0, cw, 2.5 * unit), fill=tuple(p["accent"]))
    draw_text(draw, (unit, 0.5 * unit), p["title"], "DejaVuSans-Bold", 1.3 * unit, [255, 255, 255])
    margin = round(0.03 * cw)
    ih, iw = fit_within(*image.shape[:2], p["image_frac"] * ch, cw - 2 * margin)
    top = round(3.2 * unit)
    frame.paste(Image.fromarray(resize(image, ih, iw)), ((cw - iw) // 2, top))
    y = top + ih + 0.6 * unit
    for line in p["caption"]:
        draw_text(draw, (margin, y), line, "DejaVuSans", 0.9 * unit, list(fg))
        y += 1.4 * unit
    for i in range(p["icons"]):
        cx = (i + 0.5) * cw / max(1, p["icons"])
        draw.ellipse((cx - unit, ch - 2.5 * unit, cx + unit, ch - 0.5 * unit), fill=tuple(p["accent"]))
    return np.array(frame)


# meme: a caption in a white band above the image, or white outlined text over it ("impact").
def _sample_meme(rng, height, width):
    band = rng.random() < 0.6
    return {"style": "band" if band else "impact", "width": int(rng.integers(400, 801)),
            "band": uniform(rng, 0.12, 0.3), "top": random_text(rng, (2, 5)),
            "bottom": "" if band else random_text(rng, (1, 4))}


def _meme_sizes(p, height, width):
    """(image height, image width, band height) of the meme: width p["width"], height <= MAX_CANVAS."""
    scale = min(p["width"] / width, MAX_CANVAS / height)
    ih, iw = max(1, round(height * scale)), max(1, round(width * scale))
    return ih, iw, round(p["band"] * iw) if p["style"] == "band" else 0


def _shape_meme(p, height, width):
    ih, iw, band = _meme_sizes(p, height, width)
    return ih + band, iw


def _fit_font_size(text: str, height: float, width: float) -> float:
    """Font size (pixels) for one line of `text` at most `height` high and `width` wide."""
    probe = load_font("DejaVuSans-Bold", 100).getlength(text) or 1.0
    return max(1.0, min(height, 100 * width / probe))


def _caption(draw, text: str, top: float, height: float, width: int, color: list[int], stroke: bool):
    size = _fit_font_size(text, 0.7 * height, 0.94 * width)
    length = load_font("DejaVuSans-Bold", max(1, round(size))).getlength(text)
    draw_text(draw, ((width - length) / 2, top + (height - size) / 2), text, "DejaVuSans-Bold", size, color, stroke)


def _apply_meme(image, p, ctx):
    ih, w, band = _meme_sizes(p, *image.shape[:2])
    frame = Image.new("RGB", (w, ih + band), (255, 255, 255))
    frame.paste(Image.fromarray(resize(image, ih, w)), (0, band))
    draw = ImageDraw.Draw(frame)
    if p["style"] == "band":
        _caption(draw, p["top"], 0, band, w, [0, 0, 0], False)
    else:
        _caption(draw, p["top"].upper(), 0, 0.2 * ih, w, [255, 255, 255], True)
        _caption(draw, p["bottom"].upper(), 0.8 * ih, 0.2 * ih, w, [255, 255, 255], True)
    return np.array(frame)


register(Edit("paste_into", "paste", _sample_paste_into, _apply_paste_into, _shape_canvas, needs_other=True))
register(Edit("screenshot", "screenshot", _sample_screenshot, _apply_screenshot, _shape_canvas))
register(Edit("meme", "meme", _sample_meme, _apply_meme, _shape_meme))
