"""Copy-detection metrics of DISC2021: micro-AP, recall at precision 0.9, recall@k. Pure numpy.

The definition follows the official evaluation (facebookresearch/isc2021, `isc/metrics.py`):

- All predictions of all queries are ranked together by decreasing score. Among equal scores the
  false predictions come first (the worst case), so giving many pairs one score gains nothing.
- Precision and recall are taken after each ranked prediction. Recall divides by the number of
  ground-truth pairs, so a copy that was never predicted counts as missed.
- uAP = sum over ranked predictions of (increase of recall) * precision.
- Recall at precision 0.9: the highest recall among the points whose precision is >= 0.9, with the
  score of that point as the threshold. Where precision 0.9 is never reached the official code
  reports None; here the recall is 0.0 (nothing can be accepted at that precision) and the
  threshold None.
- recall@k: the fraction of ground-truth pairs whose reference is among the first k predictions of
  its query, where every prediction of the query scoring >= the true one counts as ahead of it
  (ties worst-first).
- A prediction whose pair is not in the ground truth is a false positive, whether its query is
  listed there without a copy or not listed at all (as in the official code).
- A (query, reference) pair predicted twice is an error.

Where scores are probabilities (0..1), `reliability` bins them against the share of correct
predictions (a reliability table and the expected calibration error), and `at_score_thresholds`
reads precision and recall off the curve at fixed probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NOT_PREDICTED = np.iinfo(np.int64).max
"""Rank given to a ground-truth pair that no prediction names."""

PROBABILITY_THRESHOLDS = (0.5, 0.9, 0.99)
"""Scores at which `at_score_thresholds` reports precision and recall by default."""


@dataclass(frozen=True, eq=False)
class PRCurve:
    """Precision and recall after each prediction in ranked order; (N,) float64 each.

    thresholds[i] is the score of the i-th ranked prediction (non-increasing).
    """

    precisions: np.ndarray
    recalls: np.ndarray
    thresholds: np.ndarray


@dataclass(frozen=True, eq=False)
class Metrics:
    """DISC2021 metrics of N predictions against P ground-truth pairs.

    is_true: (N,) bool, the prediction is a ground-truth pair (input order).
    ranks: (N,) int64, 0-based rank of each prediction among its query's predictions, ties worst-first.
    gt_predictions: (P,) int64, index of the prediction naming each ground-truth pair, -1 if none.
    gt_ranks: (P,) int64, rank of that prediction, NOT_PREDICTED if none.
    """

    uap: float
    recall_at_p90: float
    threshold_at_p90: float | None
    recall_at_1: float
    recall_at_10: float
    curve: PRCurve
    is_true: np.ndarray
    ranks: np.ndarray
    gt_predictions: np.ndarray
    gt_ranks: np.ndarray

    @property
    def num_positives(self) -> int:
        return len(self.gt_ranks)

    @property
    def num_predictions(self) -> int:
        return len(self.is_true)

    def as_dict(self) -> dict:
        """The scalar metrics under their DISC2021 names, JSON-ready."""
        return {
            "uAP": self.uap,
            "recall_at_p90": self.recall_at_p90,
            "threshold_at_p90": self.threshold_at_p90,
            "recall_at_1": self.recall_at_1,
            "recall_at_10": self.recall_at_10,
            "num_predictions": self.num_predictions,
            "num_positives": self.num_positives,
        }


def _run_starts(a: np.ndarray) -> np.ndarray:
    """(N,) -> (N,) bool: True where a value differs from the one before it (and at 0)."""
    starts = np.ones(len(a), dtype=bool)
    starts[1:] = a[1:] != a[:-1]
    return starts


def _pair_keys(queries_a, references_a, queries_b, references_b) -> tuple[np.ndarray, np.ndarray]:
    """Integer keys of (query, reference) pairs over one vocabulary: (A,), (B,) int64."""
    _, q = np.unique(np.concatenate([queries_a, queries_b]), return_inverse=True)
    refs, r = np.unique(np.concatenate([references_a, references_b]), return_inverse=True)
    keys = q.astype(np.int64) * max(len(refs), 1) + r
    return keys[: len(queries_a)], keys[len(queries_a):]


def _first_duplicate(keys: np.ndarray) -> int | None:
    """Index of the earliest entry that repeats an earlier key, or None."""
    order = np.argsort(keys, kind="stable")
    repeated = np.flatnonzero(~_run_starts(keys[order]))
    return int(order[repeated].min()) if len(repeated) else None


def precision_recall(is_true: np.ndarray, scores: np.ndarray, num_positives: int) -> PRCurve:
    """(N,) bool, (N,) float -> curve over the predictions ranked by score, false before true on ties."""
    order = np.lexsort((is_true, -scores))
    hits = np.cumsum(is_true[order])
    return PRCurve(
        precisions=hits / np.arange(1, len(order) + 1),
        recalls=hits / num_positives,
        thresholds=scores[order].astype(np.float64),
    )


def average_precision(curve: PRCurve) -> float:
    """Micro-AP: sum of precision times the step in recall at each ranked prediction."""
    steps = np.diff(curve.recalls, prepend=0.0)
    return float(np.sum(steps * curve.precisions))


def recall_at_precision(curve: PRCurve, min_precision: float = 0.9) -> tuple[float, float | None]:
    """(recall, threshold) at the highest-recall point with precision >= min_precision.

    (0.0, None) when no point reaches that precision.
    """
    valid = np.flatnonzero(curve.precisions >= min_precision)
    if len(valid) == 0:
        return 0.0, None
    best = valid[np.argmax(curve.recalls[valid])]
    return float(curve.recalls[best]), float(curve.thresholds[best])


def query_ranks(query_keys: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(N,) int, (N,) float -> (N,) int64: 0-based rank of each prediction within its query.

    Rank = number of other predictions of the same query with a score >= its own (ties worst-first).
    """
    order = np.lexsort((-scores, query_keys))
    q, s = query_keys[order], scores[order]
    index = np.arange(len(order))
    new_query = _run_starts(q)
    new_tie = new_query | _run_starts(s)
    group_start = np.maximum.accumulate(np.where(new_query, index, 0))
    tie_ends = np.append(np.flatnonzero(new_tie)[1:], len(order)) - 1
    tie_end = tie_ends[np.cumsum(new_tie) - 1]
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = tie_end - group_start
    return ranks


