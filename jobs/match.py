"""`match`: a folder of query images against a saved index -> DISC2021 matches CSV.

Queries are embedded with the model and preprocessing recorded in the index manifest (whole image,
plus sub-regions in full re-ranking), searched with FAISS, then re-ranked (pipeline.reranking);
every query gets at most k (reference, score) rows, best first.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from copyscope.descriptors import PreprocessCfg
from copyscope.matching.index import SearchIndex
from copyscope.matching.local_features import LocalFeatures
from copyscope.pipeline.atomic import atomic_write
from copyscope.pipeline.embedding import EmbedSettings, embed_rows
from copyscope.pipeline.failures import Failure, write_failures_csv
from copyscope.pipeline.files import list_images, relative_path
from copyscope.pipeline.formats import write_matches
from copyscope.pipeline.model_spec import ModelSpec
from copyscope.pipeline.ray_runtime import ray_session
from copyscope.matching.candidates import QueryViews, gather_candidates, top_per_query
from copyscope.matching.reranking import (
    FEATURES, RerankOptions, directional_scores, pair_features, query_background_level,
)
from copyscope.pipeline.verify_stage import verify_candidates
from copyscope.pipeline.stages import LocalSpec, PrepareOptions, row_local_features


@dataclass(frozen=True)
class MatchSummary:
    queries: int
    matched: int
    failed: int
    rows: int
    verified_pairs: int
    seconds: float


@dataclass(frozen=True)
class EmbeddedQueries:
    views: QueryViews
    local: dict[str, LocalFeatures]
    failures: list[Failure]


def failures_path(out_csv: str | os.PathLike) -> Path:
    """matches.csv -> matches.failures.csv beside it."""
    out_csv = Path(out_csv)
    return out_csv.with_name(out_csv.stem + ".failures.csv")


def embed_queries(query_dir: str | os.PathLike, spec: ModelSpec, prepare: PrepareOptions, dim: int,
                  settings: EmbedSettings, progress: bool = True) -> EmbeddedQueries:
    """Every image under `query_dir` -> its views' descriptors and local features (needs a running Ray)."""
    listing = list_images(query_dir)
    rows = [{"id": i, "path": p} for i, p in listing.entries]
    views: dict[str, list[tuple[int, np.ndarray, np.ndarray]]] = {}
    local: dict[str, LocalFeatures] = {}
    failures = [Failure(relative_path(query_dir, f.path), f.reason) for f in listing.failures]
    with tqdm(total=len(rows), desc="embed queries", unit="img", disable=not progress) as bar:
        for batch in embed_rows(rows, spec, prepare, settings):
            for i, (iid, view) in enumerate(zip(batch["id"], batch["view"])):
                iid = str(iid)
                if batch["error"][i]:
                    failures.append(Failure(relative_path(query_dir, str(batch["path"][i])), str(batch["error"][i])))
                    continue
                views.setdefault(iid, []).append((int(view), batch["box"][i], batch["embedding"][i]))
                if view == 0 and prepare.local_method:
                    local[iid] = row_local_features(batch, i, prepare.local_method)
            bar.update(int((batch["view"] == 0).sum()))
    ids = sorted(views)
    flat = [(q, box, emb) for q, iid in enumerate(ids) for _, box, emb in sorted(views[iid], key=lambda t: t[0])]
    view_query = np.array([q for q, _, _ in flat], np.int64)
    full = np.searchsorted(view_query, np.arange(len(ids)))  # view 0 comes first in each query's run
    vectors = np.stack([e for _, _, e in flat]) if flat else np.empty((0, dim), np.float32)
    boxes = np.stack([b for _, b, _ in flat]) if flat else np.empty((0, 4), np.int32)
    return EmbeddedQueries(QueryViews(ids, view_query, boxes, vectors, full), local, failures)


def load_background(path: str | os.PathLike | None, index: SearchIndex) -> SearchIndex | None:
    """A background index made with the same model and preprocessing as `index`, or None."""
    if path is None:
        return None
    background = SearchIndex.load(path)
    for key in ("model", "descriptor"):
        if background.manifest.get(key) != index.manifest.get(key):
            raise ValueError(f"background index {path} was made with another {key} than the reference index: "
                             f"{background.manifest.get(key)} != {index.manifest.get(key)}")
    return background


