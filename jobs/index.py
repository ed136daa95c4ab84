"""`index`: a folder of reference images -> descriptor shards -> a saved FAISS index.

INDEX_DIR/
  shards/shard-NNNNNN.npz   resumable shards of descriptors and local features (see pipeline.shards)
  index.faiss, ids.txt      the FAISS index and its row -> image id list
  manifest.json             model, preprocessing, index type, counts, versions (written last)
  failures.csv              path,reason for every file that could not be indexed
  summary.json              counts and timings of the last run
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from copyscope.matching.index import IndexParams, SearchIndex
from copyscope.pipeline.atomic import atomic_write
from copyscope.pipeline.embedding import EmbedSettings, embed_rows
from copyscope.pipeline.failures import Failure, write_failures_csv
from copyscope.pipeline.files import list_images, relative_path
from copyscope.pipeline.model_spec import ModelSpec
from copyscope.pipeline.ray_runtime import ray_session
from copyscope.pipeline.shards import PlannedShard, Shard, ShardStore, plan_shards
from copyscope.pipeline.stages import LocalSpec, PrepareOptions, row_local_features


@dataclass(frozen=True)
class IndexSummary:
    images: int
    indexed: int
    failed: int
    shards_total: int
    shards_computed: int
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
    shard_size: int = 1000,
    ray_address: str | None = None,
    progress: bool = True,
    on_shard_written: Callable[[int], None] | None = None,
    pixel_hash: bool = False,
) -> IndexSummary:
    """Embed every image under `ref_dir` and save the index in `out_dir`. Re-running resumes.

    local: local features to store for verification (None: global descriptors only).
    on_shard_written: called with each shard number once it is on disk (a crash hook for tests).
    pixel_hash: also store a digest of each image's decoded pixels (`ShardStore.read_pixel_hashes`).
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    listing = list_images(ref_dir)
    descriptor = spec.build(num_threads=1)
    fingerprint = {"model": spec.to_dict(), "descriptor": descriptor.spec(),
                   "local": asdict(local) if local else None} | ({"pixel_hash": True} if pixel_hash else {})
    store = ShardStore(out_dir / "shards", fingerprint)
    planned = plan_shards(listing.entries, shard_size)
    todo = [p for p in planned if not store.is_complete(p)]
    if todo:
        prepare = PrepareOptions(descriptor.cfg.to_dict(), local=local, pixel_hash=pixel_hash)
        with ray_session(ray_address):
            _compute_shards(todo, store, spec, prepare, settings, progress, on_shard_written)

    ids, vectors, failures = _collect(planned, store, descriptor.dim, ref_dir)
    failures += [Failure(relative_path(ref_dir, f.path), f.reason) for f in listing.failures]
    index = SearchIndex.build(vectors, ids, index_type, params=index_params, manifest=fingerprint)
    index.save(out_dir)
    write_failures_csv(out_dir / "failures.csv", failures)
    summary = IndexSummary(images=len(listing.entries) + len(listing.failures), indexed=len(ids),
                           failed=len(failures), shards_total=len(planned), shards_computed=len(todo),
                           seconds=round(time.perf_counter() - start, 3))
    with atomic_write(out_dir / "summary.json", "w") as f:
        json.dump(asdict(summary), f, indent=2)
    return summary


def _compute_shards(todo: list[PlannedShard], store: ShardStore, spec: ModelSpec, prepare: PrepareOptions,
                    settings: EmbedSettings, progress: bool, on_shard_written: Callable[[int], None] | None) -> None:
    """Stream the pending shards' images through Ray; write each shard as soon as it is whole."""
    by_shard = {p.index: p for p in todo}
    rows = [{"id": i, "path": path, "shard": p.index} for p in todo for i, path in zip(p.ids, p.paths)]
    pending: dict[int, dict[str, tuple]] = {k: {} for k in by_shard}
    with tqdm(total=len(rows), desc="index", unit="img", disable=not progress) as bar:
        for batch in embed_rows(rows, spec, prepare, settings):
            for i, (iid, shard) in enumerate(zip(batch["id"], batch["shard"])):
                local = row_local_features(batch, i, prepare.local_method) if prepare.local_method else None
                digest = str(batch["pixel_hash"][i]) if prepare.pixel_hash else ""
                pending[int(shard)][str(iid)] = (batch["embedding"][i], str(batch["error"][i]), local, digest)
            for k in {int(s) for s in batch["shard"]}:
                plan = by_shard[k]
                if len(pending[k]) == len(plan.ids):
                    done = [pending[k][i] for i in plan.ids]
                    del pending[k]
                    store.write(k, Shard(plan.ids, plan.stamps, np.stack([d[0] for d in done]),
                                         [d[1] for d in done], [d[2] for d in done] if prepare.local_method else [],
                                         [d[3] for d in done] if prepare.pixel_hash else []))
                    if on_shard_written:
                        on_shard_written(k)
            bar.update(len(batch["id"]))


def _collect(planned: list[PlannedShard], store: ShardStore, dim: int,
             root: str | os.PathLike) -> tuple[list[str], np.ndarray, list[Failure]]:
    """All shards -> indexed ids, (N, D) descriptors, and the failures recorded in them."""
    ids, parts, failures = [], [], []
    for plan in planned:
        shard = store.read(plan.index)
        ok = np.array([not e for e in shard.errors], dtype=bool)
        ids += [i for i, good in zip(shard.ids, ok) if good]
        parts.append(shard.embeddings[ok])
        failures += [Failure(relative_path(root, p), e) for p, e in zip(plan.paths, shard.errors) if e]
    vectors = np.concatenate(parts) if parts else np.empty((0, dim), np.float32)
    return ids, vectors, failures
