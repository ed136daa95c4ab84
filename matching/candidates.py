"""Candidate gathering: every view of every query searched with FAISS -> one row per (query, reference).

    views (Q queries x V views) --FAISS top-k--> (query, reference) pairs with the best score over views
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
# grouping from 0.8 cost the templates tuning set 0.006 micro-AP and 0.024 recall at precision 0.9 (README).
SAME_PHOTO_COSINE = 0.9


def margin_over_others(query: np.ndarray, score: np.ndarray, version: np.ndarray,
                       rival: np.ndarray | None = None) -> np.ndarray:
    """(P,) query row, score and version label of candidate pairs -> (P,) each pair's score minus the best
    score of its query's rivals: candidates of another version (less 0, the background level, when there is
    none). rival: (P,) bool, which candidates may be rivals (None: all). Versions of one photo (the same label)
    do not compete, so a bank holding two copies of a photo leaves both a margin."""
    score = np.asarray(score, np.float64)
    rival = np.ones(len(score), bool) if rival is None else np.asarray(rival, bool)
    out = score.copy()
    order = np.lexsort((-score, query))
    q, s, v, eligible = query[order], score[order], version[order], rival[order]
    starts = np.flatnonzero(np.r_[True, q[1:] != q[:-1]])
    for a, b in zip(starts, np.r_[starts[1:], len(q)]):
        sv, ss = v[a:b][eligible[a:b]], s[a:b][eligible[a:b]]
        if not len(ss):
            continue
        second = ss[sv != sv[0]]  # the best rival of another version than the best rival
        out[order[a:b]] -= np.where(v[a:b] == sv[0], second[0] if len(second) else 0.0, ss[0])
    return out
