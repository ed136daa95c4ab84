"""FAISS index over L2-normalised float32 descriptors (inner product = cosine, higher = more similar).

`build_index` returns a trained, filled faiss index; `SearchIndex` pairs it with row ids and the
caller's metadata, searches in batches, and saves / loads an index directory:

    index.faiss    faiss.write_index of the CPU index
    ids.txt        utf-8, line i is the id of row i
    manifest.json  written last: index type, params, dim, count, versions, caller metadata under
                   "meta", and size + sha256 of the two files above, so that a directory left
                   half-replaced by a crash is refused instead of loaded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import uuid
from pathlib import Path
from typing import Any, Callable, Sequence

import faiss
import numpy as np

INDEX_TYPES = ("flat", "ivfpq", "hnsw")
MANIFEST_FORMAT = 1
_DATA_FILES = ("index.faiss", "ids.txt")
_MIN_POINTS_PER_CENTROID = 39  # below this faiss k-means warns that training is too thin
_MIN_AUTO_NBITS = 4


class IndexCorruptError(ValueError):
    """An index directory is incomplete or inconsistent (interrupted save, truncated or edited file)."""


@dataclasses.dataclass(frozen=True)
class IndexParams:
    """Build and search parameters. `None` fields are chosen from (N, D) by `resolve`."""

    nlist: int | None = None  # ivfpq lists; auto ~4*sqrt(N), keeping >= 39 training points per list
    pq_m: int | None = None  # ivfpq sub-quantizers; auto: largest divisor of D <= D/8 (512-d -> 64)
    nbits: int | None = None  # bits per sub-code; auto 8, fewer while N < 39 * 2**nbits
    nprobe: int = 16  # ivfpq lists visited per query (capped at nlist)
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 128

    def resolve(self, n: int, d: int, index_type: str) -> IndexParams:
        """Fill the automatic ivfpq fields for `n` vectors of dimension `d`."""
        if index_type != "ivfpq":
            return self
        if self.nbits is None and n < _MIN_POINTS_PER_CENTROID * 2**_MIN_AUTO_NBITS:
            raise ValueError(
                f"ivfpq needs at least {_MIN_POINTS_PER_CENTROID * 2**_MIN_AUTO_NBITS} vectors to "
                f"train its quantizers, got {n}; use index_type='flat' for so few vectors")
        nbits = self.nbits or min(8, int(math.log2(n / _MIN_POINTS_PER_CENTROID)))
        nlist = self.nlist or max(1, min(round(4 * math.sqrt(n)), n // _MIN_POINTS_PER_CENTROID))
        pq_m = self.pq_m or max(m for m in range(1, max(1, d // 8) + 1) if d % m == 0)
        if d % pq_m:
            raise ValueError(f"pq_m={pq_m} must divide the dimension {d}")
        return dataclasses.replace(self, nlist=nlist, pq_m=pq_m, nbits=nbits,
                                   nprobe=min(self.nprobe, nlist))


def gpu_available() -> bool:
    """True when this faiss build sees at least one GPU."""
    return faiss.get_num_gpus() > 0


def build_index(vectors: np.ndarray, index_type: str = "flat", *, params: IndexParams | None = None,
                use_gpu: bool = False) -> faiss.Index:
    """(N, D) float32 -> trained, filled faiss index with METRIC_INNER_PRODUCT.

    Training and adding run on the CPU; with `use_gpu` the result is a copy on all GPUs (flat and
    ivfpq; faiss has no GPU HNSW, so hnsw stays on the CPU). N = 0 works for flat and hnsw only.
    """
    if index_type not in INDEX_TYPES:
        raise ValueError(f"unknown index_type {index_type!r}; known: {', '.join(INDEX_TYPES)}")
    _check_gpu(use_gpu)
    x = _as_matrix(vectors, "vectors")
    n, d = x.shape
    if n == 0 and index_type == "ivfpq":
        raise ValueError("ivfpq cannot be trained on 0 vectors; use index_type='flat'")
    p = (params or IndexParams()).resolve(n, d, index_type)
    factory = {"flat": "Flat", "ivfpq": f"IVF{p.nlist},PQ{p.pq_m}x{p.nbits}", "hnsw": f"HNSW{p.hnsw_m}"}
    index = faiss.index_factory(d, factory[index_type], faiss.METRIC_INNER_PRODUCT)
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efConstruction = p.ef_construction
    if not index.is_trained:
        index.train(x)
    index.add(x)
    _apply_search_params(index, p)
    return _to_device(index, use_gpu)


def _as_matrix(x: np.ndarray, name: str) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"{name} must be a (N, D) matrix with D >= 1, got shape {x.shape}")
    return x


def _check_gpu(use_gpu: bool) -> None:
    if use_gpu and not gpu_available():
        raise RuntimeError("use_gpu=True but faiss sees no GPU (faiss-cpu build or no visible device)")


def _apply_search_params(index: faiss.Index, p: IndexParams) -> None:
    if isinstance(index, faiss.IndexIVF):
        index.nprobe = p.nprobe
    elif isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = p.ef_search


def _to_device(index: faiss.Index, use_gpu: bool) -> faiss.Index:
    """CPU index -> the index to search with: a copy on all GPUs for flat / ivfpq when `use_gpu`."""
    _check_gpu(use_gpu)
    if not use_gpu or isinstance(index, faiss.IndexHNSW):
        return index
    options = faiss.GpuMultipleClonerOptions()
    if isinstance(index, faiss.IndexIVFPQ):  # float16 lookup tables when fp32 ones overflow shared memory
        options.useFloat16 = index.pq.M * 2**index.pq.nbits > 16384
    return faiss.index_cpu_to_all_gpus(index, co=options)


def _atomic_write(path: Path, write: Callable[[str], None]) -> dict[str, Any]:
    """Write through `write(tmp_path)` to a temp file beside `path`, fsync, rename; -> {size, sha256}."""
    tmp = str(path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp"))  # same folder: rename is atomic
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        record = _file_record(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return record


def _file_record(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return {"size": path.stat().st_size, "sha256": digest.hexdigest()}


class SearchIndex:
    """A faiss index (CPU copy kept for saving), row ids (row i -> ids[i]) and caller metadata."""

    def __init__(self, index: faiss.Index, ids: Sequence[str], *, index_type: str, params: IndexParams,
                 manifest: dict[str, Any] | None = None, use_gpu: bool = False):
        for i in ids:
            if not isinstance(i, str) or "\n" in i or "\r" in i:
                raise ValueError(f"ids must be strings without line breaks, got {i!r}")
        if len(ids) != index.ntotal:
            raise ValueError(f"{len(ids)} ids for an index of {index.ntotal} vectors")
        self.index, self.ids, self.index_type = index, list(ids), index_type
        # JSON round trip up front: a metadata value JSON cannot hold fails here, not midway through save
        self.params, self.manifest, self.use_gpu = params, json.loads(json.dumps(manifest or {})), use_gpu
        _apply_search_params(index, params)
        self._searcher = _to_device(index, use_gpu)

    @classmethod
    def build(cls, vectors: np.ndarray, ids: Sequence[str], index_type: str = "flat",
              manifest: dict[str, Any] | None = None, params: IndexParams | None = None,
              use_gpu: bool = False) -> SearchIndex:
        """(N, D) float32 vectors + N ids -> SearchIndex.

        `manifest` is the caller's JSON-serialisable metadata (model name, preprocessing), saved
        under "meta" in manifest.json.
        """
        x = _as_matrix(vectors, "vectors")
        if len(ids) != len(x):
            raise ValueError(f"{len(ids)} ids for {len(x)} vectors")
        _check_gpu(use_gpu)
        p = (params or IndexParams()).resolve(len(x), x.shape[1], index_type)
        index = build_index(x, index_type, params=p)
        return cls(index, ids, index_type=index_type, params=p, manifest=manifest, use_gpu=use_gpu)

    @property
    def dim(self) -> int:
        return self.index.d

    def __len__(self) -> int:
        return self.index.ntotal

    def set_search_params(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Change ivfpq `nprobe` / hnsw `ef_search`; a value for the other index type is a ValueError."""
        for name, value, kind in (("nprobe", nprobe, "ivfpq"), ("ef_search", ef_search, "hnsw")):
            if value is not None and self.index_type != kind:
                raise ValueError(f"{name} applies to {kind} indexes, this one is {self.index_type}")
        changes = {k: v for k, v in (("nprobe", nprobe), ("ef_search", ef_search)) if v is not None}
        self.params = dataclasses.replace(self.params, **changes)
        _apply_search_params(self.index, self.params)
        self._searcher = _to_device(self.index, self.use_gpu)  # GPU copies take params when cloned

    def search(self, queries: np.ndarray, k: int, *,
               batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """(Q, D) float32 queries -> scores (Q, k') float32, rows (Q, k') int64, k' = min(k, N).

        Each row is sorted by descending score. Approximate indexes may find fewer than k' hits
        for a query; such rows are padded with row -1 and score -inf (see `search_ids`).
        """
        q = _as_matrix(queries, "queries")
        if q.shape[1] != self.dim:
            raise ValueError(f"queries have dimension {q.shape[1]}, the index has {self.dim}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        kk = min(k, len(self))
        scores = np.full((len(q), kk), -np.inf, dtype=np.float32)
        rows = np.full((len(q), kk), -1, dtype=np.int64)
        if kk == 0:
            return scores, rows
        for start in range(0, len(q), batch_size):
            s, r = self._searcher.search(q[start:start + batch_size], kk)
            scores[start:start + len(s)] = np.where(r >= 0, s, -np.inf)
            rows[start:start + len(r)] = r
        return scores, rows

    def search_ids(self, queries: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        """(Q, D) queries -> per query, up to k (id, score) pairs by descending score; no padding."""
        scores, rows = self.search(queries, k)
        return [[(self.ids[r], float(s)) for s, r in zip(srow, rrow) if r >= 0]
                for srow, rrow in zip(scores, rows)]

    def save(self, directory: str | os.PathLike) -> None:
        """Write index.faiss, ids.txt, then manifest.json, each atomically (temp file + rename)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        ids_bytes = "".join(f"{i}\n" for i in self.ids).encode("utf-8")
        files = {
            "index.faiss": _atomic_write(directory / "index.faiss",
                                         lambda tmp: faiss.write_index(self.index, tmp)),
            "ids.txt": _atomic_write(directory / "ids.txt", lambda tmp: Path(tmp).write_bytes(ids_bytes)),
        }
        manifest = {
            "format": MANIFEST_FORMAT, "index_type": self.index_type,
            "params": dataclasses.asdict(self.params), "dim": self.dim, "count": len(self),
            "faiss_version": faiss.__version__, "numpy_version": np.__version__,
            "files": files, "meta": self.manifest,
        }
        text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
        _atomic_write(directory / "manifest.json", lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))

    @classmethod
    def load(cls, directory: str | os.PathLike, use_gpu: bool = False) -> SearchIndex:
        """Load a saved directory; IndexCorruptError when it is incomplete or inconsistent."""
        directory = Path(directory)
        manifest = _read_manifest(directory)
        for name in _DATA_FILES:
            path, expected = directory / name, manifest["files"][name]
            if not path.is_file():
                raise IndexCorruptError(f"{path} is missing")
            if _file_record(path) != expected:
                raise IndexCorruptError(f"{path} does not match manifest.json (size or sha256): "
                                        "an interrupted save or an edited file; rebuild or save again")
        index = faiss.read_index(str(directory / "index.faiss"))
        text = (directory / "ids.txt").read_bytes().decode("utf-8")
        ids = text.split("\n")[:-1]
        if not index.ntotal == len(ids) == manifest["count"] or index.d != manifest["dim"]:
            raise IndexCorruptError(f"{directory}: index has {index.ntotal} x {index.d}, ids.txt {len(ids)} "
                                    f"ids, manifest says {manifest['count']} x {manifest['dim']}")
        return cls(index, ids, index_type=manifest["index_type"], params=IndexParams(**manifest["params"]),
                   manifest=manifest["meta"], use_gpu=use_gpu)


def _read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / "manifest.json"
    if not path.is_file():
        raise IndexCorruptError(f"{path} is missing: not an index directory, or its save did not finish")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IndexCorruptError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise IndexCorruptError(f"{path}: not a format {MANIFEST_FORMAT} index manifest")
    missing = {"index_type", "params", "dim", "count", "files", "meta"} - manifest.keys()
    missing |= {f"files.{name}" for name in _DATA_FILES if name not in manifest.get("files", {})}
    if missing:
        raise IndexCorruptError(f"{path} lacks {', '.join(sorted(missing))}")
    return manifest
