"""Verification of (query, reference) pairs with local features: one callable class, run in process or on a
RayRunner's actors (pipeline.runners). Reference features are read by id from the index's catalog
(pipeline.catalog)."""

from __future__ import annotations

import json
import os
from typing import Callable

import numpy as np

from copyscope.matching.compact_features import mirrored, project
from copyscope.matching.local_features import BINARY_METHODS, LocalFeatures, LocalSpec
from copyscope.matching.shared_frames import INLIERS, box_of, inlier_record
from copyscope.matching.verification import Verification, verify_pair
from copyscope.pipeline.catalog import Catalog

EVIDENCE_COLUMNS = ("inliers", "matches", "inlier_ratio", "query_coverage", "reference_coverage", "mirrored")


def query_codes(q: LocalFeatures, spec: LocalSpec) -> tuple[LocalFeatures, LocalFeatures | None]:
    """A query's features (as extracted, or as stored) -> (them, their mirror) in the code space of `spec`;
    no mirror for binary features (ORB / AKAZE would need the query's flipped image)."""
    mirror = mirrored(q, spec) if spec.method not in BINARY_METHODS and len(q) else None
    return project(q, spec), mirror


def verify_stored(q: LocalFeatures, r: LocalFeatures, spec: LocalSpec, geometry: str = "homography",
                  codes: tuple[LocalFeatures, LocalFeatures | None] | None = None) -> Verification:
    """A query's features against a reference's stored features, matched as `spec` says (projection, ratio),
    with the mirror pass of SIFT-like features. codes: `query_codes(q, spec)`, when computed once for many
    references."""
    projected, mirror = codes or query_codes(q, spec)
    return verify_pair(projected, r, mirrored=mirror, geometry=geometry, ratio=spec.ratio)


def evidence_of(v: Verification, query_size: tuple[int, int], reference_size: tuple[int, int]) -> dict:
    """A Verification of images of these (h, w) sizes -> the evidence dict of a pair (EVIDENCE_COLUMNS,
    "query_box", "reference_box", and the inliers themselves under shared_frames.INLIERS)."""
    out = {c: getattr(v, c) for c in EVIDENCE_COLUMNS}
    out = {k: (x.item() if isinstance(x, np.generic) else x) for k, x in out.items()}
    return out | {"query_box": box_of(v.query_region), "reference_box": box_of(v.reference_region),
                  INLIERS: inlier_record(v, query_size, reference_size)}


def query_rows(pairs: dict[str, list[int]], local: dict[str, LocalFeatures]) -> list[dict]:
    """{query: [reference ids]} and each query's features -> the rows VerifyActor takes."""
    return [{"query": q, "candidates": np.asarray(refs, np.int64), "kp": local[q].keypoints,
             "desc": local[q].descriptors, "size": np.asarray(local[q].image_size, np.int32)}
            for q, refs in pairs.items() if refs]


def verify_through(runner, pairs: dict[str, list[int]], local: dict[str, LocalFeatures],
                   catalog_path: str | os.PathLike, spec: dict, geometry: str = "homography",
                   progress: Callable[[int], None] | None = None) -> dict[tuple[str, int], dict]:
    """{query: [reference ids]} with each query's features, verified by `runner` (pipeline.runners) against
    the catalog at `catalog_path` -> {(query, reference id): evidence dict}."""
    found = {}
    for batch in runner.verify(query_rows(pairs, local), str(catalog_path), spec, geometry):
        for q, r, e in zip(batch["query"], batch["reference"], batch["evidence"]):
            found[(str(q), int(r))] = json.loads(str(e))
        if progress:
            progress(len(batch["query"]))
    return found


class VerifyActor:
    """Rows {"query", "candidates" (C,) int64 reference ids, "kp", "desc", "size"} -> one row per pair:
    "query", "reference" (int64 id), "evidence" (JSON text of `evidence_of`)."""

    def __init__(self, catalog_path: str | os.PathLike, local: dict, geometry: str = "homography"):
        self.spec = LocalSpec(**local)
        self.catalog = Catalog(catalog_path, readonly=True, method=self.spec.method)
        self.geometry = geometry

    def __call__(self, batch: dict) -> dict:
        out: dict[str, list] = {"query": [], "reference": [], "evidence": []}
        for qid, cands, kp, desc, size in zip(batch["query"], batch["candidates"], batch["kp"], batch["desc"],
                                              batch["size"]):
            q = LocalFeatures(kp, desc, (int(size[0]), int(size[1])), self.spec.method)
            codes = query_codes(q, self.spec)
            for ref in np.asarray(cands, np.int64):
                r = self.catalog.features(int(ref))
                v = verify_stored(q, r, self.spec, self.geometry, codes)
                out["query"].append(qid)
                out["reference"].append(int(ref))
                out["evidence"].append(json.dumps(evidence_of(v, q.image_size, r.image_size)))
        return {"query": np.asarray(out["query"], dtype=str), "reference": np.asarray(out["reference"], np.int64),
                "evidence": np.asarray(out["evidence"], dtype=str)}


def verify_catalog_pairs(runner, queries: Catalog, query_ids: np.ndarray, reference_ids: np.ndarray,
                         reference_catalog: str | os.PathLike, local: dict, *, chunk_pairs: int = 20_000) -> list[dict]:
    """Pairs of stored images: (P,) query ids in `queries`, (P,) reference ids in the catalog at
    `reference_catalog` -> (P,) evidence dicts, verified through `runner` (pipeline.runners) a chunk of
    pairs at a time, so query features stay bounded in memory."""
    evidence: list[dict] = [{} for _ in range(len(query_ids))]
    for start in range(0, len(query_ids), chunk_pairs):
        rows = range(start, min(start + chunk_pairs, len(query_ids)))
        pairs: dict[str, list[int]] = {}
        for p in rows:
            pairs.setdefault(str(int(query_ids[p])), []).append(int(reference_ids[p]))
        found = verify_through(runner, pairs, {q: queries.features(int(q)) for q in pairs}, reference_catalog, local)
        for p in rows:
            evidence[p] = found[(str(int(query_ids[p])), int(reference_ids[p]))]
    return evidence
