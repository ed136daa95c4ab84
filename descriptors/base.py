"""The descriptor interface: a batch of images -> L2-normalised global descriptors."""

from __future__ import annotations

import abc
from collections import defaultdict
from typing import Sequence

import numpy as np

from copyscope.descriptors.preprocess import PreprocessCfg, resize_image


class Descriptor(abc.ABC):
    """Images -> (B, D) float32 descriptors, L2-normalised (inner product = cosine).

    Subclasses implement `_forward` on a batch of same-sized, already resized images. Images of
    different sizes (aspect-preserving resize) are grouped by size and run in chunks of `max_batch`.
    """

    # Which device families the model's runtime can use: "onnx" (onnxruntime) or "torch". A job asks
    # `copyscope.jobs.device.resolve_device(requested, backend)` for a device this runtime really has.
    backend: str = "torch"

    def __init__(self, name: str, cfg: PreprocessCfg, *, weights: str | None = None, max_batch: int = 32,
                 seed: int | None = None):
        self.name = name
        self.seed = seed  # seed of a random initialisation (weights=None), None when weights were loaded
        self.cfg = cfg
        self.weights = weights
        self.max_batch = max_batch

    @property
    def dim(self) -> int:
        return self.cfg.dim

    def spec(self) -> dict:
        """What an index manifest records so a query is embedded exactly like its references."""
        spec = {"name": self.name, "weights": self.weights, "preprocess": self.cfg.to_dict()}
        if self.seed is not None:
            spec["seed"] = self.seed
        return spec

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Sequence of (H, W, 3) uint8 RGB, any sizes -> (B, D) float32."""
        return self.embed_resized([resize_image(self.cfg, im) for im in images])

    def embed_resized(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Images already resized by `resize_image` (any size: grouped by shape) -> (B, D) float32."""
        out = np.empty((len(images), self.dim), np.float32)
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, im in enumerate(images):
            groups[im.shape].append(i)
        for rows in groups.values():
            for start in range(0, len(rows), self.max_batch):
                chunk = rows[start : start + self.max_batch]
                out[chunk] = self._forward(np.stack([images[i] for i in chunk]))
        return out

    @abc.abstractmethod
    def _forward(self, batch: np.ndarray) -> np.ndarray:
        """(B, h, w, 3) uint8 -> (B, D) float32, L2-normalised."""