def match_folder(
    query_dir: str | os.PathLike,
    index_dir: str | os.PathLike,
    out_csv: str | os.PathLike,
    *,
    k: int = 10,
    rerank: RerankOptions = RerankOptions(),
    background_dir: str | os.PathLike | None = None,
    explain_path: str | os.PathLike | None = None,
    settings: EmbedSettings = EmbedSettings(),
    use_gpu: bool = False,
    ray_address: str | None = None,
    progress: bool = True,
) -> MatchSummary:
    """Write `query_id,reference_id,score` (at most k rows a query, best first) and OUT.failures.csv.

    Scores: with rerank "none", the global inner product (normalised against the background level
    when a background index is given, see RerankOptions.score_norm); otherwise the calibrated probability that the query is a
    copy of the reference (pipeline.reranking). explain_path: JSON lines with every row's evidence.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    start = time.perf_counter()
    index = SearchIndex.load(index_dir, use_gpu=use_gpu)
    background = load_background(background_dir, index)
    fingerprint = index.manifest
    local = fingerprint.get("local") if rerank.mode != "none" else None
    if rerank.mode != "none" and not local:
        raise ValueError(f"index {index_dir} stores no local features; re-index with them or use --rerank none")
    cfg = PreprocessCfg.from_dict(fingerprint["descriptor"]["preprocess"])
    prepare = PrepareOptions(cfg.to_dict(), regions=rerank.regions if rerank.mode == "full" else 0,
                             local=LocalSpec(**local) if local else None)
    with ray_session(ray_address):
        queries = embed_queries(query_dir, ModelSpec.from_dict(fingerprint["model"]), prepare, index.dim,
                                settings, progress)
        views = queries.views
        cands = gather_candidates(views, index, max(k, rerank.verify_top))
        level = query_background_level(views, background, rerank.background_k)
        evidence = [{} for _ in range(len(cands.query))]
        if rerank.mode != "none":
            chosen = top_per_query(cands.query, cands.global_score, rerank.verify_top)  # level is per query
            found = verify_candidates([views.ids[q] for q in cands.query[chosen]],
                                      [index.ids[r] for r in cands.reference[chosen]], queries.local,
                                      str(index_dir), fingerprint, rerank, progress)
            for p in chosen:
                evidence[p] = found[(views.ids[cands.query[p]], index.ids[cands.reference[p]])]
    features = pair_features(cands, level, evidence, rerank)
    if rerank.mode == "none":
        score, reverse = features["region"] if background else cands.global_score, None
    else:
        score, reverse = directional_scores(features, rerank.calibration)
    keep = top_per_query(cands.query, score, k)
    keep = keep[np.lexsort((-score[keep], cands.query[keep]))]
    n_rows = write_matches(out_csv, ((views.ids[cands.query[p]], index.ids[cands.reference[p]],
                                      np.float32(score[p])) for p in keep))
    write_failures_csv(failures_path(out_csv), queries.failures)
    if explain_path:
        write_explain(explain_path, keep, views, index, cands, features, evidence, score, reverse)
    return MatchSummary(queries=len(views.ids) + len(queries.failures), matched=len(views.ids),
                        failed=len(queries.failures), rows=n_rows,
                        verified_pairs=sum(bool(e) for e in evidence), seconds=round(time.perf_counter() - start, 3))


def write_explain(path, keep, views: QueryViews, index: SearchIndex, cands, features, evidence, score,
                  reverse) -> None:
    """One JSON object per output row: ids, scores both ways, the best view's box and all evidence."""
    with atomic_write(path, "w") as f:
        for p in keep:
            row = {"query_id": views.ids[cands.query[p]], "reference_id": index.ids[cands.reference[p]],
                   "score": float(score[p]), "reverse_score": None if reverse is None else float(reverse[p]),
                   "global_score": float(cands.global_score[p]),
                   "full_image_score": float(cands.full_score[p]) if np.isfinite(cands.full_score[p]) else None,
                   "best_view_box": views.view_box[cands.view[p]].tolist()}
            row |= {name: float(features[name][p]) for name in FEATURES} | evidence[p]
            f.write(json.dumps(row) + "\n")
