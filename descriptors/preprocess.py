"""Preprocessing that travels with a model: one frozen config, one function that applies it.

Every use (indexing, querying, benchmarks, the Ray stages) resizes through `resize_image` with the
model's `PreprocessCfg`, so a query is never embedded differently from its references.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_MODES = ("short_side", "square")


@dataclass(frozen=True)
class PreprocessCfg:
    """How a model wants its pixels.

    resize: "short_side" scales the shorter side to `size` keeping the aspect ratio (the long side
        capped at `max_aspect * size`); "square" scales to `size x size`.
    mean, std: per-channel, for pixels scaled to 0..1. Recorded for every model; models whose
        graph normalises internally (the SSCD ONNX files) take raw uint8 and ignore them here.
    dim: length of the output descriptor.
    """

    resize: str = "short_side"
    size: int = 288
    max_aspect: float = 3.0
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    dim: int = 512

    def __post_init__(self):
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"unknown resize mode {self.resize!r}; known: {', '.join(RESIZE_MODES)}")
        if self.size < 8:
            raise ValueError(f"size must be >= 8, got {self.size}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessCfg":
        d = dict(d)
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        return cls(**d)


def target_size(cfg: PreprocessCfg, height: int, width: int) -> tuple[int, int]:
    """(height, width) an image of the given size is resized to."""
    if cfg.resize == "square":
        return cfg.size, cfg.size
    scale = cfg.size / min(height, width)
    h, w = max(cfg.size, round(height * scale)), max(cfg.size, round(width * scale))
    cap = int(cfg.max_aspect * cfg.size)
    return min(h, cap), min(w, cap)


def resize_image(cfg: PreprocessCfg, image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (h, w, 3) uint8 as `cfg` asks; area filter when shrinking."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected (H, W, 3) uint8, got {image.shape} {image.dtype}")
    h, w = target_size(cfg, *image.shape[:2])
    if (h, w) == image.shape[:2]:
        return image
    shrinking = h * w < image.shape[0] * image.shape[1]
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def normalize_batch(cfg: PreprocessCfg, batch: np.ndarray) -> np.ndarray:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32, scaled to 0..1 then standardised."""
    x = batch.astype(np.float32) / 255.0
    x = (x - np.asarray(cfg.mean, np.float32)) / np.asarray(cfg.std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
