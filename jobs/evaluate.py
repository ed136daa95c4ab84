"""Evaluate predictions against a ground truth: metrics.json, pr_curve.png and a self-contained report.html.

This job computes the metrics and picks the examples the report shows: recall@1 by edit kind (with
query metadata), the misses (queries with a copy whose top-1 is wrong or absent) and the
highest-scoring false positives. `copyscope.pipeline.reports.evaluation_report` draws them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from copyscope.matching.metrics import (PROBABILITY_THRESHOLDS, Metrics, at_score_thresholds, compute_metrics,
                                        is_probability, reliability, share_by_group)
from copyscope.pipeline.atomic import atomic_write
from copyscope.pipeline.formats import GroundTruth, Matches, read_ground_truth, read_matches, read_query_meta
from copyscope.pipeline.reports.evaluation_report import MAX_EXAMPLES, FalsePositive, Miss, write_report

UNKNOWN_KIND = "unknown"


def evaluate(
    gt_csv: str | os.PathLike,
    pred_csv: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    meta_csv: str | os.PathLike | None = None,
    queries_dir: str | os.PathLike | None = None,
    references_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict:
    """Score `pred_csv` against `gt_csv` and write metrics.json, pr_curve.png and report.html to out_dir.

    meta_csv: query metadata (`query_id,kind,transforms`), adds recall@1 and recall at each score threshold
        by kind; queries with a copy that it does not list fall under "unknown".
    queries_dir, references_dir: image folders for the thumbnails, by default `queries/` and
        `references/` beside gt_csv. A missing or unreadable image shows as a placeholder.
    Returns the metrics as written to metrics.json: uAP, recall_at_p90, threshold_at_p90 (None when
    precision 0.9 is never reached), recall_at_1, recall_at_10, num_predictions, num_positives,
    predictions_for_unknown_queries (predictions whose query the ground truth does not list; they
    count as false positives), reliability ([{lo, hi, count, mean_score, precision}] over 10 bins),
    ece, at_threshold ({"0.5" | "0.9" | "0.99": {precision, recall, count}}) -- these three None when a
    score lies outside 0..1 (raw similarities, not probabilities) -- and with meta_csv
    recall_at_1_by_kind, positives_by_kind and recall_at_threshold_by_kind ({kind: {"0.5" | "0.9" | "0.99":
    share of its copies whose true pair scored >= that}}, None for scores outside 0..1).
    Raises FormatError for a malformed CSV, ValueError for a ground truth without any copy.
    """
    gt, preds = read_ground_truth(gt_csv), read_matches(pred_csv)
    metrics = compute_metrics(preds.query_ids, preds.reference_ids, preds.scores, gt.query_ids, gt.reference_ids)
    summary = metrics.as_dict()
    summary["predictions_for_unknown_queries"] = int(np.sum(~np.isin(preds.query_ids, gt.query_ids)))
    summary.update(_calibration(metrics, preds.scores))
    if meta_csv is not None:
        summary.update(_by_kind(metrics, gt, read_query_meta(meta_csv), preds.scores))

    out_dir = Path(out_dir)
    with atomic_write(out_dir / "metrics.json", "w") as f:
        json.dump(summary, f, indent=2, allow_nan=False)
        f.write("\n")

    gt_dir = Path(gt_csv).parent
    write_report(out_dir, summary, metrics, find_misses(metrics, gt, preds),
                 find_false_positives(metrics, gt, preds, MAX_EXAMPLES),
                 queries_dir=gt_dir / "queries" if queries_dir is None else queries_dir,
                 references_dir=gt_dir / "references" if references_dir is None else references_dir,
                 sources={"ground truth": gt_csv, "predictions": pred_csv, "query metadata": meta_csv},
                 progress=progress)
    return summary


def _by_kind(metrics: Metrics, gt: GroundTruth, kinds: dict[str, str], scores: np.ndarray) -> dict:
    """recall@1, the number of true pairs and, for probability scores, recall at each threshold per edit kind."""
    labels = [kinds.get(q, UNKNOWN_KIND) for q in gt.query_ids[gt.has_copy].tolist()]
    groups = share_by_group(metrics.gt_ranks < 1, labels)
    by_threshold = None
    if is_probability(scores):
        found = metrics.gt_predictions >= 0
        gt_scores = np.where(found, np.asarray(scores, np.float64)[np.maximum(metrics.gt_predictions, 0)], -np.inf)
        shares = {f"{t:g}": share_by_group(gt_scores >= t, labels) for t in PROBABILITY_THRESHOLDS}
        by_threshold = {k: {t: shares[t][k][0] for t in shares} for k in groups}
    return {
        "recall_at_1_by_kind": {k: r for k, (r, _) in groups.items()},
        "positives_by_kind": {k: n for k, (_, n) in groups.items()},
        "recall_at_threshold_by_kind": by_threshold,
    }


def _calibration(metrics: Metrics, scores: np.ndarray) -> dict:
    """reliability, ece and at_threshold of probability scores; all None when a score is outside 0..1."""
    if not is_probability(scores):
        return {"reliability": None, "ece": None, "at_threshold": None}
    table = reliability(scores, metrics.is_true)
    return {
        "reliability": table.bins(),
        "ece": table.ece,
        "at_threshold": {f"{p.threshold:g}": {"precision": p.precision, "recall": p.recall, "count": p.count}
                         for p in at_score_thresholds(metrics.curve)},
    }


# ---------------------------------------------------------------- examples for the report


def _top_two_by_query(preds: Matches) -> dict[str, tuple[int, ...]]:
    """{query_id: indices of its best and second-best predictions (by score)}."""
    codes = np.unique(preds.query_ids, return_inverse=True)[1]
    order = np.lexsort((-preds.scores, codes))
    starts = np.flatnonzero(np.diff(codes[order], prepend=-1) != 0)
    ends = np.append(starts[1:], len(order))
    return {str(preds.query_ids[order[s]]): tuple(order[s: min(s + 2, e)].tolist()) for s, e in zip(starts, ends)}


def find_misses(metrics: Metrics, gt: GroundTruth, preds: Matches) -> list[Miss]:
    """Every true pair with rank > 0, the most confidently wrong first (highest wrong score)."""
    top = _top_two_by_query(preds)
    misses = []
    pairs = zip(gt.query_ids[gt.has_copy].tolist(), gt.reference_ids[gt.has_copy].tolist(),
                metrics.gt_predictions.tolist(), metrics.gt_ranks.tolist())
    for query_id, reference_id, true_i, rank in pairs:
        if rank == 0:
            continue
        found = true_i >= 0
        wrong = [i for i in top.get(query_id, ()) if preds.reference_ids[i] != reference_id][:1]
        misses.append(Miss(
            query_id, reference_id,
            rank if found else None, float(preds.scores[true_i]) if found else None,
            str(preds.reference_ids[wrong[0]]) if wrong else None, float(preds.scores[wrong[0]]) if wrong else None,
        ))
    misses.sort(key=lambda m: (m.wrong_score is None, -(m.wrong_score or 0.0), m.query_id))
    return misses


def find_false_positives(metrics: Metrics, gt: GroundTruth, preds: Matches, limit: int) -> list[FalsePositive]:
    """The `limit` highest-scoring false predictions, highest first (ties in file order)."""
    copies: dict[str, list[str]] = {}
    for q, r in zip(gt.query_ids[gt.has_copy].tolist(), gt.reference_ids[gt.has_copy].tolist()):
        copies.setdefault(q, []).append(r)
    wrong = np.flatnonzero(~metrics.is_true)
    wrong = wrong[np.argsort(-preds.scores[wrong], kind="stable")[:limit]]
    return [
        FalsePositive(str(preds.query_ids[i]), str(preds.reference_ids[i]), float(preds.scores[i]),
                      tuple(copies.get(str(preds.query_ids[i]), ())))
        for i in wrong.tolist()
    ]
