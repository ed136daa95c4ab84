"""Evidence that only a shared frame explains: bursty and ignored keypoints, taken out of a pair's inliers.

A template (an app's chrome, a meme's caption style, a background many photos were pasted onto, a
logo) puts the same keypoints, in the same layout, into many different images, and geometric
verification happily maps those keypoints between any two of them. Such inliers say "same frame",
not "same photo". A keypoint of an image is *explained by a frame* when it is an inlier of the
accepted maps to `min_images` or more different images (bursty: shared far more widely than copies of
one photo are), or to any image of an ignore bank (known app UIs, meme templates, logos). Those
keypoints are removed from every pair of that image, and each pair's inliers, inlier ratio, coverages
and boxes are recounted from the inliers that remain: the content. Fewer than `MIN_CONTENT_INLIERS`
left means no map at all.

Each evidence dict carries its inliers under INLIERS: {"query", "reference": (I,) keypoint rows,
"query_xy", "reference_xy": (I, 2) points in each image's pixels, "query_size", "reference_size": (h, w)}.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Hashable, Sequence

import numpy as np

from copyscope.matching.verification import Verification, hull_region

INLIERS = "inlier_keypoints"
BURST_IMAGES = 4
MIN_CONTENT_INLIERS = 4
SIDES = ("query", "reference")


def inlier_record(v: Verification, query_size: tuple[int, int], reference_size: tuple[int, int]) -> dict:
    """A Verification -> its INLIERS record (empty lists when no map was accepted)."""
    mask = v.inlier_mask
    return {"query": v.pairs[mask, 0].tolist(), "reference": v.pairs[mask, 1].tolist(),
            "query_xy": np.round(v.query_points[mask], 1).tolist(),
            "reference_xy": np.round(v.reference_points[mask], 1).tolist(),
            "query_size": list(query_size), "reference_size": list(reference_size)}


def frame_rows(owners: Sequence[tuple[Hashable, Hashable]], evidences: Sequence[dict], min_images: int,
               sides: Sequence[str] = SIDES, groups: dict[Hashable, Hashable] | None = None
               ) -> dict[Hashable, np.ndarray]:
    """Bursty keypoints: (P,) (query image, reference image) of each pair and its evidence ->
    {image: (R,) keypoint rows that are inliers of pairs with `min_images` or more distinct partners}.

    sides: whose keypoints are counted: "query" (each query's over its candidates), or both in a collection
    matched against itself (dedup), where an image is the query of some pairs and the reference of others
    and its keypoint rows are the same either way. groups: image -> group (default: itself); partners of
    one group (near-identical copies) count once."""
    partners: dict[tuple[Hashable, int], set] = defaultdict(set)
    for (q, r), e in zip(owners, evidences):
        record = e.get(INLIERS)
        if not record:
            continue
        for side, owner, other in (("query", q, r), ("reference", r, q)):
            if side in sides:
                key = other if groups is None else groups.get(other, other)
                for row in record[side]:
                    partners[(owner, row)].add(key)
    found: dict[Hashable, list[int]] = defaultdict(list)
    for (owner, row), seen in partners.items():
        if len(seen) >= min_images:
            found[owner].append(row)
    return {owner: np.asarray(sorted(rows), np.int64) for owner, rows in found.items()}


def discount(evidence: dict, query_rows: np.ndarray | None = None,
             reference_rows: np.ndarray | None = None) -> dict:
    """A pair's evidence without the inliers at these keypoint rows of either image -> recounted evidence
    (inliers, inlier_ratio, coverages, boxes) with "frame_inliers": how many inliers were removed."""
    record = evidence.get(INLIERS)
    if not record or (query_rows is None and reference_rows is None):
        return evidence if not record else evidence | {"frame_inliers": evidence.get("frame_inliers", 0)}
    q, r = np.asarray(record["query"], np.int64), np.asarray(record["reference"], np.int64)
    keep = np.ones(len(q), bool)
    if query_rows is not None:
        keep &= ~np.isin(q, query_rows)
    if reference_rows is not None:
        keep &= ~np.isin(r, reference_rows)
    removed = int((~keep).sum())
    if not removed:
        return evidence | {"frame_inliers": evidence.get("frame_inliers", 0)}
    if keep.sum() < MIN_CONTENT_INLIERS:
        keep[:] = False
    kept = {side: np.asarray(record[side])[keep].tolist() for side in ("query", "reference", "query_xy",
                                                                         "reference_xy")}
    out = evidence | {INLIERS: record | kept, "frame_inliers": evidence.get("frame_inliers", 0) + removed}
    inliers = int(keep.sum())
    out["inliers"] = inliers
    out["inlier_ratio"] = inliers / evidence["matches"] if evidence.get("matches") else 0.0
    for side in SIDES:
        points = np.asarray(kept[f"{side}_xy"], np.float32).reshape(-1, 2)
        hull, coverage = hull_region(points, tuple(record[f"{side}_size"]))
        out[f"{side}_coverage"] = coverage
        out[f"{side}_box"] = box_of(hull)
    return out


def box_of(region: np.ndarray) -> list[float]:
    """(K, 2) polygon -> [x0, y0, x1, y1] (zeros when empty)."""
    if len(region) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return np.concatenate([region.min(axis=0), region.max(axis=0)]).astype(np.float32).tolist()


def discount_frames(owners: Sequence[tuple[Hashable, Hashable]], evidences: Sequence[dict], *,
                    sides: Sequence[str] = SIDES, min_images: int = BURST_IMAGES,
                    ignored: dict[Hashable, np.ndarray] | None = None,
                    groups: dict[Hashable, Hashable] | None = None) -> list[dict]:
    """Every pair's evidence with the keypoints explained by a frame removed on `sides`: bursty rows
    (`frame_rows`) and, per image, rows `ignored` (its inliers to an ignore bank)."""
    rows = frame_rows(owners, evidences, min_images, sides, groups)
    for owner, extra in (ignored or {}).items():
        rows[owner] = np.union1d(rows.get(owner, np.empty(0, np.int64)), extra)
    query_side, reference_side = "query" in sides, "reference" in sides
    return [discount(e, rows.get(q) if query_side else None, rows.get(r) if reference_side else None)
            for (q, r), e in zip(owners, evidences)]
