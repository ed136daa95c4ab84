"""matching.index: oracle tests against brute-force inner product, atomic save/load, edge cases."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from copyscope.matching.index import (INDEX_TYPES, IndexCorruptError, IndexParams, SearchIndex, build_index,
                            gpu_available)

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


def _ids(n: int) -> list[str]:
    return [f"img/{i:05d}" for i in range(n)]


@pytest.fixture(scope="module")
def copies() -> tuple[np.ndarray, np.ndarray]:
    db, queries = _copies(groups=200, per_group=10, seed=0)
    return db, queries[:100]


@pytest.fixture(scope="module")
def built(copies) -> dict[str, SearchIndex]:
    db, _ = copies
    return {t: SearchIndex.build(db, _ids(len(db)), t, manifest={"model": "m", "size": 288})
            for t in INDEX_TYPES}


def _recall(rows: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(r) & set(t)) / len(t) for r, t in zip(rows, truth)]))


def test_flat_equals_brute_force():
    db, queries = _random(2000, seed=1), _random(50, seed=2)
    scores, rows = SearchIndex.build(db, _ids(2000)).search(queries, 10)
    want_scores, want_rows = _brute_force(db, queries, 10)
    assert scores.dtype == np.float32 and rows.dtype == np.int64 and rows.shape == (50, 10)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)


@pytest.mark.parametrize("index_type, min_recall", [("ivfpq", 0.8), ("hnsw", 0.95)])
def test_approximate_recall(built, copies, index_type, min_recall):
    db, queries = copies
    scores, rows = built[index_type].search(queries, 10)
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


def test_padding_never_reads_as_a_row(built, copies):
    db, queries = copies
    index = built["ivfpq"]
    try:
        index.set_search_params(nprobe=1)
        scores, rows = index.search(queries[:5], len(db))  # one list holds far fewer than N vectors
        hits = index.search_ids(queries[:5], len(db))
    finally:
        index.set_search_params(nprobe=16)
    assert rows.shape == (5, len(db)) and np.any(rows == -1)
    assert np.all(np.isneginf(scores[rows == -1])) and np.all(np.isfinite(scores[rows >= 0]))
    assert [len(h) for h in hits] == list((rows >= 0).sum(axis=1))
    assert hits[0][0] == (index.ids[rows[0, 0]], pytest.approx(float(scores[0, 0])))


def test_batched_search_matches_single_batch(built, copies):
    _, queries = copies
    one = built["flat"].search(queries, 5)
    many = built["flat"].search(queries, 5, batch_size=7)
    np.testing.assert_array_equal(one[1], many[1])
    np.testing.assert_array_equal(one[0], many[0])


@pytest.mark.parametrize("index_type", INDEX_TYPES)
def test_save_load_round_trip(built, copies, tmp_path, index_type):
    _, queries = copies
    index = built[index_type]
    index.save(tmp_path)
    loaded = SearchIndex.load(tmp_path)
    assert loaded.ids == index.ids and loaded.params == index.params and loaded.index_type == index_type
    assert loaded.manifest == {"model": "m", "size": 288}
    if index_type == "ivfpq":  # search params reach faiss after a load
        assert loaded.index.nprobe == index.params.nprobe
    if index_type == "hnsw":
        assert loaded.index.hnsw.efSearch == index.params.ef_search == 128
    for got, want in zip(loaded.search(queries, 10), index.search(queries, 10)):
        np.testing.assert_array_equal(got, want)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["index_type"] == index_type and manifest["dim"] == D and manifest["count"] == 2000
    assert manifest["params"]["nprobe"] == index.params.nprobe and manifest["faiss_version"]
    assert manifest["files"]["ids.txt"]["size"] == (tmp_path / "ids.txt").stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ids.txt", "index.faiss", "manifest.json"]


def _saved(tmp_path, built) -> SearchIndex:
    built["flat"].save(tmp_path)
    return built["flat"]


def test_load_refuses_missing_manifest(tmp_path, built):
    _saved(tmp_path, built)
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(IndexCorruptError, match="manifest.json is missing"):
        SearchIndex.load(tmp_path)


def test_load_refuses_truncated_index(tmp_path, built):
    _saved(tmp_path, built)
    data = (tmp_path / "index.faiss").read_bytes()
    (tmp_path / "index.faiss").write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexCorruptError, match="index.faiss"):
        SearchIndex.load(tmp_path)


def test_load_refuses_tampered_ids(tmp_path, built):
    _saved(tmp_path, built)
    text = (tmp_path / "ids.txt").read_text()
    (tmp_path / "ids.txt").write_text(text.replace("img/00001", "img/00002"))  # same size, new hash
    with pytest.raises(IndexCorruptError, match="ids.txt"):
        SearchIndex.load(tmp_path)


def test_load_refuses_bad_manifest(tmp_path, built):
    _saved(tmp_path, built)
    (tmp_path / "manifest.json").write_text('{"format": 1}')
    with pytest.raises(IndexCorruptError, match="lacks"):
        SearchIndex.load(tmp_path)
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(IndexCorruptError, match="JSON"):
        SearchIndex.load(tmp_path)


def test_leftover_tmp_file_is_ignored(tmp_path, built):
    index = _saved(tmp_path, built)
    (tmp_path / ".index.faiss.x1y2.tmp").write_bytes(b"half written")
    assert SearchIndex.load(tmp_path).ids == index.ids


@pytest.mark.parametrize("fail_at", [0, 1, 2])
def test_crash_during_save_never_loads_a_mix(tmp_path, monkeypatch, fail_at):
    old_db, new_db, queries = _random(300, seed=3), _random(200, seed=4), _random(5, seed=5)
    old = SearchIndex.build(old_db, _ids(300), manifest={"model": "old"})
    new = SearchIndex.build(new_db, [f"new/{i}" for i in range(200)], manifest={"model": "new"})
    old.save(tmp_path)
    real_replace, calls = os.replace, []

    def crashing_replace(src, dst):
        calls.append(dst)
        if len(calls) > fail_at:
            raise OSError("simulated crash")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crashing_replace)
    with pytest.raises(OSError, match="simulated crash"):
        new.save(tmp_path)
    monkeypatch.undo()
    assert not list(tmp_path.glob("*.tmp"))
    if fail_at == 0:  # nothing was replaced: the previous complete index
        loaded = SearchIndex.load(tmp_path)
        assert loaded.manifest == {"model": "old"} and loaded.ids == old.ids
        np.testing.assert_array_equal(loaded.search(queries, 3)[1], old.search(queries, 3)[1])
    else:
        with pytest.raises(IndexCorruptError, match="does not match"):
            SearchIndex.load(tmp_path)


def test_crash_during_first_save_leaves_no_index(tmp_path, monkeypatch, built):
    def crashing_replace(src, dst):
        raise OSError("simulated crash")

    monkeypatch.setattr(os, "replace", crashing_replace)
    with pytest.raises(OSError, match="simulated crash"):
        built["flat"].save(tmp_path / "new")
    monkeypatch.undo()
    with pytest.raises(IndexCorruptError, match="missing"):
        SearchIndex.load(tmp_path / "new")


def test_k_larger_than_n_and_empty_queries():
    db = _random(7, seed=6)
    index = SearchIndex.build(db, _ids(7))
    scores, rows = index.search(_random(3, seed=7), 50)
    assert rows.shape == (3, 7) and sorted(rows[0]) == list(range(7))
    scores, rows = index.search(np.zeros((0, D), np.float32), 5)
    assert scores.shape == rows.shape == (0, 5) and scores.dtype == np.float32 and rows.dtype == np.int64


def test_empty_flat_index(tmp_path):
    index = SearchIndex.build(np.zeros((0, D), np.float32), [], manifest={"model": "m"})
    scores, rows = index.search(_random(4, seed=8), 10)
    assert scores.shape == rows.shape == (4, 0) and rows.dtype == np.int64
    index.save(tmp_path)
    assert len(SearchIndex.load(tmp_path)) == 0 and index.search_ids(_random(2, seed=9), 3) == [[], []]
    with pytest.raises(ValueError, match="flat"):
        build_index(np.zeros((0, D), np.float32), "ivfpq")


def test_invalid_inputs():
    db = _random(20, seed=10)
    index = SearchIndex.build(db, _ids(20))
    with pytest.raises(ValueError, match="dimension 32"):
        index.search(np.zeros((2, 32), np.float32), 3)
    with pytest.raises(ValueError, match="k must be"):
        index.search(db[:2], 0)
    with pytest.raises(ValueError, match="flat, ivfpq, hnsw"):
        build_index(db, "lsh")
    with pytest.raises(ValueError, match="line breaks"):
        SearchIndex.build(db, _ids(19) + ["bad\nid"])
    with pytest.raises(ValueError, match="19 ids"):
        SearchIndex.build(db, _ids(19))
    with pytest.raises(ValueError, match="matrix"):
        build_index(db[0], "flat")
    with pytest.raises(TypeError, match="JSON serializable"):  # at build time, never midway through save
        SearchIndex.build(db, _ids(20), manifest={"weights": object()})


@pytest.mark.skipif(gpu_available(), reason="checks the error raised when faiss sees no GPU")
def test_use_gpu_without_gpu_raises():
    with pytest.raises(RuntimeError, match="no GPU"):
        build_index(_random(10, seed=11), "flat", use_gpu=True)


@pytest.mark.skipif(not gpu_available(), reason="faiss sees no GPU")
@pytest.mark.parametrize("index_type", INDEX_TYPES)
def test_gpu_search_matches_cpu(built, copies, index_type):
    db, queries = copies
    cpu = built[index_type]
    gpu = SearchIndex(cpu.index, cpu.ids, index_type=index_type, params=cpu.params, use_gpu=True)
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
