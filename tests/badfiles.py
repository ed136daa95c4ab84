"""A small generated corpus of good and bad image files, for decode, listing and pipeline tests.

`make_bad_corpus(folder)` writes it (seeded, under 300 kB, well under a second) and returns
{relative posix filename: whether it should decode}. The constants below describe the pixels
the tests check.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

BOMB_SIDE = 30000
GRAY16_ROW = (0, 257, 32768, 65535)  # first row of gray16.png -> 0, 1, 128, 255
EXIF_STORED_WH = (40, 24)  # exif_rotated.jpg as stored; red marks the stored top-left corner
FRAME_COLOURS = ((200, 30, 30), (30, 200, 30), (30, 30, 200))  # animated.gif frames, in order
RGBA_PIXEL = (0, 0, 255, 128)  # every pixel of rgba.png
PALETTE_RGB = ((0, 0, 0), (255, 0, 0))  # palette_alpha.png: index 0 transparent, left half


def make_bad_corpus(folder: Path) -> dict[str, bool]:
    """Write the corpus under `folder` -> {relative filename: should_decode}."""
    folder = Path(folder)
    (folder / "nested" / "deeper").mkdir(parents=True, exist_ok=True)
    photo = data.chelsea()  # (300, 451, 3) uint8
    good_jpg = _encode(Image.fromarray(photo), "JPEG", quality=85)
    good_png = _encode(Image.fromarray(photo[100:196, 150:278]), "PNG")
    files = {
        "good.jpg": (good_jpg, True),
        "good_crop.png": (good_png, True),
        "truncated.jpg": (good_jpg[: len(good_jpg) // 2], False),
        "corrupt.png": (_flip_idat(good_png), False),
        "empty.jpg": (b"", False),
        "text.png": (b"This is not an image, only text with an image extension.\n" * 4, False),
        "bomb.png": (bomb_png(BOMB_SIDE, BOMB_SIDE), False),
        "gray16.png": (_gray16(), True),
        "cmyk.jpg": (_encode(Image.fromarray(photo).convert("CMYK"), "JPEG", quality=85), True),
        "palette_alpha.png": (_palette_alpha(), True),
        "rgba.png": (_encode(Image.new("RGBA", (16, 8), RGBA_PIXEL), "PNG"), True),
        "animated.gif": (_animated_gif(), True),
        "exif_rotated.jpg": (_exif_rotated(), True),
        "tiny.png": (_encode(Image.new("RGB", (1, 1), (10, 20, 30)), "PNG"), True),
        "nested/deeper/good2.jpg": (_encode(Image.fromarray(photo[::2, ::2]), "JPEG"), True),
    }
    for name, (payload, _) in files.items():
        (folder / name).write_bytes(payload)
    link = folder / "broken_link.jpg"
    if link.is_symlink():
        link.unlink()
    os.symlink("missing-target.jpg", link)
    return {"broken_link.jpg": False} | {name: ok for name, (_, ok) in files.items()}


def png_bytes(width: int, height: int, bit_depth: int, colour_type: int, rows) -> bytes:
    """A PNG written chunk by chunk; `rows` yields raw scanline bytes (filter byte included).

    Streaming the rows keeps huge declared images (bombs) cheap to write.
    """
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(r) for r in rows) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def bomb_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG of width x height: ~1000x smaller on disk than decoded."""
    rows_per_block = 1000
    block = bytes(1 + (width + 7) // 8) * rows_per_block
    full, rest = divmod(height, rows_per_block)
    blocks = [block] * full + [block[: rest * len(block) // rows_per_block]]
    return png_bytes(width, height, 1, 0, blocks)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _flip_idat(png: bytes) -> bytes:
    """Invert 64 bytes in the middle of the first IDAT chunk: the deflate stream breaks."""
    start = png.index(b"IDAT") + 4
    length = struct.unpack(">I", png[start - 8 : start - 4])[0]
    mid = start + length // 2
    return png[:mid] + bytes(b ^ 0xFF for b in png[mid : mid + 64]) + png[mid + 64 :]


def _gray16() -> bytes:
    """(8, 16) 16-bit grey: row 0 starts with GRAY16_ROW, the rest is seeded noise."""
    a = np.random.default_rng(0).integers(0, 65536, size=(8, 16), dtype=np.uint16)
    a[0, : len(GRAY16_ROW)] = GRAY16_ROW
    return _encode(Image.fromarray(a), "PNG")


def _palette_alpha() -> bytes:
    """(8, 16) palette image, left half index 0 (transparent), right half index 1 (red)."""
    idx = np.zeros((8, 16), np.uint8)
    idx[:, 8:] = 1
    img = Image.frombytes("P", (16, 8), idx.tobytes())
    img.putpalette([c for rgb in PALETTE_RGB for c in rgb])
    return _encode(img, "PNG", transparency=0)


def _animated_gif() -> bytes:
    frames = [Image.new("RGB", (12, 10), c) for c in FRAME_COLOURS]
    return _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def _exif_rotated() -> bytes:
    """Stored landscape, grey with a red top-left block, orientation 6 (display rotated 90 CW)."""
    w, h = EXIF_STORED_WH
    a = np.full((h, w, 3), 128, np.uint8)
    a[:8, :8] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    return _encode(Image.fromarray(a), "JPEG", quality=95, exif=exif)
