"""FAISS index over L2-normalised float32 descriptors (inner product = cosine, higher = more similar).

Every vector carries a caller-chosen int64 id that survives adds and removes: flat and HNSW indexes
sit inside an `IndexIDMap2`, IVF-PQ keeps ids in its inverted lists. Flat and IVF-PQ remove in place.
FAISS's HNSW cannot remove a node, so a removed HNSW id becomes a tombstone, filtered out at search
time by an `IDSelector` (results stay exact k), and the graph is rebuilt from the live vectors once
tombstones pass `IndexParams.rebuild_share` of the index.

An index may carry a `Whitening` (matching.whitening): every vector added and every query searched is
whitened by it first, so callers always pass raw descriptors and scores are cosines in the whitened space.

Persistence is the caller's: `serialize` / `deserialize` give the index as bytes (pipeline.index_files
writes them atomically with a verified manifest, and the whitening beside them).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import faiss
import numpy as np

from copyscope.descriptors.errors import UserError
from copyscope.matching.whitening import Whitening

INDEX_TYPES = ("flat", "ivfpq", "hnsw")
_MIN_POINTS_PER_CENTROID = 39  # below this faiss k-means warns that training is too thin
_MIN_AUTO_NBITS = 4
MIN_IVFPQ_VECTORS = _MIN_POINTS_PER_CENTROID * 2**_MIN_AUTO_NBITS  # fewest vectors auto params can train on


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
    rebuild_share: float = 0.1  # hnsw: rebuild the graph once this share of its nodes are tombstones

    def resolve(self, n: int, d: int, index_type: str) -> IndexParams:
        """Fill the automatic ivfpq fields for `n` training vectors of dimension `d`."""
        if index_type != "ivfpq":
            return self
        if self.nbits is None and n < MIN_IVFPQ_VECTORS:
            raise UserError(
                f"ivfpq needs at least {MIN_IVFPQ_VECTORS} vectors to "
                f"train its quantizers, got {n}; use index_type='flat' for so few vectors")
        nbits = self.nbits or min(8, int(math.log2(n / _MIN_POINTS_PER_CENTROID)))
        nlist = self.nlist or max(1, min(round(4 * math.sqrt(n)), n // _MIN_POINTS_PER_CENTROID))
        pq_m = self.pq_m or max(m for m in range(1, max(1, d // 8) + 1) if d % m == 0)
        if d % pq_m:
            raise UserError(f"pq_m={pq_m} must divide the dimension {d}")
        return dataclasses.replace(self, nlist=nlist, pq_m=pq_m, nbits=nbits,
                                   nprobe=min(self.nprobe, nlist))


def gpu_available() -> bool:
    """True when this faiss build sees at least one GPU."""
    return faiss.get_num_gpus() > 0


def _as_matrix(x: np.ndarray, name: str) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"{name} must be a (N, D) matrix with D >= 1, got shape {x.shape}")
    return x


def _as_ids(ids: Sequence[int] | np.ndarray, n: int) -> np.ndarray:
    a = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
    if len(a) != n:
        raise ValueError(f"{len(a)} ids for {n} vectors")
    if len(a) and (a.min() < 0):
        raise ValueError("ids must be >= 0 (-1 pads search results)")
    if len(np.unique(a)) != len(a):
        raise ValueError("ids must be unique")
    return a


def _check_gpu(use_gpu: bool) -> None:
    if use_gpu and not gpu_available():
        raise RuntimeError("use_gpu=True but faiss sees no GPU (faiss-cpu build or no visible device)")


def new_faiss_index(d: int, index_type: str, params: IndexParams) -> faiss.Index:
    """An empty inner-product faiss index that takes ids (untrained for ivfpq: resolve params first)."""
    if index_type not in INDEX_TYPES:
        raise ValueError(f"unknown index_type {index_type!r}; known: {', '.join(INDEX_TYPES)}")
    if index_type == "ivfpq":
        return faiss.index_factory(d, f"IVF{params.nlist},PQ{params.pq_m}x{params.nbits}",
                                   faiss.METRIC_INNER_PRODUCT)
    inner = (faiss.IndexFlatIP(d) if index_type == "flat"
             else faiss.IndexHNSWFlat(d, params.hnsw_m, faiss.METRIC_INNER_PRODUCT))
    if index_type == "hnsw":
        inner.hnsw.efConstruction = params.ef_construction
    index = faiss.IndexIDMap2(inner)
    return index


class SearchIndex:
    """A faiss index of (N, D) vectors, each with a stable int64 id; add, remove and search in place.
    whitening: applied to every vector added and every query (None: vectors are stored as given)."""

    def __init__(self, index: faiss.Index, *, index_type: str, params: IndexParams,
                 tombstones: Sequence[int] | np.ndarray = (), use_gpu: bool = False,
                 whitening: Whitening | None = None):
        if index_type not in INDEX_TYPES:
            raise ValueError(f"unknown index_type {index_type!r}; known: {', '.join(INDEX_TYPES)}")
        _check_gpu(use_gpu)
        self.index, self.index_type, self.params, self.use_gpu = index, index_type, params, use_gpu
        self.whitening = whitening
        self.tombstones = {int(t) for t in tombstones}
        self._apply_search_params()
        self._gpu: faiss.Index | None = None

    @classmethod
    def build(cls, vectors: np.ndarray, ids: Sequence[int] | np.ndarray | None = None, index_type: str = "flat",
              params: IndexParams | None = None, use_gpu: bool = False,
              whitening: Whitening | None = None) -> SearchIndex:
        """(N, D) float32 vectors + N int64 ids (default 0..N-1) -> SearchIndex (ivfpq trained on them, whitened
        by `whitening` when given)."""
        x = _as_matrix(vectors, "vectors")
        ids = np.arange(len(x), dtype=np.int64) if ids is None else _as_ids(ids, len(x))
        if index_type == "ivfpq" and len(x) == 0:
            raise UserError("ivfpq cannot be trained on 0 vectors; use index_type='flat'")
        p = (params or IndexParams()).resolve(len(x), x.shape[1], index_type)
        index = new_faiss_index(x.shape[1], index_type, p)
        stored = x if whitening is None else np.ascontiguousarray(whitening(x))  # whitened once: train and add
        if not index.is_trained:
            index.train(stored)
        index.add_with_ids(stored, ids)
        return cls(index, index_type=index_type, params=p, use_gpu=use_gpu, whitening=whitening)

    @property
    def dim(self) -> int:
        return self.index.d

    def __len__(self) -> int:
        return self.index.ntotal - len(self.tombstones)

    def ids(self) -> np.ndarray:
        """(N,) int64 ids of the live vectors, in storage order."""
        if self.index_type == "ivfpq":
            invlists = faiss.extract_index_ivf(self.index).invlists
            parts = [faiss.rev_swig_ptr(invlists.get_ids(i), invlists.list_size(i)).copy()
                     for i in range(invlists.nlist) if invlists.list_size(i)]
            stored = np.concatenate(parts) if parts else np.empty(0, np.int64)
        else:
            stored = faiss.vector_to_array(self.index.id_map).astype(np.int64)
        if self.tombstones:
            stored = stored[~np.isin(stored, np.fromiter(self.tombstones, np.int64))]
        return stored

    def add(self, vectors: np.ndarray, ids: Sequence[int] | np.ndarray) -> None:
        """Add (N, D) vectors under N new ids (an id must not be live already; a tombstoned one may return)."""
        x = _as_matrix(vectors, "vectors")
        if x.shape[1] != self.dim:
            raise ValueError(f"vectors have dimension {x.shape[1]}, the index has {self.dim}")
        a = _as_ids(ids, len(x))
        if not len(a):
            return
        back = [int(i) for i in a if int(i) in self.tombstones]
        if back:  # an HNSW node cannot be revived in place: rebuild without the old copies first
            self.tombstones -= set(back)
            self._rebuild(drop=np.asarray(back, np.int64))
        self.index.add_with_ids(self._whitened(x), a)
        self._gpu = None

    def remove(self, ids: Sequence[int] | np.ndarray) -> int:
        """Remove ids (unknown ones are ignored) -> how many were live."""
        a = np.unique(np.asarray(ids, dtype=np.int64).reshape(-1))
        if not len(a):
            return 0
        if self.index_type != "hnsw":
            removed = int(self.index.remove_ids(faiss.IDSelectorBatch(a)))
        else:
            live = a[np.isin(a, self.ids())]
            self.tombstones |= {int(i) for i in live}
            removed = len(live)
            if len(self.tombstones) > self.params.rebuild_share * max(1, self.index.ntotal):
                self._rebuild()
        self._gpu = None
        return removed

    def _rebuild(self, drop: np.ndarray | None = None) -> None:
        """HNSW: a new graph from the live vectors (tombstones, and ids in `drop`, left out)."""
        stored = faiss.vector_to_array(self.index.id_map).astype(np.int64)
        inner = faiss.downcast_index(self.index.index)
        storage = faiss.downcast_index(inner.storage)
        vectors = faiss.rev_swig_ptr(storage.get_xb(), inner.ntotal * self.dim).reshape(-1, self.dim).copy()
        dead = np.fromiter(self.tombstones, np.int64, len(self.tombstones))
        if drop is not None:
            dead = np.concatenate([dead, drop])
        keep = ~np.isin(stored, dead)
        self.index = new_faiss_index(self.dim, self.index_type, self.params)
        self._apply_search_params()
        self.tombstones = set()
        if keep.any():
            self.index.add_with_ids(np.ascontiguousarray(vectors[keep]), stored[keep])

    def _apply_search_params(self) -> None:
        inner = faiss.extract_index_ivf(self.index) if self.index_type == "ivfpq" else None
        if inner is not None:
            inner.nprobe = self.params.nprobe
        elif self.index_type == "hnsw":
            faiss.downcast_index(self.index.index).hnsw.efSearch = self.params.ef_search

    def set_search_params(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Change ivfpq `nprobe` / hnsw `ef_search`; a value for the other index type is a ValueError."""
        for name, value, kind in (("nprobe", nprobe, "ivfpq"), ("ef_search", ef_search, "hnsw")):
            if value is not None and self.index_type != kind:
                raise ValueError(f"{name} applies to {kind} indexes, this one is {self.index_type}")
        changes = {k: v for k, v in (("nprobe", nprobe), ("ef_search", ef_search)) if v is not None}
        self.params = dataclasses.replace(self.params, **changes)
        self._apply_search_params()
        self._gpu = None  # GPU copies take params when cloned

    def search(self, queries: np.ndarray, k: int, *, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """(Q, D) float32 queries -> scores (Q, k') float32, ids (Q, k') int64, k' = min(k, len(self)).

        Each row is sorted by descending score. Approximate indexes may find fewer than k' hits for a
        query; such rows are padded with id -1 and score -inf.
        """
        q = _as_matrix(queries, "queries")
        if q.shape[1] != self.dim:
            raise ValueError(f"queries have dimension {q.shape[1]}, the index has {self.dim}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        q = self._whitened(q)
        kk = min(k, len(self))
        scores = np.full((len(q), kk), -np.inf, dtype=np.float32)
        ids = np.full((len(q), kk), -1, dtype=np.int64)
        if kk == 0:
            return scores, ids
        for start in range(0, len(q), batch_size):
            s, i = self._search(q[start:start + batch_size], kk)
            scores[start:start + len(s)] = np.where(i >= 0, s, -np.inf)
            ids[start:start + len(i)] = i
        return scores, ids

    def _whitened(self, x: np.ndarray) -> np.ndarray:
        return x if self.whitening is None else np.ascontiguousarray(self.whitening(x))

    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.tombstones:
            selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(np.fromiter(self.tombstones, np.int64)))
            params = faiss.SearchParametersHNSW(sel=selector, efSearch=self.params.ef_search)
            return self.index.search(q, k, params=params)
        if self.use_gpu and self.index_type != "hnsw":  # faiss has no GPU HNSW
            return self._gpu_search(q, k)
        return self.index.search(q, k)

    def _gpu_search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Search a GPU copy (flat: of the inner flat index, positions mapped to ids; ivfpq: whole)."""
        if self._gpu is None:
            options = faiss.GpuMultipleClonerOptions()
            if self.index_type == "ivfpq":  # float16 lookup tables when fp32 ones overflow shared memory
                pq = faiss.downcast_index(faiss.extract_index_ivf(self.index)).pq
                options.useFloat16 = pq.M * 2**pq.nbits > 16384
            source = self.index if self.index_type == "ivfpq" else faiss.downcast_index(self.index.index)
            self._gpu = faiss.index_cpu_to_all_gpus(source, co=options)
        s, i = self._gpu.search(q, k)
        if self.index_type == "flat":
            id_map = faiss.vector_to_array(self.index.id_map).astype(np.int64)
            i = np.where(i >= 0, id_map[np.maximum(i, 0)], -1)
        return s, i

    def serialize(self) -> np.ndarray:
        """The faiss index as (B,) uint8 bytes (tombstones are kept by the caller: `tombstones`)."""
        return faiss.serialize_index(self.index)

    @classmethod
    def deserialize(cls, data: np.ndarray, *, index_type: str, params: IndexParams,
                    tombstones: Sequence[int] = (), use_gpu: bool = False,
                    whitening: Whitening | None = None) -> SearchIndex:
        """The index `serialize` gave; `whitening`: the one it was built with (its vectors are stored whitened)."""
        index = faiss.deserialize_index(np.ascontiguousarray(data, np.uint8))
        return cls(index, index_type=index_type, params=params, tombstones=tombstones, use_gpu=use_gpu,
                   whitening=whitening)
