"""Scores of (query, candidate) pairs: background normalisation, stretching, direction, calibration.

Notation, for one query q and a candidate reference r:
  g        global similarity: max over the query's views (whole image, regions) of <q_view, r>;
  b(q)     background level: mean similarity of q to the images ranked `skip` and below among its
           nearest references (and background images, when a background index is given): the level
           of unrelated look-alikes of q in this collection, from the index itself (`tail_level`);
  n        normalised similarity (SSCD's score normalisation): n = g - beta * b(q);
  s        stretched similarity: s = (g - b(q)) / (1 - b(q)), so the background level maps to 0 and
           an identical descriptor to 1 whatever the query (flat, textured, busy images alike);
  cov_q    share of the query's area inside the region matched to r (local verification);
  cov_r    share of the reference's area inside the region matched in q.
Direction: `score`, "q contains a copy of r" (the DISC2021 label: crops, pastes, screenshots and memes of r
all count), is the probability the main calibration gives. `reverse_score`, "r contains q" (all of q's
content is in r: a crop, a recolouring, an overlay of r, but not r pasted into another photo, a screenshot
or a meme), has its own calibration over the same features, fitted on that label (FittedCalibration.reverse).
A pair of one collection (dedup) is scored both ways by the main calibration with the roles swapped (the
two coverages exchanged), and the larger is the probability that one is a copy of the other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from copyscope.descriptors.errors import UserError
from copyscope.matching.whitening import WhiteningSpec


def tail_level(similarities: np.ndarray, skip: int) -> np.ndarray:
    """(Q, K) similarities of each query to its nearest images, best first (-inf or nan where missing) ->
    (Q,) mean of those at ranks >= skip (>= half the number found, and never rank 0, in a collection too
    small for `skip`): how similar unrelated images are to this query; the few copies of a query rank
    first and do not move it. 0 for a query with fewer than two found."""
    found = np.isfinite(similarities)
    count = found.sum(axis=1)
    start = np.maximum(1, np.minimum(skip, count // 2))
    take = found & (np.arange(similarities.shape[1])[None] >= start[:, None])
    total = np.where(take, similarities, 0).sum(axis=1)
    return (total / np.maximum(take.sum(axis=1), 1)).astype(np.float32)


def normalise(scores: np.ndarray, level: np.ndarray, beta: float = 1.0) -> np.ndarray:
    """(Q, C) scores, (Q,) background level -> scores - beta * level (SSCD score normalisation)."""
    return scores - beta * level[:, None]


def stretch(scores: np.ndarray, level: np.ndarray) -> np.ndarray:
    """(Q, C) scores, (Q,) background level -> (scores - level) / (1 - level)."""
    return (scores - level[:, None]) / np.maximum(1.0 - level[:, None], 1e-3)


@dataclass(frozen=True)
class Calibration:
    """Logistic map of pair features (P, F) to the probability that the query is a copy: (P,) in 0..1.

    weights (F,), bias: fitted by `fit_logistic` on labelled pairs of a tuning benchmark.
    """

    weights: tuple[float, ...]
    bias: float

    def __call__(self, features: np.ndarray) -> np.ndarray:
        z = np.asarray(features, np.float64) @ np.asarray(self.weights) + self.bias
        return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


def fit_logistic(x: np.ndarray, y: np.ndarray, *, l2: float = 1e-3, iters: int = 50) -> tuple[np.ndarray, float]:
    """(N, F) features, (N,) 0/1 labels -> (weights (F,), bias) by Newton's method (IRLS) with L2."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(xb.shape[1])
    reg = l2 * np.eye(xb.shape[1])
    reg[-1, -1] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(xb @ w)))
        grad = xb.T @ (p - y) + reg @ w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb + reg
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w[:-1], float(w[-1])


class CalibrationMismatch(UserError):
    """A calibration used with another model, region model, local-feature method or score normalisation than
    its own."""


@dataclass(frozen=True)
class FittedCalibration:
    """A Calibration with what it was fitted for; it travels in the index manifest and is refused elsewhere.

    features: names of the (F,) inputs, in order. model: descriptor name. local: the local-feature
    settings (method, max_side, max_keypoints, ...). score_norm: how global scores were normalised.
    reverse: the calibration of "the reference contains the query" over the same features (None: the
    main calibration with the roles swapped). region_model: the descriptor that embedded the query's region
    views (None: `model` itself). whitening: the WhiteningSpec dict of the index whose scores it was fitted on
    (matching.whitening; None: raw descriptors).
    """

    calibration: Calibration
    features: tuple[str, ...]
    model: str
    local: dict
    score_norm: str
    reverse: Calibration | None = None
    region_model: str | None = None
    whitening: dict | None = None

    def check(self, model: str, local: dict | None, score_norm: str, features: tuple[str, ...],
              region_model: str | None = None, whitening: dict | None = None) -> None:
        """Raise CalibrationMismatch unless this calibration was fitted for exactly these settings, on features
        that this use computes (`features`: their names)."""
        wanted = {"model": model, "local": local, "score normalisation": score_norm, "features": tuple(features),
                  "region model": region_model, "whitening": whitening}
        fitted = {"model": self.model, "local": self.local, "score normalisation": self.score_norm,
                  "features": tuple(self.features), "region model": self.region_model, "whitening": self.whitening}
        wrong = [k for k in wanted if wanted[k] != fitted[k] and k != "features"]
        if not set(self.features) <= set(features):
            wrong.append("features")
        if wrong:
            detail = "; ".join(f"{k}: fitted for {fitted[k]!r}, used with {wanted[k]!r}" for k in wrong)
            if "features" in wrong:
                detail += f" (this use cannot compute {', '.join(sorted(set(self.features) - set(features)))})"
            raise CalibrationMismatch(
                f"the index's calibration does not fit this use ({detail}). Fit one for these settings with "
                "benchmarks/calibrate.py --out calibration.json and build the index with "
                "`copyscope index ... --calibration calibration.json`, or match with --rerank none")

    def to_dict(self) -> dict:
        out = {"weights": list(self.calibration.weights), "bias": self.calibration.bias,
               "features": list(self.features), "model": self.model, "local": self.local,
               "score_norm": self.score_norm}
        if self.reverse is not None:
            out |= {"reverse_weights": list(self.reverse.weights), "reverse_bias": self.reverse.bias}
        if self.region_model is not None:
            out["region_model"] = self.region_model
        if self.whitening is not None:
            out["whitening"] = self.whitening
        return out

    @classmethod
    def from_dict(cls, d: dict) -> FittedCalibration:
        try:
            reverse = None
            if "reverse_weights" in d:
                reverse = Calibration(tuple(float(w) for w in d["reverse_weights"]), float(d["reverse_bias"]))
            region_model = str(d["region_model"]) if d.get("region_model") is not None else None
            whitening = WhiteningSpec(**d["whitening"]).to_dict() if d.get("whitening") is not None else None
            if not len(d["weights"]) == len(d["features"]) == len(d.get("reverse_weights", d["features"])):
                raise ValueError("one weight per feature")
            return cls(Calibration(tuple(float(w) for w in d["weights"]), float(d["bias"])), tuple(d["features"]),
                       str(d["model"]), dict(d["local"]) if d["local"] else {}, str(d["score_norm"]), reverse,
                       region_model, whitening)
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"not a calibration record ({e!r}): expected weights, bias, features, model, local, "
                            "score_norm (and optionally reverse_weights, reverse_bias, region_model, whitening)") from e
