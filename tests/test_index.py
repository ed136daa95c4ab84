"""matching.index: oracle tests against brute-force inner product, ids through add / remove, edge cases."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from copyscope.matching.index import INDEX_TYPES, IndexParams, SearchIndex, gpu_available

D = 64


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _random(n: int, seed: int) -> np.ndarray:
    return _unit(np.random.default_rng(seed).normal(size=(n, D)))


def _copies(groups: int, per_group: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Copy-detection-like data: `per_group` noisy copies of each base vector, one held-out query per base."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(groups, D))
    db = np.repeat(base, per_group, axis=0) + 0.5 * rng.normal(size=(groups * per_group, D))
    return _unit(db), _unit(base + 0.5 * rng.normal(size=base.shape))


def _brute_force(db: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sims = queries.astype(np.float64) @ db.T.astype(np.float64)
    rows = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, rows, axis=1), rows


def _ids(n: int) -> np.ndarray:
    """Sparse, shuffled int64 ids: nothing may assume ids are row numbers."""
    return np.random.default_rng(99).permutation(n).astype(np.int64) * 13 + 7


@pytest.fixture(scope="module")
def copies() -> tuple[np.ndarray, np.ndarray]:
    db, queries = _copies(groups=200, per_group=10, seed=0)
    return db, queries[:100]


@pytest.fixture(scope="module")
def built(copies) -> dict[str, SearchIndex]:
    db, _ = copies
    return {t: SearchIndex.build(db, _ids(len(db)), t) for t in INDEX_TYPES}


def _recall(rows: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(r) & set(t)) / len(t) for r, t in zip(rows, truth)]))


def test_flat_equals_brute_force():
    db, queries = _random(2000, seed=1), _random(50, seed=2)
    ids = _ids(2000)
    scores, got = SearchIndex.build(db, ids).search(queries, 10)
    want_scores, want_rows = _brute_force(db, queries, 10)
    assert scores.dtype == np.float32 and got.dtype == np.int64 and got.shape == (50, 10)
    np.testing.assert_array_equal(got, ids[want_rows])
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)


@pytest.mark.parametrize("index_type, min_recall", [("ivfpq", 0.8), ("hnsw", 0.95)])
def test_approximate_recall(built, copies, index_type, min_recall):
    db, queries = copies
    ids = _ids(len(db))
    row_of = {int(i): r for r, i in enumerate(ids)}
    scores, got = built[index_type].search(queries, 10)
    rows = np.vectorize(row_of.get)(got)
    _, truth = _brute_force(db, queries, 10)
    assert _recall(rows, truth) >= min_recall
    assert np.all(np.diff(scores, axis=1) <= 0)
    exact = np.einsum("qd,qkd->qk", queries, db[rows])  # scores estimate inner products (PQ: ~0.1 off)
    assert np.mean(np.abs(scores - exact)) < (0.2 if index_type == "ivfpq" else 1e-5)


def test_ivfpq_default_params():
    p = IndexParams().resolve(2000, 64, "ivfpq")
    assert (p.nlist, p.pq_m, p.nbits, p.nprobe) == (51, 8, 5, 16)
    p = IndexParams().resolve(100_000, 512, "ivfpq")
    assert (p.nlist, p.pq_m, p.nbits) == (1265, 64, 8)
    assert IndexParams().resolve(50_000, 100, "ivfpq").pq_m == 10
    assert IndexParams(nlist=4, pq_m=16).resolve(50_000, 64, "ivfpq").nprobe == 4
    with pytest.raises(ValueError, match="flat"):
        IndexParams().resolve(500, 64, "ivfpq")
    with pytest.raises(ValueError, match="divide"):
        IndexParams(pq_m=7).resolve(5000, 64, "ivfpq")


def test_nprobe_changes_ivfpq_search(built, copies):
    db, queries = copies
    index, (_, truth) = built["ivfpq"], _brute_force(db, queries, 10)
    truth = _ids(len(db))[truth]
    try:
        index.set_search_params(nprobe=1)
        narrow = _recall(index.search(queries, 10)[1], truth)
        index.set_search_params(nprobe=index.params.nlist)
        assert index.params.nprobe == index.params.nlist
        assert _recall(index.search(queries, 10)[1], truth) > narrow
    finally:
        index.set_search_params(nprobe=16)
    with pytest.raises(ValueError, match="ivfpq"):
        built["flat"].set_search_params(nprobe=4)


def test_padding_never_reads_as_an_id(built, copies):
    db, queries = copies
    index = built["ivfpq"]
    try:
        index.set_search_params(nprobe=1)
        scores, got = index.search(queries[:5], len(db))  # one list holds far fewer than N vectors
    finally:
        index.set_search_params(nprobe=16)
    assert got.shape == (5, len(db)) and np.any(got == -1)
    assert np.all(np.isneginf(scores[got == -1])) and np.all(np.isfinite(scores[got >= 0]))
    assert set(got[got >= 0].tolist()) <= set(_ids(len(db)).tolist())


def test_batched_search_matches_single_batch(built, copies):
    _, queries = copies
    one = built["flat"].search(queries, 5)
    many = built["flat"].search(queries, 5, batch_size=7)
    np.testing.assert_array_equal(one[1], many[1])
    np.testing.assert_array_equal(one[0], many[0])


@pytest.mark.parametrize("index_type", INDEX_TYPES)
def test_remove_and_add_in_place_equal_a_fresh_build(copies, index_type):
    """After removing some ids and adding new ones, search equals an index built from the survivors
    (exactly for flat and hnsw-vs-its-own-rebuild via flat oracle; by recall for the approximate ones)."""
    db, queries = copies
    ids = _ids(len(db))
    index = SearchIndex.build(db, ids, index_type)
    gone = ids[::7]
    assert index.remove(gone) == len(gone) and index.remove(gone) == 0  # a second remove finds nothing
    extra = _random(50, seed=21)
    extra_ids = np.arange(50, dtype=np.int64) + 10**9
    index.add(extra, extra_ids)
    alive = ~np.isin(ids, gone)
    want_db, want_ids = np.concatenate([db[alive], extra]), np.concatenate([ids[alive], extra_ids])
    assert len(index) == len(want_ids) and set(index.ids().tolist()) == set(want_ids.tolist())
    _, truth_rows = _brute_force(want_db, np.concatenate([queries, extra[:10]]), 10)
    scores, got = index.search(np.concatenate([queries, extra[:10]]), 10)
    assert not np.isin(got, gone).any()
    recall = _recall(got, want_ids[truth_rows])
    assert recall == 1.0 if index_type == "flat" else recall >= (0.8 if index_type == "ivfpq" else 0.95)


def test_hnsw_tombstones_filter_then_rebuild(copies):
    db, queries = copies
    ids = _ids(len(db))
    index = SearchIndex.build(db, ids, "hnsw", params=IndexParams(rebuild_share=0.1))
    few = ids[:50]
    index.remove(few)
    assert index.tombstones == set(few.tolist()) and len(index) == len(db) - 50
    _, got = index.search(db[:50], 10)  # the removed vectors themselves as queries: never found
    assert got.shape == (50, 10) and not np.isin(got, few).any() and (got >= 0).all()
    index.remove(ids[50:300])  # past 10 %: the graph is rebuilt without them
    assert index.tombstones == set() and index.index.ntotal == len(db) - 300
    index.add(db[:1], ids[:1])  # a removed id may come back
    assert index.search(db[:1], 1)[1][0, 0] == ids[0]
    restored = SearchIndex.deserialize(index.serialize(), index_type="hnsw", params=index.params)
    np.testing.assert_array_equal(restored.search(queries, 5)[1], index.search(queries, 5)[1])


@pytest.mark.parametrize("index_type", INDEX_TYPES)
def test_serialize_round_trip(built, copies, index_type):
    _, queries = copies
    index = built[index_type]
    loaded = SearchIndex.deserialize(index.serialize(), index_type=index_type, params=index.params)
    assert sorted(loaded.ids().tolist()) == sorted(index.ids().tolist())
    if index_type == "hnsw":
        assert faiss.downcast_index(loaded.index.index).hnsw.efSearch == index.params.ef_search == 128
    for got, want in zip(loaded.search(queries, 10), index.search(queries, 10)):
        np.testing.assert_array_equal(got, want)


def test_k_larger_than_n_and_empty_queries():
    db = _random(7, seed=6)
    index = SearchIndex.build(db, np.arange(7) + 100)
    scores, got = index.search(_random(3, seed=7), 50)
    assert got.shape == (3, 7) and sorted(got[0]) == list(range(100, 107))
    scores, got = index.search(np.zeros((0, D), np.float32), 5)
    assert scores.shape == got.shape == (0, 5) and scores.dtype == np.float32 and got.dtype == np.int64


def test_empty_flat_index():
    index = SearchIndex.build(np.zeros((0, D), np.float32))
    scores, got = index.search(_random(4, seed=8), 10)
    assert scores.shape == got.shape == (4, 0) and got.dtype == np.int64 and len(index) == 0
    with pytest.raises(ValueError, match="flat"):
        SearchIndex.build(np.zeros((0, D), np.float32), index_type="ivfpq")


def test_invalid_inputs():
    db = _random(20, seed=10)
    index = SearchIndex.build(db)
    with pytest.raises(ValueError, match="dimension 32"):
        index.search(np.zeros((2, 32), np.float32), 3)
    with pytest.raises(ValueError, match="k must be"):
        index.search(db[:2], 0)
    with pytest.raises(ValueError, match="flat, ivfpq, hnsw"):
        SearchIndex.build(db, index_type="lsh")
    with pytest.raises(ValueError, match="unique"):
        SearchIndex.build(db, [1] * 20)
    with pytest.raises(ValueError, match="19 ids"):
        SearchIndex.build(db, np.arange(19))
    with pytest.raises(ValueError, match=">= 0"):
        SearchIndex.build(db, np.arange(20) - 1)
    with pytest.raises(ValueError, match="matrix"):
        SearchIndex.build(db[0])


@pytest.mark.skipif(gpu_available(), reason="checks the error raised when faiss sees no GPU")
def test_use_gpu_without_gpu_raises():
    with pytest.raises(RuntimeError, match="no GPU"):
        SearchIndex.build(_random(10, seed=11), use_gpu=True)


@pytest.mark.skipif(not gpu_available(), reason="faiss sees no GPU")
@pytest.mark.parametrize("index_type", INDEX_TYPES)
def test_gpu_search_matches_cpu(built, copies, index_type):
    db, queries = copies
    cpu = built[index_type]
    gpu = SearchIndex.deserialize(cpu.serialize(), index_type=index_type, params=cpu.params, use_gpu=True)
    (cs, cr), (gs, gr) = cpu.search(queries, 10), gpu.search(queries, 10)
    if index_type == "ivfpq":  # GPU IVF-PQ may order near-ties differently
        assert _recall(gr, cr) >= 0.95
    elif index_type == "hnsw":  # faiss has no GPU HNSW: what is served must still be close to exact search
        want_scores, want_rows = _brute_force(db, queries, 10)
        assert _recall(gr, want_rows) >= 0.95
        np.testing.assert_allclose(gs[:, 0], want_scores[:, 0], atol=1e-4)  # the true best neighbour is found
    else:
        np.testing.assert_array_equal(gr, cr)
        np.testing.assert_allclose(gs, cs, atol=1e-4)
