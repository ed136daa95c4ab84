"""report.html of a dedup: each group as thumbnails, the keeper marked, and the evidence of each link
(identical pixels, or the verified pair drawn with its inliers), each link and copy labelled "act" or
"review" (a link below the act threshold: the copy is left for a person to look at)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from PIL import Image
from tqdm import tqdm

from copyscope.matching.verification import Verification
from copyscope.pipeline.atomic import atomic_write
from copyscope.pipeline.decode import DecodeError, decode_image
from copyscope.matching.grouping import Group, Link, link_is_safe, safe_members
from copyscope.pipeline.reports.html import esc as _esc, page, thumbnail_data_uri
from copyscope.pipeline.reports.pair_drawing import draw_pair

DRAWING_SIZE = 640
_UNREADABLE = (OSError, ValueError, DecodeError, Image.DecompressionBombError)


def write_report(out_html: str | os.PathLike, root: str | os.PathLike, groups: list[Group], summary: dict, *,
                 verify: Callable[[str, str], Verification], act_threshold: float, max_groups: int = 200,
                 progress: bool = False, reference_prefix: str = "index:") -> None:
    """Write a self-contained page; link drawings are also kept as JPEGs in `links/` beside it.

    verify(path, linked_to) -> the Verification of a near link, drawn over both images.
    act_threshold: links below it (and the copies behind them) are labelled "review", the others "act".
    reference_prefix: how a member that is an indexed reference, not a file under root, begins (the
    dedup plan's `copyscope.jobs.dedup_actions.REFERENCE_PREFIX`, passed in: pipeline never imports jobs).
    """
    out_html, root = Path(out_html), Path(root)
    shown = groups[:max_groups]
    sections = [_group_section(g, i, root, out_html.parent / "links", verify, reference_prefix, act_threshold)
                for i, g in enumerate(tqdm(shown, desc="report", unit="group", disable=not progress))]
    counts = ", ".join(f"{k}: {_esc(v)}" for k, v in summary.items())
    more = f", the first {len(shown)} shown" if len(groups) > len(shown) else ""
    body = (f"<h1>Duplicates in {_esc(root)}</h1>"
            f'<p class="note">{counts}</p><p class="note">{len(groups)} groups{more}; the keeper is outlined '
            f'in green. A link scoring below the act threshold {act_threshold:g} is marked '
            f'<span class="review">review</span>: its copy is dashed orange and no action touches it.</p>'
            f"{''.join(sections)}")
    with atomic_write(out_html, "w") as f:
        f.write(page("copyscope dedup", body))


def _group_section(group: Group, number: int, root: Path, drawings: Path, verify, prefix: str,
                   act_threshold: float) -> str:
    safe = safe_members(group, act_threshold)
    figures = "".join(_figure(root, p, i == 0, prefix, safe[i]) for i, p in enumerate(group.members))
    links = "".join(_link(root, link, drawings / f"group{number:05d}-{i:03d}.jpg", verify, prefix,
                          link_is_safe(link, act_threshold))
                    for i, link in enumerate(group.links))
    return f"<section><h3>Group {number + 1}</h3>{figures}<div class=\"links\">{links}</div></section>"


def _figure(root: Path, path: str, keeper: bool, prefix: str, safe: bool) -> str:
    if keeper:
        label, cls = "<b>keeper</b><br>", ' class="keeper"'
    elif safe:
        label, cls = "", ""
    else:
        label, cls = '<span class="review">review</span><br>', ' class="review"'
    label += _esc(path)
    if path.startswith(prefix):
        img = '<div class="missing">in the reference index</div>'
    else:
        try:
            img = f'<img src="{thumbnail_data_uri(root / path)}" alt="{_esc(path)}">'
        except _UNREADABLE as e:
            img = f'<div class="missing">{_esc(type(e).__name__)}</div>'
    return f"<figure{cls}>{img}<figcaption>{label}</figcaption></figure>"


def _link(root: Path, link: Link, drawing: Path, verify, prefix: str, safe: bool) -> str:
    label = '<span class="act">act</span>' if safe else '<span class="review">review</span>'
    text = f"<p>{label} {_esc(link.path)} &rarr; {_esc(link.linked_to)}: {link.kind}, score {link.score:.3f}"
    if link.kind == "exact":
        return text + " (identical pixels)</p>"
    if link.linked_to.startswith(prefix):
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
