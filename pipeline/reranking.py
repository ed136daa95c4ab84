"""Re-ranking of FAISS candidates: region search, background normalisation, local verification, scoring.

    views (Q queries x V views) --FAISS--> candidates with global scores (max over views)
      --background--> stretched scores --top `verify_top`--> Ray verify stage --> evidence
      --calibration--> final score in 0..1 (probability that the query is a copy of the reference)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import ray
from tqdm import tqdm

from matching.index import SearchIndex
from matching.scoring import Calibration, background_level, normalise, stretch
from pipeline.verify_stage import EVIDENCE_COLUMNS, VerifyActor

RERANK_MODES = ("none", "verify", "full")
SCORE_NORMS = ("stretch", "subtract")
FEATURES = ("global", "region", "log_inliers", "inlier_ratio", "query_coverage", "reference_coverage")
# Fitted by benchmarks/calibrate.py (--l2 0.01) on the candidate pairs of two tuning benchmarks built
# from one half of ../shared/photos (seeds 11 and 12); the README reports it on the other half.
DEFAULT_CALIBRATION = Calibration(weights=(16.994, 24.933, 2.854, -3.898, -1.225, 0.273), bias=-8.241)


@dataclass(frozen=True)
class RerankOptions:
    """mode: none (global scores only), verify (local verification), full (verify + region search).

    regions: sub-regions searched per query in full mode. verify_top: candidates verified per query.
    background_k: nearest background images averaged into the background level.
    score_norm: how global scores are normalised by that level: "stretch" (the calibration is fitted
    on stretched scores) or "subtract" (SSCD's score normalisation, with `beta`).
    """

    mode: str = "full"
    regions: int = 12
    verify_top: int = 10
    background_k: int = 10
    score_norm: str = "stretch"
    beta: float = 1.0
    geometry: str = "homography"
    calibration: Calibration = field(default=DEFAULT_CALIBRATION)

    def __post_init__(self):
        if self.mode not in RERANK_MODES:
            raise ValueError(f"unknown rerank mode {self.mode!r}; known: {', '.join(RERANK_MODES)}")
        if self.score_norm not in SCORE_NORMS:
            raise ValueError(f"unknown score normalisation {self.score_norm!r}; known: {', '.join(SCORE_NORMS)}")

    def normalised(self, scores: np.ndarray, level: np.ndarray) -> np.ndarray:
        """(P,) scores, (P,) background level of each pair's query -> normalised (P,) scores."""
        if self.score_norm == "subtract":
            return normalise(scores[:, None], level, self.beta)[:, 0]
        return stretch(scores[:, None], level)[:, 0]


@dataclass(frozen=True)
class QueryViews:
    """Every view of every query: ids (Q,), view_query (V,) int query row of each view, view_box (V, 4),
    vectors (V, D) float32; full (Q,) row of each query's whole-image view."""

    ids: list[str]
    view_query: np.ndarray
    view_box: np.ndarray
    vectors: np.ndarray
    full: np.ndarray


@dataclass
class Candidates:
    """Flat candidate pairs: query (P,) int row, reference (P,) int index row, global (P,) best score over
    views, full (P,) score of the whole-image view (-inf if not retrieved by it), view (P,) int best view."""

    query: np.ndarray
    reference: np.ndarray
    global_score: np.ndarray
    full_score: np.ndarray
    view: np.ndarray


def gather_candidates(views: QueryViews, index: SearchIndex, k: int) -> Candidates:
    """FAISS top-k of every view -> per (query, reference) the best score and view."""
    scores, rows = index.search(views.vectors, k)
    q = np.repeat(views.view_query, scores.shape[1])
    v = np.repeat(np.arange(len(views.view_query)), scores.shape[1])
    r, s = rows.ravel(), scores.ravel()
    keep = r >= 0
    q, v, r, s = q[keep], v[keep], r[keep], s[keep]
    is_full = views.full[q] == v
    order = np.lexsort((-s, r, q))  # per (query, reference), best score first
    q, v, r, s, is_full = q[order], v[order], r[order], s[order], is_full[order]
    first = np.ones(len(q), bool)
    first[1:] = (q[1:] != q[:-1]) | (r[1:] != r[:-1])
    group = np.cumsum(first) - 1
    full = np.full(first.sum(), -np.inf, np.float32)
    np.maximum.at(full, group[is_full], s[is_full])
    return Candidates(q[first], r[first], s[first], full, v[first])


def top_per_query(query: np.ndarray, score: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n best-scored rows of each query (rows grouped in any order)."""
    order = np.lexsort((-score, query))
    q = query[order]
    start = np.searchsorted(q, q, side="left")
    rank = np.arange(len(q)) - start
    return order[rank < n]


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


def pair_features(cands: Candidates, level: np.ndarray, evidence: list[dict],
                  opts: RerankOptions) -> dict[str, np.ndarray]:
    """Named (P,) features (FEATURES) of candidate pairs, for calibration and --explain."""
    lvl = level[cands.query].astype(np.float64)
    full = np.where(np.isfinite(cands.full_score), cands.full_score, lvl)
    get = lambda key: np.array([e.get(key, 0) for e in evidence], np.float64)  # noqa: E731
    return {
        "global": opts.normalised(full, lvl),
        "region": opts.normalised(cands.global_score.astype(np.float64), lvl),
        "log_inliers": np.log1p(get("inliers")),
        "inlier_ratio": get("inlier_ratio"),
        "query_coverage": get("query_coverage"),
        "reference_coverage": get("reference_coverage"),
    }


def directional_scores(features: dict[str, np.ndarray], calibration: Calibration) -> tuple[np.ndarray, np.ndarray]:
    """(P,) scores of "query is a copy of reference" and of the reverse (coverages swapped)."""
    forward = np.stack([features[name] for name in FEATURES], axis=-1)
    swapped = dict(features, query_coverage=features["reference_coverage"],
                   reference_coverage=features["query_coverage"])
    reverse = np.stack([swapped[name] for name in FEATURES], axis=-1)
    return calibration(forward), calibration(reverse)


def query_background_level(views: QueryViews, background: SearchIndex | None, k: int) -> np.ndarray:
    """(Q,) background level of each query's whole-image view (zeros without a background index)."""
    if background is None or len(background) == 0:
        return np.zeros(len(views.ids), np.float32)
    sims, _ = background.search(views.vectors[views.full], k)
    return background_level(sims, k)
