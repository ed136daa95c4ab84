"""A second look for the queries verification found nothing for: their best view verified again, closer.

A query whose verified candidates all have fewer than FEW_INLIERS inliers (a photo pasted small into another,
a meme or screenshot around a photo) gets the best view of its top candidate found by a region view cut out,
upscaled so that its long side is LOOK_SIDE and described (matching.local_features.extract_box_features); the
region's features are verified against the query's top candidates found by region views. Upscaled, a region
also matches the captions, app chrome and backgrounds that other references share, so its evidence has frames
taken out on both sides before it counts: the query's keypoints that are inliers to 3 or more candidates
(matching.shared_frames), and each reference's keypoints that are inliers to COLLECTION_BURST or more of its
NEIGHBOURS nearest references (its stored features against theirs: the frames the collection shares). What is
left replaces the first evidence when it has at least SECOND_LOOK_INLIERS inliers, more than the first look,
covering MIN_REFERENCE_COVERAGE of the reference.

Measured by benchmarks/box_reverify.py on the tuning sets: 352 of 673 queries looked at again; among their
pairs, copies with >= 8 inliers 0 -> 5 of 23 and wrong candidates 0 -> 0 of 3,497 (39 before frames were
taken out, 9 with the coverage floor alone). As shipped, it counted for 5 tuning pairs and 7 held-out pairs
(benchmarks/fit_calibration.py), all copies.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from copyscope.matching.candidates import Candidates, QueryViews
from copyscope.matching.local_features import LocalFeatures, LocalSpec, extract_box_features
from copyscope.matching.shared_frames import discount, frame_points
from copyscope.matching.verification import verify_pair
from copyscope.pipeline.decode import DecodeError, decode_image
from copyscope.pipeline.verify_stage import evidence_of

FEW_INLIERS = 4  # a query whose every verified candidate has fewer gets a second look
LOOK_SIDE = 512  # long side a region is upscaled to
SECOND_LOOK_INLIERS = 8
MIN_REFERENCE_COVERAGE = 0.03  # template captions and logos cover less of the reference
NEIGHBOURS = 10  # nearest references a reference's frames are looked for among
COLLECTION_BURST = 2  # a reference keypoint inlier to this many of them is a frame the collection shares


def looks_to_take(views: QueryViews, cands: Candidates, chosen: np.ndarray, found: dict[tuple[str, int], dict],
                  top: int) -> dict[str, tuple[np.ndarray, list[int]]]:
    """The verified pairs (`chosen` rows of `cands`, their evidence in `found`) -> {query: ((4,) box, reference
    ids)} for the queries with no candidate at FEW_INLIERS: the best view of its top candidate found by a region
    view, and its `top` candidates found by region views (by best score), which that box is verified against."""
    weak: dict[int, bool] = {}
    for p in chosen.tolist():
        q = int(cands.query[p])
        inliers = found.get((views.ids[q], int(cands.reference[p])), {}).get("inliers", 0)
        weak[q] = weak.get(q, True) and inliers < FEW_INLIERS
    by_region = [p for p in np.argsort(-cands.best_score, kind="stable").tolist()
                 if weak.get(int(cands.query[p])) and cands.view[p] != views.full[cands.query[p]]]
    out: dict[str, tuple[np.ndarray, list[int]]] = {}
    for p in by_region:  # best first: a query's first row gives its box
        refs = out.setdefault(views.ids[int(cands.query[p])], (views.view_box[cands.view[p]], []))[1]
        if len(refs) < top:
            refs.append(int(cands.reference[p]))
    return out


def box_features(paths: dict[str, str], boxes: dict[str, np.ndarray], sizes: dict[str, tuple[int, int]],
                 spec: LocalSpec, max_pixels: int, side: int = LOOK_SIDE) -> dict[str, LocalFeatures]:
    """{query: path}, {query: box} and {query: (h, w) it was embedded at} -> {query: the box's LocalFeatures, in
    the query's pixels}; a query whose file no longer decodes, or no longer to that size (changed since it was
    embedded), is left out: its first look stands."""
    out = {}
    for query, box in boxes.items():
        try:
            image = decode_image(paths[query], max_pixels=max_pixels)
        except DecodeError:
            continue
        if image.shape[:2] == tuple(sizes.get(query, ())):
            out[query] = extract_box_features(image, box, spec.method, side=side, max_keypoints=spec.max_keypoints)
    return out


def collection_frames(neighbours: dict[int, list[int]], features: Callable[[int], LocalFeatures], spec: LocalSpec,
                      geometry: str, partner_of: Callable[[list[tuple[int, int]]], dict]) -> dict[int, np.ndarray]:
    """{reference id: its nearest other reference ids} -> {id: (R, 2) points of its stored keypoints that are
    inliers to COLLECTION_BURST or more of them}. features(id): stored LocalFeatures; partner_of(pairs): the
    partner each (id, neighbour) counts as (versions of one photo count once, or a collection holding three
    versions of a photo would hide every copy of it)."""
    pairs = [(r, n) for r, near in neighbours.items() for n in near]
    stored = {i: features(i) for i in {i for pair in pairs for i in pair}}  # each read once
    evidences = [evidence_of(verify_pair(stored[r], stored[n], geometry=geometry, ratio=spec.ratio),
                             stored[r].image_size, stored[n].image_size) for r, n in pairs]
    return frame_points(pairs, evidences, COLLECTION_BURST, sides=("query",), partner_of=partner_of(pairs))


def second_looks(first: dict[tuple[str, int], dict], boxed: dict[tuple[str, int], dict],
                 frames: dict[int, np.ndarray], boxes: dict[str, np.ndarray]) -> dict[tuple[str, int], dict]:
    """First evidence, a box's evidence of the same pairs (query frames discounted already), the collection's
    reference frames and each query's box -> the pairs whose second look counts, their evidence marked
    "second_look" with the box looked at ("look_box": x0, y0, x1, y1 in the query's pixels, for redrawing)."""
    out = {}
    for pair, evidence in boxed.items():
        evidence = discount(evidence, None, frames.get(pair[1]))
        if (evidence["inliers"] >= SECOND_LOOK_INLIERS and evidence["reference_coverage"] >= MIN_REFERENCE_COVERAGE
                and evidence["inliers"] > first.get(pair, {}).get("inliers", 0)):
            out[pair] = evidence | {"second_look": True, "look_box": [float(v) for v in boxes[pair[0]]]}
    return out
