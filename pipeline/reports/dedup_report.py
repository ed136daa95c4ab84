"""report.html of a dedup: each group as thumbnails, the keeper marked, and the evidence of each link
(identical pixels, or the verified pair drawn with its inliers)."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Callable

from PIL import Image
from tqdm import tqdm

from copyscope.matching.verification import Verification
from copyscope.pipeline.atomic import atomic_write
from copyscope.pipeline.decode import DecodeError, decode_image
from copyscope.jobs.dedup_actions import REFERENCE_PREFIX
from copyscope.matching.grouping import Group, Link
from copyscope.jobs.evaluate import thumbnail_data_uri
from copyscope.pipeline.reports.pair_drawing import draw_pair

DRAWING_SIZE = 640
_UNREADABLE = (OSError, ValueError, DecodeError, Image.DecompressionBombError)

_STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222}
section{border-top:1px solid #ccc;padding:8px 0}
figure{display:inline-block;margin:4px;width:168px;text-align:center;vertical-align:top}
figure img{max-width:160px;max-height:160px}
figure.keeper img{outline:4px solid #2a2}
figcaption{font-size:12px;word-break:break-all}
.links img{max-width:640px;display:block;margin:4px 0}
.missing{width:160px;height:120px;background:#eee;color:#888;display:flex;align-items:center;
justify-content:center;font-size:12px}
.note{color:#666;font-size:14px}
"""


def write_report(out_html: str | os.PathLike, root: str | os.PathLike, groups: list[Group], summary: dict, *,
                 verify: Callable[[str, str], Verification], max_groups: int = 200, progress: bool = False) -> None:
    """Write a self-contained page; link drawings are also kept as JPEGs in `links/` beside it.

    verify(path, linked_to) -> the Verification of a near link, drawn over both images.
    """
    out_html, root = Path(out_html), Path(root)
    shown = groups[:max_groups]
    sections = [_group_section(g, i, root, out_html.parent / "links", verify)
                for i, g in enumerate(tqdm(shown, desc="report", unit="group", disable=not progress))]
    counts = ", ".join(f"{k}: {_esc(v)}" for k, v in summary.items())
    more = f", the first {len(shown)} shown" if len(groups) > len(shown) else ""
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>copyscope dedup</title>'
            f"<style>{_STYLE}</style></head><body><h1>Duplicates in {_esc(root)}</h1>"
            f'<p class="note">{counts}</p><p class="note">{len(groups)} groups{more}; the keeper is outlined '
            f"in green.</p>{''.join(sections)}</body></html>\n")
    with atomic_write(out_html, "w") as f:
        f.write(page)


def _group_section(group: Group, number: int, root: Path, drawings: Path, verify) -> str:
    figures = "".join(_figure(root, p, keeper=i == 0) for i, p in enumerate(group.members))
    links = "".join(_link(root, link, drawings / f"group{number:05d}-{i:03d}.jpg", verify)
                    for i, link in enumerate(group.links))
    return f"<section><h3>Group {number + 1}</h3>{figures}<div class=\"links\">{links}</div></section>"


def _figure(root: Path, path: str, keeper: bool) -> str:
    label = ("<b>keeper</b><br>" if keeper else "") + _esc(path)
    cls = ' class="keeper"' if keeper else ""
    if path.startswith(REFERENCE_PREFIX):
        img = '<div class="missing">in the reference index</div>'
    else:
        try:
            img = f'<img src="{thumbnail_data_uri(root / path)}" alt="{_esc(path)}">'
        except _UNREADABLE as e:
            img = f'<div class="missing">{_esc(type(e).__name__)}</div>'
    return f"<figure{cls}>{img}<figcaption>{label}</figcaption></figure>"


def _link(root: Path, link: Link, drawing: Path, verify) -> str:
    text = f"<p>{_esc(link.path)} &rarr; {_esc(link.linked_to)}: {link.kind}, score {link.score:.3f}"
    if link.kind == "exact":
        return text + " (identical pixels)</p>"
    if link.linked_to.startswith(REFERENCE_PREFIX):
        return text + "</p>"
    try:
        query, reference = decode_image(root / link.path), decode_image(root / link.linked_to)
        _save_jpeg(drawing, draw_pair(query, reference, verify(link.path, link.linked_to), max_side=480))
        return text + f'</p><img src="{thumbnail_data_uri(drawing, DRAWING_SIZE)}" alt="inliers">'
    except _UNREADABLE as e:
        return text + f" (cannot draw: {_esc(e)})</p>"


def _save_jpeg(path: Path, image) -> None:
    """(h, w, 3) uint8 RGB -> JPEG file, atomically (PNG would cost ten times the time of a drawing)."""
    with atomic_write(path) as f:
        Image.fromarray(image).save(f, format="JPEG", quality=90)


def _esc(value) -> str:
    return html.escape(str(value), quote=True)
