"""Hard negatives of copy detection: templates shared by many photos, non-overlapping crops of one
photo, and the fine-grained groups of look-alike photos.

A template is one existing edit with its params frozen (an app frame for `screenshot`, a caption style
for `meme`, a host photo and canvas for `paste_into`), so every photo put into it shares all but the
photo: two photos in one template are not copies of each other. `template_step` gives the chain step
that puts a photo into a template (apply it with `apply_chain`, record it as JSON like any chain).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Sequence

import numpy as np

from copyscope.pipeline.augment.imaging import box_pixels
from copyscope.pipeline.augment.registry import get_edit

# Template family -> the edit it freezes.
FAMILIES = {"screenshot": "screenshot", "meme": "meme", "background": "paste_into"}
# Params drawn anew for each photo put into a template (the others stay frozen): where it lands.
VARYING = {"paste_into": ("x", "y")}
# The samplers of the template edits ignore the image size; this one is passed to them.
_NOMINAL_SIDE = 512

# Look-alike groups of ImageNet classes: inclusive wnid ranges (wnids compare as strings, n + 8 digits).
FINE_GRAINED = (
    ("bird", "n01514668", "n01622779"),   # cock .. great grey owl
    ("snake", "n01728572", "n01756291"),  # thunder snake .. sidewinder
    ("bird", "n01795545", "n01860187"),   # black grouse .. black swan
    ("bird", "n02002556", "n02058221"),   # white stork .. albatross
    ("dog", "n02085620", "n02113978"),    # chihuahua .. mexican hairless
)
_WNID = re.compile(r"n\d{8}")


@dataclass(frozen=True)
class Template:
    """One frozen edit. name: "<family>_<i>"; params: the edit's params ("other": the host photo's
    key for a background), VARYING ones included but redrawn for each photo."""

    name: str
    family: str
    params: dict

    @property
    def edit(self) -> str:
        return FAMILIES[self.family]

    @property
    def kind(self) -> str:
        """"template_<family>", the kind benchmarks record."""
        return f"template_{self.family}"


def sample_templates(rng: np.random.Generator, k: int, hosts: Sequence[str]) -> list[Template]:
    """k templates of each family, screenshots then memes then backgrounds; background i is pasted
    into hosts[i] (at least k keys of photos)."""
    if len(hosts) < k:
        raise ValueError(f"{k} background templates need {k} host photos, got {len(hosts)}")
    out = []
    for family, edit in FAMILIES.items():
        for i in range(k):
            params = get_edit(edit).sample(rng, _NOMINAL_SIDE, _NOMINAL_SIDE)
            if get_edit(edit).needs_other:
                params = {"other": str(hosts[i]), **params}
            out.append(Template(f"{family}_{i}", family, params))
    return out


def template_step(template: Template, rng: np.random.Generator) -> tuple[str, dict]:
    """(edit name, params) putting one photo into `template`; its VARYING params drawn from `rng`
    (no draw for a template without any)."""
    params = dict(template.params)
    varying = VARYING.get(template.edit, ())
    if varying:
        fresh = get_edit(template.edit).sample(rng, _NOMINAL_SIDE, _NOMINAL_SIDE)
        params.update({key: fresh[key] for key in varying})
    return template.edit, params


def crop_pair(rng: np.random.Generator, height: int, width: int, fraction: float = 0.45) -> tuple[dict, dict]:
    """Params (A, B) of two `crop` edits of one (height, width) image that share no pixel: each
    `fraction` (< 0.5) of the longer side and all of the other, at its two ends; which end is A is
    drawn from `rng`. Raises ValueError for a longer side under 2 pixels."""
    if not 0 < fraction < 0.5:
        raise ValueError(f"crop fraction must be in (0, 0.5), got {fraction}")
    if max(height, width) < 2:
        raise ValueError(f"a {height}x{width} image cannot hold two crops that do not overlap")
    ends = [0.0, 1.0 - fraction]
    if rng.random() < 0.5:
        ends.reverse()
    along = "left" if width >= height else "top"
    size = "width" if along == "left" else "height"
    boxes = tuple({"top": 0.0, "left": 0.0, "height": 1.0, "width": 1.0, along: e, size: fraction} for e in ends)
    if _overlap(box_pixels(boxes[0], height, width), box_pixels(boxes[1], height, width)):
        raise ValueError(f"a {height}x{width} image cannot hold two crops of {fraction} that do not overlap")
    return boxes


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    """Whether two (top, bottom, left, right) pixel boxes share a pixel."""
    return a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]


def fine_grained_group(name: str) -> str | None:
    """"dog", "bird", "snake" or None for a photo named by its ImageNet wnid (n02085620_chihuahua.jpg,
    any folder, with or without extension)."""
    wnid = PurePosixPath(name.replace("\\", "/")).name.split("_", 1)[0].split(".", 1)[0]
    if not _WNID.fullmatch(wnid):
        return None
    return next((group for group, lo, hi in FINE_GRAINED if lo <= wnid <= hi), None)
