"""What every HTML report shares: one page style, escaping, the page skeleton and thumbnails as data URIs.

Reports are single self-contained files: images are embedded as `data:` URIs, nothing is fetched.
"""

from __future__ import annotations

import base64
import html
import io
import os

from PIL import Image

THUMB_SIZE = 160

STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;background:#fff}
table{border-collapse:collapse;margin:8px 0 20px}
td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}
th{background:#f2f2f2}
td.num{text-align:right;font-variant-numeric:tabular-nums}
section{border-top:1px solid #ccc;padding:8px 0}
figure{display:inline-block;margin:4px;width:168px;text-align:center;vertical-align:top}
figure img{max-width:160px;max-height:160px}
figure.keeper img{outline:4px solid #2a2}
figure.review img{outline:4px dashed #e80}
span.review{color:#fff;background:#d60;padding:0 4px;border-radius:3px;font-weight:bold}
span.act{color:#fff;background:#2a2;padding:0 4px;border-radius:3px}
figcaption{font-size:12px;word-break:break-all}
.links img{max-width:640px;display:block;margin:4px 0}
.missing{width:160px;height:120px;margin:auto;background:#eee;color:#888;display:flex;
align-items:center;justify-content:center;font-size:12px;overflow:hidden}
.note{color:#666;font-size:14px}
.warn{color:#a40}
"""


def esc(value) -> str:
    """Any value -> its str, escaped for HTML text and attribute values (quotes included)."""
    return html.escape(str(value), quote=True)


def page(title: str, body: str) -> str:
    """A whole HTML document: `title` (plain text, escaped here), STYLE, and `body` (HTML)."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{STYLE}</style></head><body>{body}</body></html>\n")


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def thumbnail_data_uri(path: str | os.PathLike, size: int = THUMB_SIZE) -> str:
    """A JPEG thumbnail, longest side `size`, as a `data:` URI. Raises OSError/ValueError if unreadable."""
    with Image.open(path) as im:
        im.draft("RGB", (size, size))
        im = im.convert("RGB")
    im.thumbnail((size, size))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
