"""Candidate pairs of a dedup: a FAISS kNN self-join (and a join against a reference index), verified
on Ray and scored with the re-ranking calibration. Memory grows with N * k, never N * N."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from tqdm import tqdm

from matching.index import SearchIndex
from matching.local_features import LocalFeatures
from pipeline.reranking import (
    Candidates, RerankOptions, directional_scores, pair_features, verify_candidates,
)


@dataclass(frozen=True)
class Pairs:
    """Candidate pairs: a (P,) int64 query rows, b (P,) int64 rows of the other side, global_score (P,) float32."""

    a: np.ndarray
    b: np.ndarray
    global_score: np.ndarray

    @classmethod
    def empty(cls) -> Pairs:
        return cls(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32))

    def __len__(self) -> int:
        return len(self.a)


def knn_pairs(vectors: np.ndarray, index: SearchIndex, k: int, floor: float, *, self_join: bool,
              tail: int = 8, batch_size: int = 4096, progress: bool = False) -> tuple[Pairs, np.ndarray]:
    """(N, D) vectors searched against `index` (top k) -> pairs with global score >= floor, and (N,)
    float32 background level of each vector: the mean score of its `tail` farthest of the k neighbours
    (how similar unrelated images of this collection are to it; a few copies among the k do not move it).

    self_join: `index` holds `vectors` in the same rows; self matches are dropped and each unordered
    pair is kept once, as (smaller row, larger row).
    """
    parts = []
    level = np.zeros(len(vectors), np.float32)
    with tqdm(total=len(vectors), desc="search", unit="img", disable=not progress) as bar:
        for start in range(0, len(vectors), batch_size):
            scores, rows = index.search(vectors[start:start + batch_size], k + int(self_join))
            level[start:start + len(scores)] = _tail_mean(scores, tail)
            a = np.repeat(np.arange(start, start + len(scores)), scores.shape[1])
            b, s = rows.ravel(), scores.ravel()
            keep = (b >= 0) & (s >= floor) & ((a != b) if self_join else True)
            parts.append((a[keep], b[keep], s[keep]))
            bar.update(len(scores))
    if not parts:
        return Pairs.empty(), level
    a, b, s = (np.concatenate(p) for p in zip(*parts))
    if self_join:
        a, b = np.minimum(a, b), np.maximum(a, b)
        order = np.lexsort((-s, b, a))
        a, b, s = a[order], b[order], s[order]
        first = np.ones(len(a), bool)
        first[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
        a, b, s = a[first], b[first], s[first]
    return Pairs(a.astype(np.int64), b.astype(np.int64), s.astype(np.float32)), level


def _tail_mean(scores: np.ndarray, tail: int) -> np.ndarray:
    """(Q, K) scores, best first, -inf where missing -> (Q,) mean of the last `tail` found (0 if none)."""
    found = np.isfinite(scores)
    last = found.sum(axis=1)
    cols = np.arange(scores.shape[1])
    take = found & (cols >= (last - tail)[:, None])
    total = np.where(take, scores, 0).sum(axis=1)
    return (total / np.maximum(take.sum(axis=1), 1)).astype(np.float32)


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


@dataclass(frozen=True)
class Scored:
    """Verified pairs: score (P,) copy probability, inliers (P,) int of the accepted geometric map (0: none),
    coverage (P,) the larger share of either image covered by the inliers' hull."""

    pairs: Pairs
    score: np.ndarray
    inliers: np.ndarray
    coverage: np.ndarray

    @classmethod
    def empty(cls) -> Scored:
        return cls(Pairs.empty(), np.empty(0, np.float64), np.empty(0, np.int64), np.empty(0, np.float64))

    def edges(self, threshold: float, min_inliers: int) -> np.ndarray:
        """(P,) bool: a geometric map with at least `min_inliers` inliers, and a score >= `threshold`."""
        return (self.inliers >= max(1, min_inliers)) & (self.score >= threshold)


def score_pairs(pairs: Pairs, evidence: list[dict], level: np.ndarray,
                opts: RerankOptions = RerankOptions()) -> Scored:
    """Pairs, their verification evidence and (P,) background level -> Scored, with `copy_scores`."""
    inliers = np.array([e.get("inliers", 0) for e in evidence], np.int64)
    coverage = np.array([max(e.get("query_coverage", 0), e.get("reference_coverage", 0)) for e in evidence],
                        np.float64)
    return Scored(pairs, copy_scores(pairs, evidence, level, opts), inliers, coverage)


def copy_scores(pairs: Pairs, evidence: list[dict], level: np.ndarray,
                opts: RerankOptions = RerankOptions()) -> np.ndarray:
    """(P,) probability that one image of each pair is an edited copy of the other (the larger of
    the two directional scores of `reranking.directional_scores`), global scores normalised by the
    (P,) background level of each pair as `match` normalises them against a background index."""
    if not len(pairs):
        return np.empty(0, np.float64)
    n = len(pairs)
    cands = Candidates(np.arange(n), pairs.b, pairs.global_score, pairs.global_score, np.zeros(n, np.int64))
    features = pair_features(cands, np.asarray(level, np.float32), evidence, opts)
    forward, reverse = directional_scores(features, opts.calibration)
    return np.maximum(forward, reverse)