def compute_metrics(pred_query_ids, pred_reference_ids, scores, gt_query_ids, gt_reference_ids) -> Metrics:
    """DISC2021 metrics of N scored predictions against the ground truth.

    pred_query_ids, pred_reference_ids: (N,) str; scores: (N,) float, higher = more likely a copy.
    gt_query_ids, gt_reference_ids: (G,) str; rows with an empty reference (queries without a copy)
    are skipped, the other P rows are the true pairs.
    Raises ValueError for arrays of unequal length, a score that is not finite, a pair predicted
    twice, a true pair listed twice, or no true pair at all.
    """
    pred_q, pred_r = np.asarray(pred_query_ids, dtype=str), np.asarray(pred_reference_ids, dtype=str)
    scores = np.asarray(scores, dtype=np.float64)
    if not len(pred_q) == len(pred_r) == len(scores):
        raise ValueError(f"predictions of unequal length: {len(pred_q)} queries, {len(pred_r)} "
                         f"references, {len(scores)} scores")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"score {scores[~np.isfinite(scores)][0]} is not a finite number")
    gt_q, gt_r = np.asarray(gt_query_ids, dtype=str), np.asarray(gt_reference_ids, dtype=str)
    gt_q, gt_r = gt_q[gt_r != ""], gt_r[gt_r != ""]
    if len(gt_q) == 0:
        raise ValueError("the ground truth has no (query, reference) pair: recall is undefined")
    pred_keys, gt_keys = _pair_keys(pred_q, pred_r, gt_q, gt_r)
    for keys, q, r, what in ((pred_keys, pred_q, pred_r, "predicted"), (gt_keys, gt_q, gt_r, "in the ground truth")):
        dup = _first_duplicate(keys)
        if dup is not None:
            raise ValueError(f"pair ({str(q[dup])!r}, {str(r[dup])!r}) is {what} more than once")

    gt_order = np.argsort(gt_keys)
    slot = np.minimum(np.searchsorted(gt_keys, pred_keys, sorter=gt_order), len(gt_keys) - 1)
    is_true = gt_keys[gt_order[slot]] == pred_keys
    ranks = query_ranks(np.unique(pred_q, return_inverse=True)[1], scores)
    gt_predictions = np.full(len(gt_keys), -1, dtype=np.int64)
    gt_predictions[gt_order[slot[is_true]]] = np.flatnonzero(is_true)
    gt_ranks = np.full(len(gt_keys), NOT_PREDICTED, dtype=np.int64)
    gt_ranks[gt_predictions >= 0] = ranks[gt_predictions[gt_predictions >= 0]]

    curve = precision_recall(is_true, scores, len(gt_keys))
    recall_p90, threshold_p90 = recall_at_precision(curve, 0.9)
    return Metrics(
        uap=average_precision(curve),
        recall_at_p90=recall_p90,
        threshold_at_p90=threshold_p90,
        recall_at_1=float(np.mean(gt_ranks < 1)),
        recall_at_10=float(np.mean(gt_ranks < 10)),
        curve=curve,
        is_true=is_true,
        ranks=ranks,
        gt_predictions=gt_predictions,
        gt_ranks=gt_ranks,
    )


