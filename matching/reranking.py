"""Re-ranking of FAISS candidates: region search, background normalisation, local verification, scoring.

    views (Q queries x V views) --FAISS--> candidates with global scores (max over views)
      --background level (the query's unrelated neighbours in the index)--> stretched scores
      --top `verify_top`--> verify stage --> evidence --shared frames discounted (matching.shared_frames)-->
      --calibration--> final score in 0..1 (probability that the query is a copy of the reference)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from copyscope.descriptors.errors import UserError
from copyscope.matching.index import SearchIndex
from copyscope.matching.local_features import LocalSpec
from copyscope.matching.scoring import Calibration, FittedCalibration, normalise, stretch, tail_level
from copyscope.matching.candidates import Candidates, QueryViews, margin_over_others
from copyscope.matching.whitening import WhiteningSpec

RERANK_MODES = ("none", "verify", "full")
SCORE_NORMS = ("stretch", "subtract")
# How the background level is measured; part of what a calibration is fitted for (RerankOptions.calibrated_as).
LEVEL_RULE = "reference tail"
DEFAULT_NORM = f"stretch by {LEVEL_RULE}"
FEATURES = ("whole_image", "best_view", "log_inliers", "inlier_ratio", "query_coverage", "reference_coverage",
            "frame_share")
# What a match also knows of a pair: how far its best view stands above the query's best rival, a candidate of
# another photo that no shared frame explains (candidates.margin_over_others); pairs of one collection (dedup)
# have no query side, so FEATURES only.
MATCH_FEATURES = FEATURES + ("margin",)
# Inliers each of two references needs to count as verified in different parts of the query, so that neither is
# the other's rival: a photo pasted into another known photo has many (112 and 322 in the README's example); the
# 5 or 6 that chance or a caption gives a look-alike inside a copy's box must not make it a second copy.
APART_INLIERS = 20
# Fitted on the candidate pairs of benchmarks built from the tuning half of ../shared/photos only (templated
# content, look-alikes: benchmarks/fit_calibration.py, one run per entry; the first on three, the others on the
# first two); the README reports them on benchmarks of the held-out half. reverse: "the reference contains the
# query". The first is the default: sscd, its index whitened by its references (matching.whitening), over
# MATCH_FEATURES, fitted on matches with the second look (pipeline.second_look); the others score raw descriptors
# over FEATURES (dedup takes the raw sscd one) and were fitted before the second look.
PACKAGED_CALIBRATIONS = (
    FittedCalibration(Calibration(weights=(3.733, 0.413, -0.798, 7.500, -1.708, 3.024, -6.538, 18.530), bias=-5.087),
                      MATCH_FEATURES, "sscd", LocalSpec().to_dict(), DEFAULT_NORM,
                      Calibration(weights=(7.540, -6.667, -0.767, 7.103, 4.447, -3.563, -5.824, 4.455), bias=-5.419),
                      None, WhiteningSpec().to_dict()),
    FittedCalibration(Calibration(weights=(-1.497, 13.099, -0.088, 4.827, 3.860, -1.474, -10.740), bias=-6.882),
                      FEATURES, "sscd", LocalSpec().to_dict(), DEFAULT_NORM,
                      Calibration(weights=(7.290, -2.836, -0.361, 6.729, 2.550, -3.296, -6.600), bias=-6.738)),
    FittedCalibration(Calibration(weights=(-1.584, 16.517, -0.045, 4.831, 2.565, -2.129, -11.348), bias=-7.845),
                      FEATURES, "sscd_distilled", LocalSpec().to_dict(), DEFAULT_NORM,
                      Calibration(weights=(7.875, -3.255, -0.323, 6.396, 2.486, -3.120, -5.495), bias=-6.766)),
    FittedCalibration(Calibration(weights=(-0.131, 12.686, 0.289, 3.264, 0.519, 1.532, -11.589), bias=-6.976),
                      FEATURES, "sscd", LocalSpec.uncompressed().to_dict(), DEFAULT_NORM,  # --full-local-features
                      Calibration(weights=(7.972, -4.079, 0.118, 6.009, 0.849, -2.624, -9.090), bias=-7.179)),
    FittedCalibration(Calibration(weights=(-3.737, 18.518, 0.217, 4.240, 0.945, -0.536, -11.757), bias=-7.480),
                      FEATURES, "sscd", LocalSpec().to_dict(), DEFAULT_NORM,  # --region-model sscd_distilled
                      Calibration(weights=(8.541, -4.043, -0.181, 6.166, 2.445, -3.899, -5.674), bias=-6.769),
                      "sscd_distilled"),
)


def packaged_calibration(model: str, local: dict | None, region_model: str | None = None,
                         whitening: dict | None = None) -> FittedCalibration | None:
    """The calibration shipped for this model, local-feature setting, region model and whitening, or None."""
    return next((c for c in PACKAGED_CALIBRATIONS if c.model == model and c.local == local
                 and c.region_model == region_model and c.whitening == whitening), None)


DEFAULT_SETTLE = 0.99  # benchmarks/cascade.py


@dataclass(frozen=True)
class RerankOptions:
    """mode: none (global scores only), verify (local verification), full (verify + region search).

    regions: sub-regions searched per query in full mode. region_size: the short side region views are
    resized to before embedding (None: the model's size, as for whole images; the packaged calibrations were
    fitted at that size). verify_top: candidates verified per query.
    background_skip, background_k: the background level of a query is the mean similarity of its
    nearest images ranked background_skip .. background_skip + background_k - 1 among the references
    (and the background index, when one is given), `scoring.tail_level`.
    score_norm: how global scores are normalised by that level: "stretch" (the calibration is fitted
    on stretched scores) or "subtract" (SSCD's score normalisation, with `beta`).
    settle: in full mode, a query whose whole image gives a score >= settle is decided without region
    search (pipeline.engine's cascade); None searches the regions of every query.
    second_look: a query with no candidate verified has its best view verified again, closer
    (pipeline.second_look).
    """

    mode: str = "full"
    regions: int = 12
    region_size: int | None = None
    verify_top: int = 10
    background_skip: int = 8
    background_k: int = 16
    score_norm: str = "stretch"
    beta: float = 1.0
    geometry: str = "homography"
    settle: float | None = DEFAULT_SETTLE
    second_look: bool = True

    def __post_init__(self):
        if self.mode not in RERANK_MODES:
            raise UserError(f"unknown rerank mode {self.mode!r}; known: {', '.join(RERANK_MODES)}")
        if self.score_norm not in SCORE_NORMS:
            raise UserError(f"unknown score normalisation {self.score_norm!r}; known: {', '.join(SCORE_NORMS)}")
        if self.region_size is not None and self.region_size < 8:
            raise UserError(f"region size must be at least 8 pixels, got {self.region_size}")

    @property
    def calibrated_as(self) -> str:
        """The score normalisation a calibration must have been fitted for, level rule included."""
        return f"{self.score_norm} by {LEVEL_RULE}"

    def normalised(self, scores: np.ndarray, level: np.ndarray) -> np.ndarray:
        """(P,) scores, (P,) background level of each pair's query -> normalised (P,) scores."""
        if self.score_norm == "subtract":
            return normalise(scores[:, None], level, self.beta)[:, 0]
        return stretch(scores[:, None], level)[:, 0]


def pair_features(cands: Candidates, level: np.ndarray, evidence: list[dict], opts: RerankOptions,
                  version: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Named (P,) features of candidate pairs, for calibration and --explain: FEATURES, and the margin
    (MATCH_FEATURES) when `version` is given: (P,) label of the photo each reference is a version of
    (shared_frames.duplicate_groups). Pairs of one collection (dedup) and a match without verification (rerank
    "none") have no version, so no margin."""
    lvl = level[cands.query].astype(np.float64)
    whole = np.where(np.isfinite(cands.whole_score), cands.whole_score, lvl)
    best = opts.normalised(cands.best_score.astype(np.float64), lvl)
    get = lambda key: np.array([e.get(key, 0) for e in evidence], np.float64)  # noqa: E731
    inliers = get("inliers")
    frame_share = get("frame_inliers") / np.maximum(inliers + get("frame_inliers"), 1)
    features = {
        "whole_image": opts.normalised(whole, lvl),
        "best_view": best,
        "log_inliers": np.log1p(inliers),
        "inlier_ratio": get("inlier_ratio"),
        "query_coverage": get("query_coverage"),
        "reference_coverage": get("reference_coverage"),
        "frame_share": frame_share,
    }
    if version is None:
        return features
    strong = inliers >= APART_INLIERS
    content = np.array([e.get("query_box") or (0.0,) * 4 for e in evidence], np.float64).reshape(-1, 4)
    content[~strong] = 0.0
    # a candidate that a shared frame explains is no rival of one of content (its similarity is the frame's), but
    # has every other as a rival; and a candidate verified strongly in another part of the query is no rival
    return features | {"margin": margin_over_others(cands.query, best, version, rival=frame_share < 0.5,
                                                    content=content)}


def _stacked(features: dict[str, np.ndarray], names: tuple[str, ...] = FEATURES, swap: bool = False) -> np.ndarray:
    """Named (P,) features -> (P, F) in the order of `names`; swap: the roles of query and reference exchanged."""
    if swap:
        features = dict(features, query_coverage=features["reference_coverage"],
                        reference_coverage=features["query_coverage"])
    return np.stack([features[name] for name in names], axis=-1)


def directional_scores(features: dict[str, np.ndarray], fitted: FittedCalibration) -> tuple[np.ndarray, np.ndarray]:
    """(P,) scores of "the query contains a copy of the reference" and of "the reference contains the query"
    (its own calibration, or the first with the roles swapped when the record has none: the margin stays the
    query's), over the features the calibration names."""
    x = _stacked(features, fitted.features)
    reverse = (fitted.reverse(x) if fitted.reverse is not None
               else fitted.calibration(_stacked(features, fitted.features, swap=True)))
    return fitted.calibration(x), reverse


def either_way_scores(features: dict[str, np.ndarray], calibration: Calibration) -> np.ndarray:
    """(P,) probability that one image of each pair is a copy of the other: the larger of the two pair scores
    with either image as the query (a pair of one collection has no query side)."""
    return np.maximum(calibration(_stacked(features)), calibration(_stacked(features, swap=True)))


def query_background_level(views: QueryViews, reference_sims: np.ndarray, background: SearchIndex | None,
                           opts: RerankOptions) -> np.ndarray:
    """(Q,) background level of each query's whole-image view: `tail_level` of its nearest references,
    merged with its nearest background images when a background index is given. reference_sims: (Q, >= k)
    the whole views' similarities to their nearest references, as searched for the candidates (k =
    background_skip + background_k)."""
    k = opts.background_skip + opts.background_k
    sims = [reference_sims[:, :k]]
    if background is not None and len(background):
        sims.append(background.search(views.vectors[views.full], k)[0])
    merged = -np.sort(-np.concatenate(sims, axis=1), axis=1)[:, :k]
    return tail_level(merged, opts.background_skip)
