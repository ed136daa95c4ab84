"""Geometric copy edits: crop, free and 90-degree rotation, flip, perspective, aspect, padding, rescale.

Positions and sizes are fractions of the input size, so params stay valid for any image size.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from copyscope.pipeline.augment.imaging import box_pixels, log_uniform, random_color, resize, sample_box, uniform
from copyscope.pipeline.augment.registry import Edit, register


# crop: 10-90 % of the area, aspect within 2x of the image's own.
def _sample_crop(rng, height, width):
    return sample_box(rng, (0.1, 0.9), (0.5, 2.0))


def _apply_crop(image, p, ctx):
    t, b, l, r = box_pixels(p, *image.shape[:2])
    return image[t:b, l:r]


def _shape_crop(p, height, width):
    t, b, l, r = box_pixels(p, height, width)
    return b - t, r - l


# rotate: 5-60 degrees either way; `expand` keeps the whole image on a larger canvas.
def _sample_rotate(rng, height, width):
    angle = uniform(rng, 5, 60) * (1 if rng.random() < 0.5 else -1)
    return {"angle": angle, "expand": bool(rng.random() < 0.5), "fill": random_color(rng)}


def _shape_rotate(p, height, width):
    if not p["expand"]:
        return height, width
    c, s = abs(math.cos(math.radians(p["angle"]))), abs(math.sin(math.radians(p["angle"])))
    return max(1, round(height * c + width * s)), max(1, round(width * c + height * s))


def _apply_rotate(image, p, ctx):
    h, w = image.shape[:2]
    oh, ow = _shape_rotate(p, h, w)
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), p["angle"], 1.0)
    m[:, 2] += ((ow - w) / 2, (oh - h) / 2)
    return cv2.warpAffine(image, m, (ow, oh), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=tuple(p["fill"]))


def _sample_rotate90(rng, height, width):
    return {"k": int(rng.integers(1, 4))}


def _apply_rotate90(image, p, ctx):
    return np.rot90(image, k=p["k"])


def _shape_rotate90(p, height, width):
    return (width, height) if p["k"] % 2 else (height, width)


def _sample_flip(rng, height, width):
    return {"axis": "horizontal" if rng.random() < 0.8 else "vertical"}


def _apply_flip(image, p, ctx):
    return image[:, ::-1] if p["axis"] == "horizontal" else image[::-1]


# perspective: each corner moves inward by up to `strength` of the side, on a coloured fill.
def _sample_perspective(rng, height, width):
    strength = uniform(rng, 0.15, 0.35)
    return {"offsets": [[uniform(rng, 0, strength), uniform(rng, 0, strength)] for _ in range(4)],
            "fill": random_color(rng)}


def _apply_perspective(image, p, ctx):
    h, w = image.shape[:2]
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    signs = np.float32([[1, 1], [-1, 1], [-1, -1], [1, -1]])
    dst = src + signs * np.float32(p["offsets"]) * np.float32([w, h])
    m = cv2.getPerspectiveTransform(src, dst)
    return cv2.warpPerspective(image, m, (w, h), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=tuple(p["fill"]))


# aspect: width / height multiplied by `ratio`, the area kept.
def _sample_aspect(rng, height, width):
    ratio = log_uniform(rng, 1.5, 2.5)
    return {"ratio": ratio if rng.random() < 0.5 else 1 / ratio}


def _shape_aspect(p, height, width):
    r = math.sqrt(p["ratio"])
    return max(1, round(height / r)), max(1, round(width * r))


def _apply_aspect(image, p, ctx):
    return resize(image, *_shape_aspect(p, *image.shape[:2]))


# pad: each side grows by up to 50 % of the image's side, in one colour.
def _sample_pad(rng, height, width):
    return {"sides": [uniform(rng, 0, 0.5) for _ in range(4)], "fill": random_color(rng)}


def _pads(p, height, width):
    t, b, l, r = p["sides"]
    return round(t * height), round(b * height), round(l * width), round(r * width)


def _shape_pad(p, height, width):
    t, b, l, r = _pads(p, height, width)
    return height + t + b, width + l + r


def _apply_pad(image, p, ctx):
    t, b, l, r = _pads(p, *image.shape[:2])
    return cv2.copyMakeBorder(image, t, b, l, r, cv2.BORDER_CONSTANT, value=tuple(p["fill"]))


def _sample_rescale(rng, height, width):
    return {"scale": log_uniform(rng, 0.3, 2.0)}


def _shape_rescale(p, height, width):
    return max(1, round(height * p["scale"])), max(1, round(width * p["scale"]))


def _apply_rescale(image, p, ctx):
    return resize(image, *_shape_rescale(p, *image.shape[:2]))


register(Edit("crop", "crop", _sample_crop, _apply_crop, _shape_crop))
register(Edit("rotate", "geometric", _sample_rotate, _apply_rotate, _shape_rotate))
register(Edit("rotate90", "geometric", _sample_rotate90, _apply_rotate90, _shape_rotate90))
register(Edit("flip", "geometric", _sample_flip, _apply_flip))
register(Edit("perspective", "geometric", _sample_perspective, _apply_perspective))
register(Edit("aspect", "geometric", _sample_aspect, _apply_aspect, _shape_aspect))
register(Edit("pad", "geometric", _sample_pad, _apply_pad, _shape_pad))
register(Edit("rescale", "geometric", _sample_rescale, _apply_rescale, _shape_rescale))
