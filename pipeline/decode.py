"""Decode any image file a user may hand us into (H, W, 3) uint8 RGB, or fail with a reason.

Bad input is expected: empty, truncated, corrupt and non-image files, broken links and
decompression bombs all raise `DecodeError` with a short human `.reason`, never None and never
an arbitrary exception. The pixel count is checked from the header before any pixel is decoded.

Mode conversions:
- alpha (RGBA, LA, PA, P or L/RGB with a transparent colour): composited onto a white background;
- 16-bit greyscale (I;16*, and I taken as 16-bit): scaled to 8 bits with rounding (65535 -> 255);
- 32-bit float (F): values in [0, 1] are scaled by 255, otherwise taken on Pillow's 0..255 scale;
- everything else (1, L, P, CMYK, YCbCr, 16-bit RGB) through Pillow's own conversion to RGB.
EXIF orientation is applied; animated files give their first frame.
"""

from __future__ import annotations

import io
import os
import struct

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from copyscope.descriptors.errors import UserError

DEFAULT_MAX_PIXELS = 64_000_000
# Formats Pillow may open (JPEG covers MPO); others (EPS, PDF, PSD, ...) are "not an image".
DECODE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
# What Pillow raises on bad data (its own fuzzers expect these); anything else is a bug to surface.
_PIL_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)

Source = str | os.PathLike | bytes


class DecodeError(UserError):
    """An input that cannot be decoded; `.reason` says why in a few words."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def decode_image(
    source: Source, *, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int | None = None
) -> np.ndarray:
    """Path or encoded bytes -> (H, W, 3) uint8 RGB, C-contiguous and writable.

    max_pixels: refuse images with width * height above it, from the header alone.
    min_side: speed hint; JPEGs are decoded at the largest power-of-two reduction (up to 8)
        that keeps the shorter side >= min_side. Other formats decode at full size.
    Raises DecodeError on any unreadable, corrupt, unsupported or oversized input.
    """
    try:
        with _open(source) as img:
            _check_size(img, max_pixels)
            if min_side is not None:
                img.draft("RGB", (min_side, min_side))  # no-op for formats other than JPEG
            return _decode(img)
    except DecodeError:
        raise
    except _PIL_ERRORS as e:
        raise DecodeError(_reason(e, source)) from e


def image_size(source: Source) -> tuple[int, int]:
    """(width, height) as stored, before EXIF orientation, read from the header only."""
    try:
        with _open(source) as img:
            return img.size
    except _PIL_ERRORS as e:
        raise DecodeError(_reason(e, source)) from e


def _open(source: Source) -> Image.Image:
    fp = io.BytesIO(source) if isinstance(source, bytes) else os.fspath(source)
    return Image.open(fp, formats=DECODE_FORMATS)


def _check_size(img: Image.Image, max_pixels: int) -> None:
    w, h = img.size
    if w * h > max_pixels:
        raise DecodeError(f"too large: {w}x{h} pixels > limit {max_pixels}")


def _decode(img: Image.Image) -> np.ndarray:
    try:
        img.load()
    except _PIL_ERRORS as e:
        raise DecodeError(_load_reason(e, img.format)) from e
    img = ImageOps.exif_transpose(img)
    if img.mode in _SIXTEEN_BIT_MODES:
        return _grey_to_rgb(_scale_16bit(np.asarray(img)))
    if img.mode == "F":
        return _grey_to_rgb(_scale_float(np.asarray(img)))
    if img.has_transparency_data:
        img = _on_white(img)
    try:
        rgb = img.convert("RGB")
    except ValueError as e:
        raise DecodeError(f"unsupported mode {img.mode}") from e
    return np.array(rgb, dtype=np.uint8)


def _scale_16bit(a: np.ndarray) -> np.ndarray:
    """(H, W) 0..65535 (int32 for mode I, clipped) -> (H, W) uint8, rounded."""
    a = np.clip(a, 0, 65535).astype(np.uint32)
    return ((a * 255 + 32767) // 65535).astype(np.uint8)


def _scale_float(a: np.ndarray) -> np.ndarray:
    """(H, W) float32 -> (H, W) uint8; [0, 1] images are stretched to 0..255, NaN -> 0."""
    a = np.nan_to_num(a, nan=0.0, posinf=255.0, neginf=0.0)
    if a.size and a.max() <= 1.0:
        a = a * 255.0
    return np.rint(np.clip(a, 0.0, 255.0)).astype(np.uint8)


def _grey_to_rgb(g: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(g[..., None], 3, axis=2))


def _on_white(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)


def _reason(e: BaseException, source: Source) -> str:
    """Reason for a failure to open (or to read the header of) `source`."""
    if isinstance(e, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"too large: {e}"
    if isinstance(e, UnidentifiedImageError):
        return "empty file" if _is_empty(source) else "not an image"
    if isinstance(e, FileNotFoundError):
        return "broken symlink" if os.path.islink(source) else "file not found"
    if isinstance(e, IsADirectoryError):
        return "is a directory"
    if isinstance(e, PermissionError):
        return "permission denied"
    if isinstance(e, OSError) and e.errno is not None:
        return f"unreadable: {e.strerror}"
    return _load_reason(e, None)


def _load_reason(e: BaseException, fmt: str | None) -> str:
    what = fmt or "image"
    return f"truncated {what}" if "truncated" in str(e).lower() else f"corrupt {what}: {e}"


def _is_empty(source: Source) -> bool:
    if isinstance(source, bytes):
        return not source
    try:
        return os.path.getsize(source) == 0
    except OSError:
        return False
