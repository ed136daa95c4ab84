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
