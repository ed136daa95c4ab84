"""`match`: a folder of query images against a saved index -> DISC2021 matches CSV.

Queries are embedded with the model and preprocessing recorded in the index manifest, then searched
with FAISS; every query gets at most k (reference, score) rows, best first.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from descriptors import PreprocessCfg
from matching.index import SearchIndex
from pipeline.embedding import EmbedSettings, embed_rows
from pipeline.failures import Failure, write_failures_csv
from pipeline.files import list_images, relative_path
from pipeline.formats import write_matches
from pipeline.model_spec import ModelSpec
from pipeline.ray_runtime import ray_session


@dataclass(frozen=True)
class MatchSummary:
    queries: int
    matched: int
    failed: int
    rows: int
    seconds: float


@dataclass(frozen=True)
class QueryEmbeddings:
    """ids (Q,), descriptors (Q, D) float32, failures of the queries that could not be embedded."""

    ids: list[str]
    vectors: np.ndarray
    failures: list[Failure]


def failures_path(out_csv: str | os.PathLike) -> Path:
    """matches.csv -> matches.failures.csv beside it."""
    out_csv = Path(out_csv)
    return out_csv.with_name(out_csv.stem + ".failures.csv")


def embed_folder(query_dir: str | os.PathLike, spec: ModelSpec, cfg: PreprocessCfg, dim: int,
                 settings: EmbedSettings, progress: bool = True) -> QueryEmbeddings:
    """Every image under `query_dir` -> its descriptor, in id order (needs a running Ray)."""
    listing = list_images(query_dir)
    rows = [{"id": i, "path": p} for i, p in listing.entries]
    found: dict[str, np.ndarray] = {}
    failures = [Failure(relative_path(query_dir, f.path), f.reason) for f in listing.failures]
    with tqdm(total=len(rows), desc="embed queries", unit="img", disable=not progress) as bar:
        for batch in embed_rows(rows, spec, cfg, settings):
            for iid, path, emb, err in zip(batch["id"], batch["path"], batch["embedding"], batch["error"]):
                if err:
                    failures.append(Failure(relative_path(query_dir, str(path)), str(err)))
                else:
                    found[str(iid)] = emb
            bar.update(len(batch["id"]))
    ids = sorted(found)
    vectors = np.stack([found[i] for i in ids]) if ids else np.empty((0, dim), np.float32)
    return QueryEmbeddings(ids, vectors, failures)


def match_folder(
    query_dir: str | os.PathLike,
    index_dir: str | os.PathLike,
    out_csv: str | os.PathLike,
    *,
    k: int = 10,
    settings: EmbedSettings = EmbedSettings(),
    use_gpu: bool = False,
    ray_address: str | None = None,
    progress: bool = True,
) -> MatchSummary:
    """Write `query_id,reference_id,score` (at most k rows a query) and OUT.failures.csv."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    start = time.perf_counter()
    index = SearchIndex.load(index_dir, use_gpu=use_gpu)
    spec = ModelSpec.from_dict(index.manifest["model"])
    cfg = PreprocessCfg.from_dict(index.manifest["descriptor"]["preprocess"])
    with ray_session(ray_address):
        queries = embed_folder(query_dir, spec, cfg, index.dim, settings, progress)
    scores, rows = index.search(queries.vectors, k)
    matches = [(qid, index.ids[r], s) for qid, qs, qr in zip(queries.ids, scores, rows)
               for s, r in zip(qs, qr) if r >= 0]
    n_rows = write_matches(out_csv, matches)
    write_failures_csv(failures_path(out_csv), queries.failures)
    return MatchSummary(queries=len(queries.ids) + len(queries.failures), matched=len(queries.ids),
                        failed=len(queries.failures), rows=n_rows, seconds=round(time.perf_counter() - start, 3))