def share_by_group(hits, groups) -> dict[str, tuple[float, int]]:
    """(P,) bool per true pair (found at rank < k, scored >= t, ...), (P,) group labels -> {group: (share of
    hits, number of pairs)}, sorted by group."""
    groups = np.asarray(groups, dtype=str)
    names, inverse = np.unique(groups, return_inverse=True)
    counts = np.bincount(inverse, minlength=len(names))
    found = np.bincount(inverse, weights=np.asarray(hits, bool), minlength=len(names))
    return {str(n): (float(h / c), int(c)) for n, h, c in zip(names, found, counts)}


def is_probability(scores) -> bool:
    """(N,) float -> True when every score lies in 0..1 (vacuously for N = 0)."""
    scores = np.asarray(scores, dtype=np.float64)
    return bool(np.all((scores >= 0.0) & (scores <= 1.0)))


@dataclass(frozen=True, eq=False)
class Reliability:
    """Reliability table of N predictions over B fixed score bins [lo, hi); the last bin includes hi = 1.0.

    lo, hi: (B,) float64 edges. counts: (B,) int64. mean_scores, precisions: (B,) float64 mean score and
    share of correct predictions per bin, NaN where a bin is empty. ece: expected calibration error,
    sum over bins of counts / N * |precisions - mean_scores|; 0.0 when N = 0.
    """

    lo: np.ndarray
    hi: np.ndarray
    counts: np.ndarray
    mean_scores: np.ndarray
    precisions: np.ndarray
    ece: float

    @property
    def num_predictions(self) -> int:
        return int(self.counts.sum())

    def bins(self) -> list[dict]:
        """JSON-ready rows {lo, hi, count, mean_score, precision}; mean_score, precision None when empty."""
        return [{"lo": float(lo), "hi": float(hi), "count": int(n),
                 "mean_score": float(m) if n else None, "precision": float(p) if n else None}
                for lo, hi, n, m, p in zip(self.lo, self.hi, self.counts, self.mean_scores, self.precisions)]


def reliability(scores, correct, num_bins: int = 10) -> Reliability:
    """(N,) scores in 0..1, (N,) bool correctness -> Reliability over num_bins equal bins.

    Bin i holds i / B <= score < (i + 1) / B, the last one also score == 1.0. N = 0 gives empty bins.
    Raises ValueError for arrays of unequal length, a score outside 0..1 (NaN included), num_bins < 1.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    correct = np.asarray(correct, dtype=bool).reshape(-1)
    if len(scores) != len(correct):
        raise ValueError(f"{len(scores)} scores but {len(correct)} correctness flags")
    if not is_probability(scores):
        bad = scores[~((scores >= 0.0) & (scores <= 1.0))][0]
        raise ValueError(f"score {bad} is not a probability in 0..1")
    if num_bins < 1:
        raise ValueError(f"num_bins must be at least 1, not {num_bins}")
    edges = np.arange(num_bins + 1) / num_bins  # exact decimals: 3 / 10 == 0.3, unlike linspace
    index = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, num_bins - 1)
    counts = np.bincount(index, minlength=num_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_scores = np.bincount(index, weights=scores, minlength=num_bins) / counts
        precisions = np.bincount(index, weights=correct, minlength=num_bins) / counts
    gaps = np.where(counts > 0, counts * np.abs(precisions - mean_scores), 0.0)
    ece = float(gaps.sum() / len(scores)) if len(scores) else 0.0
    return Reliability(edges[:-1], edges[1:], counts.astype(np.int64), mean_scores, precisions, ece)


@dataclass(frozen=True)
class ThresholdPoint:
    """The predictions scored >= threshold: their count, precision (share correct; None when count is 0)
    and recall (correct ones over the true pairs)."""

    threshold: float
    count: int
    precision: float | None
    recall: float


def at_score_thresholds(curve: PRCurve, thresholds=PROBABILITY_THRESHOLDS) -> list[ThresholdPoint]:
    """Precision and recall of the predictions scored >= t, for each t, read off the ranked curve.

    The curve comes from `compute_metrics`: each pair predicted once, recall over its true pairs.
    """
    points = []
    for t in thresholds:
        n = int(np.searchsorted(-curve.thresholds, -t, side="right"))  # thresholds are non-increasing
        points.append(ThresholdPoint(float(t), n, float(curve.precisions[n - 1]) if n else None,
                                     float(curve.recalls[n - 1]) if n else 0.0))
    return points
