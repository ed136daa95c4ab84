"""The registry of copy edits, and the context that lends edits other photos.

An edit is two pure functions: `sample` draws JSON-serialisable parameters from a generator, and
`apply` turns an image and those parameters into the edited image. Sampling apart from applying
is what lets a chain of edits be recorded as ground truth and replayed pixel for pixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import cv2
import numpy as np

# Edits never grow an image's long side past max(its input long side, MAX_SIDE).
MAX_SIDE = 2048
GROUPS = ("crop", "geometric", "overlay", "paste", "screenshot", "meme", "photometric")

Sampler = Callable[[np.random.Generator, int, int], dict]
Shape = Callable[[dict, int, int], tuple[int, int]]


class EditContext:
    """Other photos an edit may need (overlay of a photo, paste into a photo), by key.

    others: key -> (H, W, 3) uint8 image, or a callable loading it. The params of such edits
        record the key, so a replay with the same context uses the same photo.
    """

    def __init__(self, others: Mapping[str, np.ndarray] | Callable[[str], np.ndarray] | None = None):
        self._others = others if others is not None else {}

    def other(self, key: str) -> np.ndarray:
        """(H, W, 3) uint8 photo recorded under `key`."""
        if callable(self._others):
            return self._others(key)
        if key not in self._others:
            raise KeyError(f"edit needs other photo {key!r}, which this context does not hold")
        return self._others[key]


def _same_shape(params: dict, height: int, width: int) -> tuple[int, int]:
    return height, width


@dataclass(frozen=True)
class Edit:
    """One kind of copy edit.

    sample(rng, height, width) -> params: plain JSON types only.
    apply(image, params, ctx) -> image: (H, W, 3) uint8 -> (h, w, 3) uint8.
    shape(params, height, width) -> (h, w) the output size before the MAX_SIDE cap.
    needs_other: params carry an "other" key, filled in by the chain sampler from its pool.
    """

    name: str
    group: str
    sample: Sampler
    apply: Callable[[np.ndarray, dict, EditContext], np.ndarray]
    shape: Shape = _same_shape
    needs_other: bool = False


EDITS: dict[str, Edit] = {}


def register(edit: Edit) -> Edit:
    if edit.name in EDITS:
        raise ValueError(f"edit {edit.name!r} registered twice")
    if edit.group not in GROUPS:
        raise ValueError(f"unknown group {edit.group!r}; known: {', '.join(GROUPS)}")
    EDITS[edit.name] = edit
    return edit


def get_edit(name: str) -> Edit:
    if name not in EDITS:
        raise KeyError(f"unknown edit {name!r}; known: {', '.join(sorted(EDITS))}")
    return EDITS[name]


def list_edits(group: str | None = None) -> list[str]:
    """Sorted edit names, all or those of one group."""
    if group is not None and group not in GROUPS:
        raise KeyError(f"unknown group {group!r}; known: {', '.join(GROUPS)}")
    return sorted(n for n, e in EDITS.items() if group is None or e.group == group)


def capped_shape(height: int, width: int, out_h: int, out_w: int) -> tuple[int, int]:
    """(out_h, out_w) scaled down so its long side is at most max(input long side, MAX_SIDE)."""
    limit = max(height, width, MAX_SIDE)
    scale = min(1.0, limit / max(out_h, out_w))
    return max(1, round(out_h * scale)), max(1, round(out_w * scale))


def output_shape(name: str, params: dict, height: int, width: int) -> tuple[int, int]:
    """(h, w) that `apply_edit(name, ...)` returns for an input of (height, width)."""
    return capped_shape(height, width, *get_edit(name).shape(params, height, width))


def apply_edit(image: np.ndarray, name: str, params: dict, ctx: EditContext | None = None) -> np.ndarray:
    """(H, W, 3) uint8 -> (h, w, 3) uint8: a new writable C-contiguous array, long side capped
    at max(H, W, MAX_SIDE)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or 0 in image.shape:
        raise ValueError(f"expected (H, W, 3) uint8 with H, W >= 1, got {image.shape} {image.dtype}")
    h, w = image.shape[:2]
    out = get_edit(name).apply(image, params, ctx if ctx is not None else EditContext())
    ch, cw = capped_shape(h, w, *out.shape[:2])
    if (ch, cw) != out.shape[:2]:
        out = cv2.resize(out, (cw, ch), interpolation=cv2.INTER_AREA)
    if np.may_share_memory(out, image) or not (out.flags.writeable and out.flags.c_contiguous):
        out = np.array(out, order="C")
    return out
