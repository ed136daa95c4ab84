"""Ray Data stage verifying (query, candidate) pairs with local features, on CPU workers."""

from __future__ import annotations

import numpy as np

from matching.local_features import BINARY_METHODS, LocalFeatures, mirror_features
from matching.verification import Verification, verify_pair
from pipeline.local_store import ReferenceFeatures

EVIDENCE_COLUMNS = ("inliers", "matches", "inlier_ratio", "query_coverage", "reference_coverage", "mirrored")


def _bbox(region: np.ndarray) -> np.ndarray:
    """(K, 2) polygon -> (4,) float32 x0, y0, x1, y1 (zeros when empty)."""
    if len(region) == 0:
        return np.zeros(4, np.float32)
    return np.concatenate([region.min(axis=0), region.max(axis=0)]).astype(np.float32)


def verify_stored(q: LocalFeatures, r: LocalFeatures, geometry: str = "homography") -> Verification:
    """Verify stored features of a query against a reference, with the free mirror pass of SIFT-like
    features (ORB / AKAZE would need the query's flipped image, which stored features cannot give)."""
    mirrored = mirror_features(q) if q.method not in BINARY_METHODS and len(q) else None
    return verify_pair(q, r, mirrored=mirrored, geometry=geometry)


class VerifyActor:
    """Rows {"query", "candidates" ("\\n"-joined ids), "kp", "desc", "size"} -> one row per pair with
    the verification evidence (EVIDENCE_COLUMNS, "query_box", "reference_box")."""

    def __init__(self, index_dir: str, fingerprint: dict, geometry: str = "homography"):
        self.references = ReferenceFeatures(index_dir, fingerprint)
        self.geometry = geometry

    def __call__(self, batch: dict) -> dict:
        out: dict[str, list] = {k: [] for k in ("query", "reference", *EVIDENCE_COLUMNS, "query_box",
                                                "reference_box")}
        method = self.references.method
        for qid, cands, kp, desc, size in zip(batch["query"], batch["candidates"], batch["kp"], batch["desc"],
                                              batch["size"]):
            q = LocalFeatures(kp, desc, (int(size[0]), int(size[1])), method)
            for ref in str(cands).split("\n") if cands else []:
                v = verify_stored(q, self.references[ref], self.geometry)
                out["query"].append(qid)
                out["reference"].append(ref)
                for col in EVIDENCE_COLUMNS:
                    out[col].append(getattr(v, col))
                out["query_box"].append(_bbox(v.query_region))
                out["reference_box"].append(_bbox(v.reference_region))
        return {k: np.stack(v) if k.endswith("_box") and v else np.asarray(v) for k, v in out.items()}
