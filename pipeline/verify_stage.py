"""Ray Data stage verifying (query, candidate) pairs with local features, on CPU workers."""

from __future__ import annotations

from typing import Callable

import numpy as np
import ray
from tqdm import tqdm

from copyscope.matching.local_features import BINARY_METHODS, LocalFeatures, mirror_features
from copyscope.matching.verification import Verification, verify_pair
from copyscope.matching.pairs import Pairs
from copyscope.matching.reranking import RerankOptions
from copyscope.pipeline.local_store import ReferenceFeatures

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

def verify_candidates(pairs_query: list[str], pairs_reference: list[str], local: dict, index_dir: str,
                      fingerprint: dict, opts: RerankOptions, progress: bool) -> dict:
    """Run the Ray verify stage -> {(query, reference): evidence dict}. local: query id -> LocalFeatures."""
    by_query: dict[str, list[str]] = {}
    for q, r in zip(pairs_query, pairs_reference):
        by_query.setdefault(q, []).append(r)
    rows = [{"query": q, "candidates": "\n".join(refs), "kp": local[q].keypoints, "desc": local[q].descriptors,
             "size": np.asarray(local[q].image_size, np.int32)} for q, refs in by_query.items()]
    evidence: dict[tuple[str, str], dict] = {}
    if not rows:
        return evidence
    workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
    ds = ray.data.from_items(rows, override_num_blocks=min(len(rows), 4 * workers))
    ds = ds.map_batches(VerifyActor, batch_size=4, batch_format="numpy", num_cpus=1,
                        fn_constructor_kwargs={"index_dir": str(index_dir), "fingerprint": fingerprint,
                                               "geometry": opts.geometry},
                        compute=ray.data.ActorPoolStrategy(size=workers))
    with tqdm(total=len(pairs_query), desc="verify", unit="pair", disable=not progress) as bar:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for i, (q, r) in enumerate(zip(batch["query"], batch["reference"])):
                evidence[(str(q), str(r))] = {c: batch[c][i].item() for c in EVIDENCE_COLUMNS} | {
                    "query_box": batch["query_box"][i].tolist(), "reference_box": batch["reference_box"][i].tolist()}
            bar.update(len(batch["query"]))
    return evidence

def verify_pairs(pairs: Pairs, query_ids: list[str], reference_ids: list[str], query_shard: np.ndarray,
                 load_local: Callable[[int], dict[str, LocalFeatures]], index_dir: str, fingerprint: dict,
                 *, chunk_pairs: int = 50_000, progress: bool = False) -> list[dict]:
    """Verify each pair (query row a, reference row b of the index in `index_dir`) -> (P,) evidence dicts.

    query_shard: (Nq,) shard of each query row; load_local(shard) -> {id: LocalFeatures} of that
    shard. Pairs are verified a few query shards at a time, so query features stay bounded in memory.
    """
    evidence: list[dict] = [{} for _ in range(len(pairs))]
    opts = RerankOptions(mode="verify")
    for rows in _chunks_by_shard(query_shard[pairs.a], chunk_pairs):
        local: dict[str, LocalFeatures] = {}
        for shard in np.unique(query_shard[pairs.a[rows]]):
            local.update(load_local(int(shard)))
        qs = [query_ids[i] for i in pairs.a[rows]]
        rs = [reference_ids[i] for i in pairs.b[rows]]
        found = verify_candidates(qs, rs, local, index_dir, fingerprint, opts, progress)
        for p, q, r in zip(rows, qs, rs):
            evidence[p] = found[(q, r)]
    return evidence


def _chunks_by_shard(shard_of_pair: np.ndarray, chunk_pairs: int) -> list[np.ndarray]:
    """Pair indices grouped by whole query shards, about `chunk_pairs` pairs a chunk."""
    order = np.argsort(shard_of_pair, kind="stable")
    _, counts = np.unique(shard_of_pair[order], return_counts=True)
    chunks, start = [], 0
    for end in np.cumsum(counts):
        if end - start >= chunk_pairs:
            chunks.append(order[start:end])
            start = end
    if start < len(order):
        chunks.append(order[start:])
    return chunks
