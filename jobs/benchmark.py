"""Build a DISC2021-style copy-detection benchmark from a folder of photos.

Layout written to `out_dir`:
    references/R000000.jpg ...   photos a query may copy
    queries/Q00000.jpg ...       edited photos: about half copy a reference, the rest copy a
                                 photo found nowhere in the benchmark
    background/B000000.jpg ...   photos in neither set (for whitening, score normalisation)
    ground_truth.csv             query_id,reference_id (empty reference: no copy)
    query_meta.csv               query_id,kind,transforms (the edit chain as JSON, with params)

The photos are split (seeded) into references, sources of queries without a copy, hosts (the
unrelated photos that copies are pasted into or overlaid with; never written, so no query holds a
reference by accident) and background. Names follow a shuffled order and reveal nothing. Every
photo passes once through JPEG at `QUALITY` before use, so a copy is an edit of the reference file
exactly as written. The same photos and seed give the same bytes in every file, whether queries
are rendered in this process or by the Ray stage (used when Ray is running, or with use_ray=True).
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from copyscope.descriptors.errors import UserError
from copyscope.pipeline.atomic import atomic_write
from copyscope.pipeline.augment import Chain, chain_shape, sample_chain
from copyscope.pipeline.augment.stage import PhotoPool, apply_chains_local, apply_chains_ray, encode_jpeg
from copyscope.pipeline.decode import DecodeError
from copyscope.pipeline.failures import Failure
from copyscope.pipeline.files import list_images

QUALITY = 90
QUERY_KINDS = ("crop", "geometric", "overlay", "paste", "screenshot", "meme", "photometric", "mixed")
# Edits that may follow a query's dominant edit, as re-shares add them.
EXTRA_EDITS = ("flip", "rescale", "color_jitter", "blur", "jpeg", "grayscale", "sharpen", "crop", "pad", "text",
               "emoji")
REFERENCE_FRACTION, QUERY_FRACTION, HOST_FRACTION = 0.4, 0.4, 0.1


@dataclass(frozen=True)
class Split:
    """Photo ids by role. positives: the references that get a copied query (a subset)."""

    references: list[str]
    positives: list[str]
    negatives: list[str]
    hosts: list[str]
    background: list[str]


@dataclass(frozen=True)
class BenchmarkSummary:
    out_dir: str
    n_references: int
    n_queries: int
    n_positive_queries: int
    n_background: int
    n_hosts: int
    kinds: dict[str, int]
    failures: list[Failure] = field(default_factory=list)


def split_photos(ids: list[str], n_references: int | None = None, n_queries: int | None = None,
                 seed: int = 0) -> Split:
    """Seeded split of `ids` by role; defaults: 40 % references, 40 % queries (half of them
    copies), 10 % hosts, the rest background. Raises ValueError when the counts do not fit."""
    n = len(ids)
    n_ref = round(REFERENCE_FRACTION * n) if n_references is None else n_references
    n_q = round(QUERY_FRACTION * n) if n_queries is None else n_queries
    n_pos, n_hosts = n_q // 2, max(1, round(HOST_FRACTION * n))
    n_neg = n_q - n_pos
    if min(n_ref, n_q) < 0 or n_pos > n_ref or n_ref + n_neg + n_hosts > n:
        raise UserError(f"{n} photos cannot give {n_ref} references, {n_q} queries ({n_pos} copies, "
                         f"{n_neg} without) and {n_hosts} host photos")
    rng = np.random.default_rng([seed, 0])
    order = [ids[i] for i in rng.permutation(n)]
    refs, rest = order[:n_ref], order[n_ref:]
    positives = [refs[i] for i in sorted(rng.choice(n_ref, size=n_pos, replace=False))]
    return Split(refs, positives, rest[:n_neg], rest[n_neg : n_neg + n_hosts], rest[n_neg + n_hosts :])


def sample_query_chain(rng: np.random.Generator, kind: str, height: int, width: int,
                       other_keys: list[str]) -> Chain:
    """Edit chain of a query of `kind`: its dominant edit then 1-3 of EXTRA_EDITS;
    "mixed": 3-4 edits of any kind."""
    if kind == "mixed":
        return sample_chain(rng, height, width, (3, 4), None, other_keys)
    if kind not in QUERY_KINDS:
        raise KeyError(f"unknown query kind {kind!r}; known: {', '.join(QUERY_KINDS)}")
    chain = sample_chain(rng, height, width, (1, 1), [kind], other_keys)
    return chain + sample_chain(rng, *chain_shape(chain, height, width), (1, 3), EXTRA_EDITS)


def make_benchmark(photos_dir: str | os.PathLike, out_dir: str | os.PathLike, *, n_references: int | None = None,
                   n_queries: int | None = None, seed: int = 0, progress: bool = True,
                   use_ray: bool | None = None) -> BenchmarkSummary:
    """Write the benchmark (layout in the module docstring) into `out_dir`, which must be empty
    or absent. Photos that fail to decode are left out and listed in the summary's failures.
    use_ray: None renders queries with Ray if it is running, else in this process."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"benchmark folder {os.fspath(out)!r} is not empty")
    listing = list_images(photos_dir)
    paths = dict(listing.entries)
    split = split_photos(sorted(paths), n_references, n_queries, seed)
    failures = list(listing.failures)
    ref_ids, sizes = _write_photos(split.references, "R{:06d}", out / "references", paths, failures, progress)
    bg_ids, _ = _write_photos(split.background, "B{:06d}", out / "background", paths, failures, progress)
    hosts = list(_decoded_sizes(split.hosts, paths, failures))
    sizes |= _decoded_sizes(split.negatives, paths, failures)
    queries = _plan_queries(split, ref_ids, sizes, hosts, seed)
    written = _render_queries(queries, hosts, paths, out / "queries", failures, progress, use_ray)
    queries = [q for q in queries if q["id"] in written]
    _write_csvs(out, queries)
    return BenchmarkSummary(os.fspath(out), len(ref_ids), len(queries), sum(bool(q["reference"]) for q in queries),
                            len(bg_ids), len(hosts), dict(Counter(q["kind"] for q in queries)), failures)


