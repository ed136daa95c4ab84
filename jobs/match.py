"""`match`: a folder of query images against an index -> DISC2021 matches CSV (a thin use of the engine).

Queries are embedded with the model and preprocessing recorded in the index (whole image, plus
sub-regions in full re-ranking), searched with FAISS and re-ranked (pipeline.engine.CopyIndex.match);
every query gets at most k (reference, score) rows, best first.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from copyscope.matching.reranking import RerankOptions
from copyscope.pipeline.atomic import atomic_write
from copyscope.pipeline.embedding import EmbedSettings
from copyscope.pipeline.embeddings_io import read_embeddings
from copyscope.pipeline.engine import CopyIndex, MatchResult
from copyscope.pipeline.failures import Failure, write_failures_csv
from copyscope.pipeline.files import list_images, relative_path
from copyscope.pipeline.formats import write_matches
from copyscope.pipeline.ray_runtime import choose_runner


@dataclass(frozen=True)
class MatchSummary:
    queries: int
    matched: int
    failed: int
    rows: int
    verified_pairs: int
    regions_searched: int  # queries whose regions were embedded (all of them without the cascade)
    seconds: float


def failures_path(out_csv: str | os.PathLike) -> Path:
    """matches.csv -> matches.failures.csv beside it."""
    out_csv = Path(out_csv)
    return out_csv.with_name(out_csv.stem + ".failures.csv")


def match_folder(
    query_dir: str | os.PathLike,
    index_dir: str | os.PathLike,
    out_csv: str | os.PathLike,
    *,
    k: int = 10,
    rerank: RerankOptions = RerankOptions(),
    background_dir: str | os.PathLike | None = None,
    ignore_dir: str | os.PathLike | None = None,
    explain_path: str | os.PathLike | None = None,
    settings: EmbedSettings = EmbedSettings(),
    use_gpu: bool = False,
    ray_address: str | None = None,
    use_ray: bool | None = None,
    progress: bool = True,
) -> MatchSummary:
    """Write `query_id,reference_id,score` (at most k rows a query, best first) and OUT.failures.csv.

    Scores: see CopyIndex.match. ignore_dir: an index of known frames (app UIs, meme templates, logos)
    whose inliers do not count. explain_path: JSON lines with every row's evidence.
    """
    start = time.perf_counter()
    engine = CopyIndex.open(index_dir, use_gpu=use_gpu)
    background = CopyIndex.open(background_dir) if background_dir is not None else None
    ignore = CopyIndex.open(ignore_dir) if ignore_dir is not None else None
    listing = list_images(query_dir)
    bars: dict[str, tqdm] = {}
    counts: dict[str, int] = {}

    def tick(stage: str, n: int) -> None:
        counts[stage] = counts.get(stage, 0) + n
        if stage not in bars:
            total = len(listing.entries) if stage == "embed" else None
            bars[stage] = tqdm(total=total, desc=f"{stage} queries" if stage == "embed" else stage,
                               unit="img" if stage in ("embed", "regions") else "pair", disable=not progress)
        bars[stage].update(n)

    try:
        with choose_runner(len(listing.entries), settings, ray_address, use_ray) as runner:
            result = engine.match(listing.entries, runner, k=k, rerank=rerank, background=background,
                                  ignore=ignore, progress=tick)
    finally:
        for bar in bars.values():
            bar.close()
    n_rows = write_matches(out_csv, zip(result.query, result.reference, result.score.astype("float32")))
    failures = [Failure(relative_path(query_dir, f.path), f.reason) for f in listing.failures + result.failures]
    write_failures_csv(failures_path(out_csv), failures)
    if explain_path:
        write_explain(explain_path, result)
    return MatchSummary(queries=len(result.queries) + len(failures), matched=len(result.queries),
                        failed=len(failures), rows=n_rows, verified_pairs=result.verified_pairs,
                        regions_searched=_regions_searched(rerank, counts, len(result.queries)),
                        seconds=round(time.perf_counter() - start, 3))


def _regions_searched(rerank: RerankOptions, counts: dict[str, int], queries: int) -> int:
    if rerank.mode != "full" or not rerank.regions:
        return 0
    return counts.get("regions", 0) if rerank.settle is not None else queries


def match_embeddings_file(path: str | os.PathLike, index_dir: str | os.PathLike, out_csv: str | os.PathLike, *,
                          k: int = 10, background_dir: str | os.PathLike | None = None) -> MatchSummary:
    """Precomputed query embeddings (Parquet, see pipeline.embeddings_io) against an index: global scores."""
    start = time.perf_counter()
    engine = CopyIndex.open(index_dir)
    background = CopyIndex.open(background_dir) if background_dir is not None else None
    names, vectors = read_embeddings(path, engine.dim)
    result = engine.match_embeddings(names, vectors, k=k, background=background)
    n_rows = write_matches(out_csv, zip(result.query, result.reference, result.score.astype("float32")))
    return MatchSummary(queries=len(names), matched=len(names), failed=0, rows=n_rows, verified_pairs=0, regions_searched=0,
                        seconds=round(time.perf_counter() - start, 3))


def write_explain(path: str | os.PathLike, result: MatchResult) -> None:
    """One JSON object per output row: ids, scores both ways, the best view's box and all evidence."""
    with atomic_write(path, "w") as f:
        for row in result.explain:
            f.write(json.dumps(row) + "\n")
