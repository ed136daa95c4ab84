"""Draw a verified (query, reference) pair: side by side, inlier lines, matched regions, a caption.

    draw_pair(query (Hq, Wq, 3), reference (Hr, Wr, 3), Verification) -> (h, w, 3) uint8 RGB

Both images are scaled to one height (the taller one's, at most `max_side`) and put left (query)
and right (reference) with a gap; inliers are green lines, the other tentative matches faint red,
each matched region is outlined in yellow, and a caption below gives the numbers.
"""

from __future__ import annotations

import os

import cv2
import numpy as np
from PIL import Image

from copyscope.matching.verification import Verification
from copyscope.pipeline.atomic import atomic_write

GAP = 8
CAPTION_HEIGHT = 26
INLIER_COLOUR = (40, 220, 40)
OUTLIER_COLOUR = (230, 40, 40)
OUTLIER_ALPHA = 0.35
REGION_COLOUR = (255, 220, 0)
_SHIFT = 4  # sub-pixel bits for cv2 drawing


def _rgb(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"expected an (H, W, 3) or (H, W) uint8 image, got {image.dtype} {image.shape}")
    return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else image


def _scaled(image: np.ndarray, height: int) -> tuple[np.ndarray, float]:
    scale = height / image.shape[0]
    width = max(1, round(image.shape[1] * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation), scale


def _to_canvas(points: np.ndarray, scale: float, x_offset: int) -> np.ndarray:
    """(N, 2) original pixels -> (N, 2) int32 fixed-point canvas pixels (pixel centres kept)."""
    canvas = (points.astype(np.float64) + 0.5) * scale - 0.5 + [x_offset, 0]
    return np.rint(canvas * (1 << _SHIFT)).astype(np.int32)


def _lines(canvas: np.ndarray, start: np.ndarray, end: np.ndarray, colour: tuple[int, int, int]) -> None:
    for a, b in zip(start, end):
        cv2.line(canvas, tuple(a), tuple(b), colour, 1, cv2.LINE_AA, _SHIFT)


def caption(verification: Verification) -> str:
    """One line of numbers, or the reason nothing was verified."""
    v = verification
    if not v.verified:
        return f"not verified ({v.reason}); {v.matches} tentative matches"
    mirrored = ", mirrored" if v.mirrored else ""
    return (f"{v.inliers} inliers / {v.matches} matches ({v.inlier_ratio:.0%}){mirrored}; "
            f"covers {v.query_coverage:.0%} of query, {v.reference_coverage:.0%} of reference")


def draw_pair(query: np.ndarray, reference: np.ndarray, verification: Verification, *, max_side: int = 640,
              outliers: bool = True) -> np.ndarray:
    """(Hq, Wq, 3) and (Hr, Wr, 3) uint8 RGB + Verification -> (h, w, 3) uint8 RGB drawing.

    h = min(max_side, max(Hq, Hr)) + CAPTION_HEIGHT; outliers: also draw the rejected tentative matches.
    """
    height = min(max_side, max(query.shape[0], reference.shape[0]))
    left, q_scale = _scaled(_rgb(query), height)
    right, r_scale = _scaled(_rgb(reference), height)
    offset = left.shape[1] + GAP
    canvas = np.full((height + CAPTION_HEIGHT, offset + right.shape[1], 3), 255, np.uint8)
    canvas[:height, : left.shape[1]] = left
    canvas[:height, offset:] = right
    v = verification
    start = _to_canvas(v.query_points, q_scale, 0)
    end = _to_canvas(v.reference_points, r_scale, offset)
    if outliers and (~v.inlier_mask).any():
        faint = canvas.copy()
        _lines(faint, start[~v.inlier_mask], end[~v.inlier_mask], OUTLIER_COLOUR)
        cv2.addWeighted(faint, OUTLIER_ALPHA, canvas, 1 - OUTLIER_ALPHA, 0, dst=canvas)
    _lines(canvas, start[v.inlier_mask], end[v.inlier_mask], INLIER_COLOUR)
    for region, scale, x in ((v.query_region, q_scale, 0), (v.reference_region, r_scale, offset)):
        if len(region):
            cv2.polylines(canvas, [_to_canvas(region, scale, x)], True, REGION_COLOUR, 2, cv2.LINE_AA, _SHIFT)
    cv2.putText(canvas, caption(v), (6, height + CAPTION_HEIGHT - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def save_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write (h, w, 3) uint8 RGB as PNG, atomically (temp file + rename)."""
    with atomic_write(path) as f:
        Image.fromarray(_rgb(image)).save(f, format="PNG")


def show_pair(query_path: str | os.PathLike, reference_path: str | os.PathLike, out_png: str | os.PathLike, *,
              method: str = "rootsift") -> Verification:
    """Decode two image files, verify them, and draw the pair to `out_png`; returns the Verification."""
    from copyscope.matching.verification import verify_images
    from copyscope.pipeline.decode import decode_image

    query, reference = decode_image(query_path), decode_image(reference_path)
    verification = verify_images(query, reference, method)
    save_png(out_png, draw_pair(query, reference, verification))
    return verification
