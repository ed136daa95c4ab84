"""`index`: bring an index directory in step with a folder of reference images (pipeline.engine).

The first run embeds every image; a later run on the same folder embeds only new and changed files
(by size and mtime), removes the references whose files are gone, and leaves the rest untouched, so
its result equals a fresh index of the folder (ivfpq: up to when its quantizers were trained). A killed
run keeps every batch it committed and the next run carries on. `--descriptors` builds the index from precomputed embeddings instead
(pipeline.embeddings_io).

INDEX_DIR/ catalog.sqlite, index.faiss, manifest.json (see pipeline.engine), and
  failures.csv   path,reason for every file that could not be indexed
  summary.json   counts and timings of the last run
"""

from __future__ import annotations

import json
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from copyscope.matching.index import IndexParams
from copyscope.matching.local_features import LocalSpec
from copyscope.matching.scoring import FittedCalibration
from copyscope.pipeline.atomic import atomic_write
from copyscope.pipeline.embedding import EmbedSettings
from copyscope.pipeline.catalog import Reference
from copyscope.pipeline.embeddings_io import embedding_stamp, read_embeddings
from copyscope.pipeline.engine import CopyIndex
from copyscope.pipeline.failures import Failure, write_failures_csv
from copyscope.pipeline.files import file_stamp, list_images, relative_path
from copyscope.pipeline.model_spec import ModelSpec
from copyscope.pipeline.ray_runtime import choose_runner


@dataclass(frozen=True)
class IndexSummary:
    images: int
    indexed: int
    failed: int
    added: int
    updated: int
    removed: int
    unchanged: int
    seconds: float


def index_folder(
    ref_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    spec: ModelSpec = ModelSpec(),
    *,
    index_type: str = "flat",
    index_params: IndexParams | None = None,
    settings: EmbedSettings = EmbedSettings(),
    local: LocalSpec | None = LocalSpec(),
    calibration: FittedCalibration | None = None,
    ray_address: str | None = None,
    use_ray: bool | None = None,
    progress: bool = True,
    on_batch: Callable[[int], None] | None = None,
    pixel_hash: bool = False,
    runner=None,
    region_model: ModelSpec | None = None,
    whitening: bool = True,
) -> IndexSummary:
    """Make `out_dir` index exactly the images under `ref_dir` (see the module doc).

    local: local features to store for verification (None: global descriptors only). use_ray: None
    decides by the amount of work (pipeline.ray_runtime.choose_runner). on_batch(n): called after each
    committed batch (a crash hook for tests). pixel_hash: also store a digest of each image's pixels.
    runner: a runner of the caller's (pipeline.runners) to embed with, so a job that goes on to verify keeps
    one pool of actors (default: chosen here by the amount of work). region_model: what embeds the region
    views of queries matched against it (CopyIndex.create). whitening: of a new index, whiten by its
    references where a calibration was fitted for it (CopyIndex.create).
    """
    start = time.perf_counter()
    listing = list_images(ref_dir)
    engine = CopyIndex.open_or_create(out_dir, spec, local=local, index_type=index_type, params=index_params,
                                      calibration=calibration, pixel_hash=pixel_hash, region_model=region_model,
                                      whitening=whitening)
    if calibration is not None:
        engine.set_calibration(calibration)
    paths = dict(listing.entries)
    stamps = {name: file_stamp(path) for name, path in listing.entries}
    stored, failed_before = engine.catalog.stamps(), engine.catalog.failure_stamps()
    todo = [(n, paths[n]) for n in sorted(paths) if stamps[n] not in (stored.get(n), failed_before.get(n))]
    gone = sorted((set(stored) | set(failed_before)) - set(paths))
    removed = engine.remove(gone)
    if todo:
        chosen = nullcontext(runner) if runner is not None else choose_runner(len(todo), settings, ray_address,
                                                                               use_ray)
        with chosen as embedding, tqdm(total=len(todo), desc="index", unit="img", disable=not progress) as bar:
            engine.add_images(todo, embedding, stamps=stamps, on_batch=on_batch, progress=bar.update)
    if todo or removed:
        engine.refit_whitening()  # fitted on the references as they are now: equal to a fresh index of them
    failures = [Failure(relative_path(ref_dir, paths[n]), reason) for n, reason in engine.catalog.failures()]
    failures += [Failure(relative_path(ref_dir, f.path), f.reason) for f in listing.failures]
    write_failures_csv(Path(out_dir) / "failures.csv", failures)
    updated = sum(1 for n, _ in todo if n in stored)
    return _finish(engine, out_dir, start, images=len(listing.entries) + len(listing.failures), failed=len(failures),
                   added=len(todo) - updated, updated=updated, removed=removed, unchanged=len(paths) - len(todo))


def index_embeddings(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    spec: ModelSpec,
    *,
    index_type: str = "flat",
    index_params: IndexParams | None = None,
) -> IndexSummary:
    """Make `out_dir` index exactly the precomputed embeddings in Parquet `path` (no local features):
    ids not seen before or whose vector changed are stored, ids no longer present are removed."""
    start = time.perf_counter()
    engine = CopyIndex.open_or_create(out_dir, spec, local=None, index_type=index_type, params=index_params)
    names, vectors = read_embeddings(path, engine.dim)
    stamps = [embedding_stamp(v) for v in vectors]
    stored = engine.catalog.stamps()
    todo = [i for i, (n, s) in enumerate(zip(names, stamps)) if stored.get(n) != s]
    removed = engine.remove(sorted(set(stored) - set(names)))
    for start_row in range(0, len(todo), 10_000):
        rows = todo[start_row:start_row + 10_000]
        engine.add([Reference(names[i], stamps[i], vectors[i]) for i in rows])
    updated = sum(1 for i in todo if names[i] in stored)
    return _finish(engine, out_dir, start, images=len(names), failed=0, added=len(todo) - updated, updated=updated,
                   removed=removed, unchanged=len(names) - len(todo))


def _finish(engine: CopyIndex, out_dir: str | os.PathLike, start: float, **counts) -> IndexSummary:
    """Save and close the engine, write summary.json -> the summary (counts: the IndexSummary fields but
    indexed and seconds)."""
    engine.save()
    summary = IndexSummary(indexed=len(engine), seconds=round(time.perf_counter() - start, 3), **counts)
    engine.close()
    with atomic_write(Path(out_dir) / "summary.json", "w") as f:
        json.dump(asdict(summary), f, indent=2)
    return summary
