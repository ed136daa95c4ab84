"""Ray Data stages: decode + resize (tasks), embed (an actor pool holding the model).

Batches are dicts of numpy arrays. A row that fails keeps flowing with its `error` set, so every
failure reaches the driver as a record with a reason.
"""

from __future__ import annotations

import numpy as np

from descriptors import PreprocessCfg, resize_image
from pipeline.decode import DecodeError, decode_image
from pipeline.model_spec import ModelSpec

_PLACEHOLDER = np.zeros((1, 1, 3), np.uint8)


def decode_batch(batch: dict, cfg: dict, max_pixels: int) -> dict:
    """{"id", "path"} -> adds "image" (object array of (h, w, 3) uint8, resized) and "error" (str)."""
    pre = PreprocessCfg.from_dict(cfg)
    images, errors = [], []
    for path in batch["path"]:
        try:
            images.append(resize_image(pre, decode_image(path, max_pixels=max_pixels, min_side=pre.size)))
            errors.append("")
        except DecodeError as e:
            images.append(_PLACEHOLDER)
            errors.append(e.reason)
    out = {k: batch[k] for k in batch if k not in ("image", "error")}
    out["image"] = _object_array(images)
    out["error"] = np.asarray(errors, dtype=object)
    return out


class EmbedActor:
    """Loads the model once per actor; (images) -> "embedding" (B, D) float32, zeros where "error"."""

    def __init__(self, spec: dict, device: str = "cpu", num_threads: int | None = None):
        self.model = ModelSpec.from_dict(spec).build(device=device, num_threads=num_threads)

    def __call__(self, batch: dict) -> dict:
        ok = [i for i, e in enumerate(batch["error"]) if not e]
        emb = np.zeros((len(batch["error"]), self.model.dim), np.float32)
        if ok:
            emb[ok] = self.model.embed_resized([batch["image"][i] for i in ok])
        out = {k: v for k, v in batch.items() if k != "image"}
        out["embedding"] = emb
        return out


def _object_array(items: list) -> np.ndarray:
    arr = np.empty(len(items), dtype=object)
    arr[:] = items
    return arr
