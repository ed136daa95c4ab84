"""Candidate gathering: every view of every query searched with FAISS -> one row per (query, reference).

    views (Q queries x V views) --FAISS top-k--> (query, reference) pairs with the best score over views
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from copyscope.descriptors.regions import box_iou


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
    """Flat candidate pairs: query (P,) int query row, reference (P,) int64 reference id, best_score (P,)
    best score over the query's views, whole_score (P,) score of the whole-image view (-inf if that view
    did not retrieve the reference), view (P,) int row of the best view."""

    query: np.ndarray
    reference: np.ndarray
    best_score: np.ndarray
    whole_score: np.ndarray
    view: np.ndarray


def candidates_of(views: QueryViews, scores: np.ndarray, rows: np.ndarray) -> Candidates:
    """(V, k) scores and reference ids (-1: none) of every view's search -> per (query, reference id) the
    best score and view."""
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


# Two references at least this close are versions of one photo for the margin (resized, re-encoded: SSCD median
# 0.96 at 3/4 size and JPEG quality 70). Not lower: photos pasted onto one background reach 0.8 to 0.92, and
# grouping from 0.8 cost the tuning sets up to 0.006 micro-AP and 0.024 recall at precision 0.9 (README).
SAME_PHOTO_COSINE = 0.9
# Two references verified in boxes of the query that overlap less than this IoU are in different parts of it
# (a photo pasted into a fifth of another known photo: about 0.2), so neither is the other's rival.
RIVAL_OVERLAP = 0.5


def margin_over_others(query: np.ndarray, score: np.ndarray, version: np.ndarray, rival: np.ndarray | None = None,
                       content: np.ndarray | None = None, min_overlap: float = RIVAL_OVERLAP) -> np.ndarray:
    """(P,) query row, score and version label of candidate pairs -> (P,) each pair's score minus the best
    score of its rivals (less 0, the background level, when it has none): the query's candidates of another
    version, except those verified in another part of the query. rival: (P,) bool, which candidates may be
    rivals of the candidates it marks (None: all); a candidate it does not mark has every other as a rival
    (a frame-explained candidate stands out from nothing: its siblings in the frame are as close). content:
    (P, 4) x0, y0, x1, y1 box of the query's verified content of each pair (an empty box: none); two pairs
    whose boxes overlap by an IoU under min_overlap are apart. Versions of one photo (the same label) do not
    compete, so a bank holding a photo twice leaves both a margin; nor do two references verified apart, so a
    photo pasted into another known photo leaves both a margin."""
    score = np.asarray(score, np.float64)
    rival = np.ones(len(score), bool) if rival is None else np.asarray(rival, bool)
    out = score.copy()
    content = None if content is None else np.asarray(content, np.float64)
    order = np.argsort(query, kind="stable")
    for rows in np.split(order, np.flatnonzero(np.diff(query[order])) + 1):
        label, may = version[rows], rival[rows]
        competes = (label[:, None] != label[None, :]) & (may[None, :] | ~may[:, None])
        if content is not None:
            box = content[rows]
            found = (box[:, 2] > box[:, 0]) & (box[:, 3] > box[:, 1])
            competes &= ~(found[:, None] & found[None, :] & (box_iou(box, box) < min_overlap))
        best = np.where(competes, score[rows][None, :], -np.inf).max(axis=1, initial=-np.inf)
        out[rows] -= np.where(np.isfinite(best), best, 0.0)
    return out
