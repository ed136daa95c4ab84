"""Candidate pairs of a dedup: a FAISS kNN self-join (and a join against a reference index), scored
with the re-ranking calibration once verified. Memory grows with N * k, never N * N."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from copyscope.matching.index import SearchIndex
from copyscope.matching.candidates import Candidates
from copyscope.matching.reranking import RerankOptions, either_way_scores, pair_features
from copyscope.matching.scoring import Calibration, tail_level
from copyscope.matching.shared_frames import INLIERS


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
              rerank: RerankOptions = RerankOptions(), batch_size: int = 4096,
              progress: bool = False) -> tuple[Pairs, np.ndarray]:
    """(N, D) vectors searched against `index` (top k) -> pairs with global score >= floor, and (N,)
    float32 background level of each vector, by the rule `match` uses (`reranking.query_background_level`):
    `scoring.tail_level` of its neighbours ranked rerank.background_skip .. + background_k (itself left out
    in a self join): how similar unrelated images of this collection are to it.

    self_join: `index` holds `vectors` in the same rows; self matches are dropped and each unordered
    pair is kept once, as (smaller row, larger row).
    """
    parts = []
    levels = np.zeros(len(vectors), np.float32)
    wide = max(k, rerank.background_skip + rerank.background_k) + int(self_join)  # enough for the level too
    with tqdm(total=len(vectors), desc="search", unit="img", disable=not progress) as bar:
        for start in range(0, len(vectors), batch_size):
            scores, rows = index.search(vectors[start:start + batch_size], wide)
            neighbours = scores[:, int(self_join):]  # a self join finds the image itself first
            levels[start:start + len(scores)] = tail_level(neighbours, rerank.background_skip)
            scores, rows = scores[:, :k + int(self_join)], rows[:, :k + int(self_join)]
            a = np.repeat(np.arange(start, start + len(scores)), scores.shape[1])
            b, s = rows.ravel(), scores.ravel()
            keep = (b >= 0) & (s >= floor) & ((a != b) if self_join else True)
            parts.append((a[keep], b[keep], s[keep]))
            bar.update(len(scores))
    if not parts:
        return Pairs.empty(), levels
    a, b, s = (np.concatenate(p) for p in zip(*parts))
    if self_join:
        a, b = np.minimum(a, b), np.maximum(a, b)
        order = np.lexsort((-s, b, a))
        a, b, s = a[order], b[order], s[order]
        first = np.ones(len(a), bool)
        first[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
        a, b, s = a[first], b[first], s[first]
    return Pairs(a.astype(np.int64), b.astype(np.int64), s.astype(np.float32)), levels


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


def score_pairs(pairs: Pairs, evidence: list[dict], level: np.ndarray, calibration: Calibration,
                opts: RerankOptions = RerankOptions(), best: np.ndarray | None = None) -> Scored:
    """Pairs, their verification evidence and (P,) background level -> Scored, with `copy_scores`."""
    inliers = np.array([e.get("inliers", 0) for e in evidence], np.int64)
    coverage = np.array([max(e.get("query_coverage", 0), e.get("reference_coverage", 0)) for e in evidence],
                        np.float64)
    return Scored(pairs, copy_scores(pairs, evidence, level, calibration, opts, best), inliers, coverage)


def copy_scores(pairs: Pairs, evidence: list[dict], level: np.ndarray, calibration: Calibration,
                opts: RerankOptions = RerankOptions(), best: np.ndarray | None = None) -> np.ndarray:
    """(P,) probability that one image of each pair is an edited copy of the other
    (`reranking.either_way_scores`), global scores normalised by the (P,) background level of each pair.
    best: (P,) similarity of the pair's best view (a region of one image against the other; default the
    global score), as `match` has it from its region search."""
    if not len(pairs):
        return np.empty(0, np.float64)
    n = len(pairs)
    best = pairs.global_score if best is None else np.maximum(best, pairs.global_score)
    cands = Candidates(np.arange(n), pairs.b, best_score=best, whole_score=pairs.global_score,
                       view=np.zeros(n, np.int64))
    features = pair_features(cands, np.asarray(level, np.float32), evidence, opts)
    return either_way_scores(features, calibration)


CROP_MARGIN = 0.05  # a content crop is widened by this share of its box's width and height on each side


def content_crops(evidence: list[dict], look: np.ndarray, margin: float = CROP_MARGIN
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The content the inliers of pairs `look` span, on either image: (C,) pair index, (C,) side (0: the pair's
    a, the query of its evidence; 1: b), (C, 4) float32 boxes (x0, y0, x1, y1) as fractions of that image's
    width and height, widened by `margin`. Pairs without an accepted map give none."""
    pair, side, boxes = [], [], []
    for p in np.asarray(look, np.int64):
        e = evidence[p]
        record = e.get(INLIERS)
        if not e.get("inliers") or not record:
            continue
        for s, name in enumerate(("query", "reference")):
            h, w = record[f"{name}_size"]
            x0, y0, x1, y1 = e[f"{name}_box"]
            dx, dy = margin * (x1 - x0), margin * (y1 - y0)
            box = np.clip([(x0 - dx) / w, (y0 - dy) / h, (x1 + dx) / w, (y1 + dy) / h], 0.0, 1.0)
            if box[2] > box[0] and box[3] > box[1]:
                pair.append(p), side.append(s), boxes.append(box)
    return (np.asarray(pair, np.int64), np.asarray(side, np.int64),
            np.asarray(boxes, np.float32).reshape(-1, 4))