def _decoded(ids: list[str], paths: dict[str, str], failures: list[Failure], desc: str = "",
             progress: bool = False) -> Iterator[tuple[str, np.ndarray]]:
    """(photo id, (H, W, 3) uint8) of each photo that decodes; the others become failures."""
    pool = PhotoPool(paths)
    for pid in tqdm(ids, desc=desc, disable=not progress):
        try:
            yield pid, pool.load(pid)
        except DecodeError as e:
            failures.append(Failure(paths[pid], e.reason))


def _decoded_sizes(ids: list[str], paths: dict[str, str], failures: list[Failure]) -> dict[str, tuple[int, int]]:
    return {pid: image.shape[:2] for pid, image in _decoded(ids, paths, failures)}


def _write_photos(ids: list[str], pattern: str, folder: Path, paths: dict[str, str], failures: list[Failure],
                  progress: bool) -> tuple[dict[str, str], dict[str, tuple[int, int]]]:
    """Re-encode photos as folder/<pattern.format(i)>.jpg, i their position in `ids`;
    -> ({photo id: written id}, {photo id: (h, w)})."""
    folder.mkdir(parents=True, exist_ok=True)
    position, names, sizes = {pid: i for i, pid in enumerate(ids)}, {}, {}
    for pid, image in _decoded(ids, paths, failures, folder.name, progress):
        names[pid], sizes[pid] = pattern.format(position[pid]), image.shape[:2]
        with atomic_write(folder / f"{names[pid]}.jpg") as f:
            f.write(encode_jpeg(image, QUALITY))
    return names, sizes


def _plan_queries(split: Split, ref_ids: dict[str, str], sizes: dict[str, tuple[int, int]], hosts: list[str],
                  seed: int) -> list[dict]:
    """Rows {"id", "source", "reference", "kind", "chain"} in a shuffled order, kinds balanced,
    for the positives and negatives in `sizes` (those that decode)."""
    rng = np.random.default_rng([seed, 1])
    positives = [p for p in split.positives if p in ref_ids]
    negatives = [p for p in split.negatives if p in sizes]
    planned = [(p, ref_ids[p], k) for p, k in zip(positives, _balanced_kinds(rng, len(positives)))]
    planned += [(p, "", k) for p, k in zip(negatives, _balanced_kinds(rng, len(negatives)))]
    queries = []
    for i, j in enumerate(rng.permutation(len(planned))):
        source, reference, kind = planned[j]
        chain = sample_query_chain(np.random.default_rng([seed, 2, i]), kind, *sizes[source], hosts)
        queries.append({"id": f"Q{i:05d}", "source": source, "reference": reference, "kind": kind,
                        "chain": json.dumps(chain)})
    return queries


def _balanced_kinds(rng: np.random.Generator, n: int) -> list[str]:
    kinds = [QUERY_KINDS[i % len(QUERY_KINDS)] for i in range(n)]
    return [kinds[i] for i in rng.permutation(n)]


def _render_queries(queries: list[dict], hosts: list[str], paths: dict[str, str], folder: Path,
                    failures: list[Failure], progress: bool, use_ray: bool | None) -> set[str]:
    """Render and write every query; -> the ids written (a failed one becomes a failure)."""
    folder.mkdir(parents=True, exist_ok=True)
    needed = {q["source"] for q in queries} | set(hosts)
    rows = [{k: q[k] for k in ("id", "source", "chain")} for q in queries]
    run = apply_chains_ray if (_ray_running() if use_ray is None else use_ray) else apply_chains_local
    results = run(rows, {k: paths[k] for k in needed}, reencode=QUALITY, quality=QUALITY)
    source_of, written = {q["id"]: q["source"] for q in queries}, set()
    for r in tqdm(results, total=len(rows), desc="queries", disable=not progress):
        qid = str(r["id"])
        if r["error"]:
            failures.append(Failure(paths[source_of[qid]], f"query {qid}: {r['error']}"))
            continue
        with atomic_write(folder / f"{qid}.jpg") as f:
            f.write(bytes(r["jpeg"]))
        written.add(qid)
    return written


def _ray_running() -> bool:
    import ray

    return ray.is_initialized()


def _write_csvs(out: Path, queries: list[dict]) -> None:
    with atomic_write(out / "ground_truth.csv", "w") as f:
        w = csv.writer(f)
        w.writerow(("query_id", "reference_id"))
        w.writerows((q["id"], q["reference"]) for q in queries)
    with atomic_write(out / "query_meta.csv", "w") as f:
        w = csv.writer(f)
        w.writerow(("query_id", "kind", "transforms"))
        w.writerows((q["id"], q["kind"], q["chain"]) for q in queries)
