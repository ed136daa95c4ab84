"""Photometric copy edits: colour jitter, greyscale, blur, noise, pixelisation, sharpening, JPEG.

Strengths that depend on scale (blur, pixel size) are fractions of the image's short side.
"""

from __future__ import annotations

import cv2
import numpy as np

from copyscope.pipeline.augment.imaging import resize, uniform
from copyscope.pipeline.augment.registry import Edit, register


def _sample_color_jitter(rng, height, width):
    return {"brightness": uniform(rng, 0.6, 1.4), "contrast": uniform(rng, 0.6, 1.4),
            "saturation": uniform(rng, 0.3, 1.7), "hue": uniform(rng, -0.1, 0.1)}


def _lut(scale: float, offset: float = 0.0) -> np.ndarray:
    """(256,) uint8 table of v * scale + offset, rounded and clipped."""
    return np.clip(np.rint(np.arange(256) * scale + offset), 0, 255).astype(np.uint8)


def _apply_color_jitter(image, p, ctx):
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV_FULL)
    hsv[..., 0] += np.uint8(round(p["hue"] * 256) % 256)  # hue wraps around in uint8
    hsv[..., 1] = cv2.LUT(hsv[..., 1], _lut(p["saturation"]))
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL)
    # brightness b then contrast c about the mean: v * b * c + mean(v * b) * (1 - c)
    b, c = p["brightness"], p["contrast"]
    return cv2.LUT(rgb, _lut(b * c, b * float(rgb.mean()) * (1 - c)))


def _sample_none(rng, height, width):
    return {}


def _apply_grayscale(image, p, ctx):
    return np.repeat(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)


def _sample_blur(rng, height, width):
    return {"sigma": uniform(rng, 0.004, 0.025)}


def _apply_blur(image, p, ctx):
    sigma = p["sigma"] * min(image.shape[:2])
    return cv2.GaussianBlur(image, (0, 0), sigmaX=max(sigma, 0.3), borderType=cv2.BORDER_REFLECT)


def _sample_noise(rng, height, width):
    return {"std": uniform(rng, 10, 50), "seed": int(rng.integers(0, 2**31))}


def _apply_noise(image, p, ctx):
    noise = np.random.default_rng(p["seed"]).standard_normal(image.shape, dtype=np.float32)
    return np.clip(np.rint(image + noise * np.float32(p["std"])), 0, 255).astype(np.uint8)


def _sample_pixelize(rng, height, width):
    return {"cell": uniform(rng, 0.01, 0.05)}


def _apply_pixelize(image, p, ctx):
    h, w = image.shape[:2]
    cell = max(1.0, p["cell"] * min(h, w))
    small = resize(image, max(1, round(h / cell)), max(1, round(w / cell)))
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def _sample_sharpen(rng, height, width):
    return {"amount": uniform(rng, 1.0, 3.0)}


def _apply_sharpen(image, p, ctx):
    sigma = max(1.0, 0.005 * min(image.shape[:2]))
    blurred = cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)
    return cv2.addWeighted(image, 1.0 + p["amount"], blurred, -p["amount"], 0)


def _sample_jpeg(rng, height, width):
    return {"quality": int(rng.integers(5, 26))}


def _apply_jpeg(image, p, ctx):
    ok, buf = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, p["quality"]])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for an image of shape {image.shape}")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]


register(Edit("color_jitter", "photometric", _sample_color_jitter, _apply_color_jitter))
register(Edit("grayscale", "photometric", _sample_none, _apply_grayscale))
register(Edit("blur", "photometric", _sample_blur, _apply_blur))
register(Edit("noise", "photometric", _sample_noise, _apply_noise))
register(Edit("pixelize", "photometric", _sample_pixelize, _apply_pixelize))
register(Edit("sharpen", "photometric", _sample_sharpen, _apply_sharpen))
register(Edit("jpeg", "photometric", _sample_jpeg, _apply_jpeg))
