"""Evidence that only a shared frame explains: bursty and ignored keypoints, taken out of a pair's inliers.

A template (an app's chrome, a meme's caption style, a background many photos were pasted onto, a
logo) puts the same keypoints, in the same layout, into many different images, and geometric
verification happily maps those keypoints between any two of them. Such inliers say "same frame",
not "same photo". A keypoint of an image is *a frame keypoint* when it is an inlier of the accepted
maps to `min_images` or more different images (bursty: shared far more widely than copies of one
photo are), or to any image of an ignore bank (known app UIs, meme templates, logos). The frame is
the neighbourhood of its keypoints (within FRAME_RADIUS of the image diagonal: the other glyphs of a
caption, the rest of a header bar, which fewer images happened to match): every inlier in it is
removed from every pair of that image, and each pair's inliers, inlier ratio, coverages and boxes are
recounted from the inliers that remain, the content. Fewer than `MIN_CONTENT_INLIERS` left means no
map at all.

Each evidence dict carries its inliers under INLIERS: {"query", "reference": (I,) keypoint rows,
"query_xy", "reference_xy": (I, 2) points in each image's pixels, "query_size", "reference_size": (h, w)}.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Hashable, Sequence

import numpy as np

from copyscope.matching.verification import Verification, hull_region

INLIERS = "inlier_keypoints"
BURST_IMAGES = 3
FRAME_RADIUS = 0.04
MIN_CONTENT_INLIERS = 4
DUPLICATE_COSINE = 0.8  # descriptor similarity of two versions of one photo (SSCD: copies score >= ~0.75)
# Versions of one photo are few; more candidates than this as close to each other are photos on one template
# (pasted small onto one background, their descriptors are as close: benchmarks' tuning set seed 11 gave groups
# of 7 to 10 such siblings among a query's 10 candidates, and every other group there 2 or 3).
MAX_VERSIONS = 4
SIDES = ("query", "reference")


def inlier_record(v: Verification, query_size: tuple[int, int], reference_size: tuple[int, int]) -> dict:
    """A Verification -> its INLIERS record (empty lists when no map was accepted)."""
    mask = v.inlier_mask
    return {"query": v.pairs[mask, 0].tolist(), "reference": v.pairs[mask, 1].tolist(),
            "query_xy": np.round(v.query_points[mask], 1).tolist(),
            "reference_xy": np.round(v.reference_points[mask], 1).tolist(),
            "query_size": list(query_size), "reference_size": list(reference_size)}


def frame_points(owners: Sequence[tuple[Hashable, Hashable]], evidences: Sequence[dict], min_images: int,
                 sides: Sequence[str] = SIDES, partner_of: dict | None = None) -> dict[Hashable, np.ndarray]:
    """Bursty keypoints: (P,) (query image, reference image) of each pair and its evidence ->
    {image: (R, 2) float32 points of its keypoints that are inliers of pairs with `min_images` or more
    distinct partners}.

    sides: whose keypoints are counted: "query" (each query's over its candidates), or both in a collection
    matched against itself (dedup), where an image is the query of some pairs and the reference of others
    and its keypoint rows are the same either way. partner_of: (query, reference) -> the partner a query
    keypoint counts for that pair (default the reference): versions of one photo (copies of each other,
    `duplicate_groups`) count as one partner, or a bank holding three versions of a photo would hide
    every copy of it as a frame."""
    partners: dict[tuple[Hashable, int], set] = defaultdict(set)
    where: dict[tuple[Hashable, int], list[float]] = {}
    for (q, r), e in zip(owners, evidences):
        record = e.get(INLIERS)
        if not record:
            continue
        for side, owner, other in (("query", q, (partner_of or {}).get((q, r), r)), ("reference", r, q)):
            if side in sides:
                for row, xy in zip(record[side], record[f"{side}_xy"]):
                    partners[(owner, row)].add(other)
                    where[(owner, row)] = xy
    found: dict[Hashable, list[list[float]]] = defaultdict(list)
    for (owner, row), seen in partners.items():
        if len(seen) >= min_images:
            found[owner].append(where[(owner, row)])
    return {owner: np.asarray(points, np.float32).reshape(-1, 2) for owner, points in found.items()}


def duplicate_groups(ids: Sequence[Hashable], vectors: np.ndarray, min_cosine: float = DUPLICATE_COSINE,
                     max_size: int = MAX_VERSIONS) -> dict:
    """(N,) image ids and their (N, D) L2-normalised descriptors -> {id: the smallest id of its group}, the
    groups joined by pairs of cosine >= min_cosine (versions of one photo, copies of each other). A group of
    more than max_size is a shared template, not versions: each of its members stays a group of its own."""
    n = len(ids)
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if n > 1:
        sims = np.asarray(vectors, np.float32) @ np.asarray(vectors, np.float32).T
        for a, b in zip(*np.nonzero(np.triu(sims >= min_cosine, k=1))):
            parent[root(int(a))] = root(int(b))
    members: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        members[root(i)].append(i)
    return {ids[i]: (min(ids[j] for j in group) if len(group) <= max_size else ids[i])
            for group in members.values() for i in group}


def inlier_points(evidences: Sequence[dict], side: str = "query") -> np.ndarray:
    """(N, 2) float32 points of every inlier on `side` of these pairs (an image's inliers to an ignore bank)."""
    points = [xy for e in evidences if e.get("inliers") and e.get(INLIERS) for xy in e[INLIERS][f"{side}_xy"]]
    return np.asarray(points, np.float32).reshape(-1, 2)


def _near(points: np.ndarray, frame: np.ndarray | None, size: Sequence[int]) -> np.ndarray:
    """(N,) bool: points within FRAME_RADIUS of the diagonal of an image of `size` from a frame point."""
    if frame is None or not len(frame) or not len(points):
        return np.zeros(len(points), bool)
    radius = FRAME_RADIUS * float(np.hypot(*size))
    d2 = ((points[:, None, :] - frame[None, :, :]) ** 2).sum(axis=-1)
    return d2.min(axis=1) <= radius * radius


def discount(evidence: dict, query_frame: np.ndarray | None = None,
             reference_frame: np.ndarray | None = None) -> dict:
    """A pair's evidence without the inliers near these (R, 2) frame points of either image -> recounted
    evidence (inliers, inlier_ratio, coverages, boxes) with "frame_inliers": how many inliers were removed."""
    record = evidence.get(INLIERS)
    if not record or (query_frame is None and reference_frame is None):
        return evidence if not record else evidence | {"frame_inliers": evidence.get("frame_inliers", 0)}
    keep = ~_near(np.asarray(record["query_xy"], np.float32).reshape(-1, 2), query_frame, record["query_size"])
    keep &= ~_near(np.asarray(record["reference_xy"], np.float32).reshape(-1, 2), reference_frame,
                   record["reference_size"])
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
                    ignored: dict[Hashable, np.ndarray] | None = None, partner_of: dict | None = None) -> list[dict]:
    """Every pair's evidence with the inliers in a frame removed on `sides`: near bursty keypoints
    (`frame_points`, partners counted through `partner_of`) and, per image, near the (R, 2) points
    `ignored` (its inliers to an ignore bank)."""
    frames = frame_points(owners, evidences, min_images, sides, partner_of)
    for owner, extra in (ignored or {}).items():
        frames[owner] = np.concatenate([frames.get(owner, np.empty((0, 2), np.float32)), extra])
    query_side, reference_side = "query" in sides, "reference" in sides
    return [discount(e, frames.get(q) if query_side else None, frames.get(r) if reference_side else None)
            for (q, r), e in zip(owners, evidences)]
