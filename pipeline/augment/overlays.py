"""Overlay copy edits: text, emoji-like symbols, shapes, stripes and another photo drawn on top.

Positions and sizes are fractions of the image (sizes of its short side), so params fit any size.
Text and symbols use DejaVu TrueType fonts shipped with matplotlib.
"""

from __future__ import annotations

import math

import numpy as np

from copyscope.pipeline.augment.imaging import (
    FONTS, blend, box_pixels, composite, cover, draw_text, new_layer, random_color, random_text, sample_box, uniform,
)
from copyscope.pipeline.augment.registry import Edit, register

# Symbols that DejaVu Sans draws: the emoji-like icons of memes and messaging apps.
SYMBOLS = "☺☻★♥❤☀☁☂☃☎✈✉✂✔✌☕⚽⚡☘✿☯☮♛♠♣♦♪♫⌚"
SHAPES = ("rectangle", "ellipse", "triangle", "line")


def _glyph_item(rng: np.random.Generator, text: str, font: str, size: tuple[float, float]) -> dict:
    return {"text": text, "font": font, "size": uniform(rng, *size), "x": uniform(rng, -0.1, 0.8),
            "y": uniform(rng, -0.05, 0.9), "color": random_color(rng), "stroke": bool(rng.random() < 0.5)}


def _sample_text(rng, height, width):
    items = [_glyph_item(rng, random_text(rng), str(rng.choice(FONTS)), (0.08, 0.25))
             for _ in range(int(rng.integers(1, 5)))]
    return {"items": items, "opacity": uniform(rng, 0.6, 1.0)}


def _sample_emoji(rng, height, width):
    items = [_glyph_item(rng, str(rng.choice(list(SYMBOLS))), "DejaVuSans", (0.15, 0.5))
             for _ in range(int(rng.integers(1, 7)))]
    return {"items": items, "opacity": uniform(rng, 0.7, 1.0)}


def _apply_glyphs(image, p, ctx):
    h, w = image.shape[:2]
    layer, draw = new_layer(h, w)
    for it in p["items"]:
        draw_text(draw, (it["x"] * w, it["y"] * h), it["text"], it["font"], it["size"] * min(h, w),
                  it["color"], it["stroke"])
    return composite(image, layer, p["opacity"])


def _sample_shapes(rng, height, width):
    items = []
    for _ in range(int(rng.integers(1, 6))):
        x, y, s = uniform(rng, 0, 0.9), uniform(rng, 0, 0.9), uniform(rng, 0.1, 0.4)
        items.append({"shape": str(rng.choice(SHAPES)), "box": [x, y, x + s, y + s * uniform(rng, 0.5, 2)],
                      "color": random_color(rng), "filled": bool(rng.random() < 0.6)})
    return {"items": items, "opacity": uniform(rng, 0.5, 1.0)}


def _apply_shapes(image, p, ctx):
    h, w = image.shape[:2]
    layer, draw = new_layer(h, w)
    line = max(1, round(0.02 * min(h, w)))
    for it in p["items"]:
        x0, y0, x1, y1 = it["box"][0] * w, it["box"][1] * h, it["box"][2] * w, it["box"][3] * h
        color = (*it["color"], 255)
        fill, outline = (color, None) if it["filled"] else (None, color)
        if it["shape"] == "rectangle":
            draw.rectangle((x0, y0, x1, y1), fill=fill, outline=outline, width=line)
        elif it["shape"] == "ellipse":
            draw.ellipse((x0, y0, x1, y1), fill=fill, outline=outline, width=line)
        elif it["shape"] == "triangle":
            draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill, outline=outline, width=line)
        else:
            draw.line((x0, y0, x1, y1), fill=color, width=line)
    return composite(image, layer, p["opacity"])


# stripes: parallel bands across the whole image at any angle.
def _sample_stripes(rng, height, width):
    return {"angle": uniform(rng, 0, 180), "period": uniform(rng, 0.05, 0.25), "duty": uniform(rng, 0.15, 0.5),
            "phase": uniform(rng, 0, 1), "color": random_color(rng), "opacity": uniform(rng, 0.3, 0.8)}


def _apply_stripes(image, p, ctx):
    h, w = image.shape[:2]
    a = math.radians(p["angle"])
    xs, ys = np.arange(w, dtype=np.float32)[None, :], np.arange(h, dtype=np.float32)[:, None]
    t = (xs * math.cos(a) + ys * math.sin(a)) / (p["period"] * min(h, w)) + p["phase"]
    mask = (t - np.floor(t)) < p["duty"]
    out = image.copy()
    out[mask] = blend(image[mask], np.uint8(p["color"]), p["opacity"])
    return out


# overlay_photo: another photo covers 20-55 % of the image, possibly translucent.
def _sample_overlay_photo(rng, height, width):
    return {**sample_box(rng, (0.2, 0.55), (0.6, 1.65)), "opacity": uniform(rng, 0.7, 1.0)}


def _apply_overlay_photo(image, p, ctx):
    t, b, l, r = box_pixels(p, *image.shape[:2])
    out = image.copy()
    out[t:b, l:r] = blend(out[t:b, l:r], cover(ctx.other(p["other"]), b - t, r - l), p["opacity"])
    return out


register(Edit("text", "overlay", _sample_text, _apply_glyphs))
register(Edit("emoji", "overlay", _sample_emoji, _apply_glyphs))
register(Edit("shapes", "overlay", _sample_shapes, _apply_shapes))
register(Edit("stripes", "overlay", _sample_stripes, _apply_stripes))
register(Edit("overlay_photo", "overlay", _sample_overlay_photo, _apply_overlay_photo, needs_other=True))
