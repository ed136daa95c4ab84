"""matching.whitening and the indexes that carry one: what a collection shares weighs less, the FAISS index
searches in the whitened space (against a brute-force oracle), and an index directory keeps its whitening
across restarts, refits it as the catalog grows, and rebuilds it when its file is torn."""

from __future__ import annotations

import numpy as np
import pytest

from copyscope.matching.index import SearchIndex
from copyscope.matching.reranking import DEFAULT_NORM, PACKAGED_CALIBRATIONS
from copyscope.matching.scoring import CalibrationMismatch, FittedCalibration
from copyscope.matching.whitening import REFIT_MIN, Whitening, WhiteningSpec, fit_whitening
from copyscope.pipeline.catalog import Reference
from copyscope.pipeline.engine import CopyIndex
from copyscope.pipeline.index_files import WHITENING_FILE, load_faiss, read_manifest, save_faiss
from copyscope.pipeline.model_spec import ModelSpec

D = 64


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def templated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n descriptors of different photos, half of them in one shared frame (a strong common direction) ->
    (n, D) vectors, and the frame direction."""
    rng = np.random.default_rng(seed)
    frame = unit(rng.normal(size=D))
    x = rng.normal(size=(n, D)) / np.sqrt(D)
    x[: n // 2] += 1.5 * frame
    return unit(x), frame


def test_an_empty_or_tiny_collection_keeps_cosines():
    x = unit(np.random.default_rng(0).normal(size=(5, D)))
    for fitted, tolerance in ((fit_whitening(np.empty((0, D))), 1e-5), (fit_whitening(x[:1]), 0.02)):
        w = fitted(x)
        np.testing.assert_allclose(w @ w.T, x @ x.T, atol=tolerance)
    assert fit_whitening(x[:1]).fitted_on == 1


def test_what_the_collection_shares_weighs_less_and_a_copy_stays_close():
    x, _ = templated(400, seed=1)
    w = fit_whitening(x)
    a, b = x[0], x[1]  # two different photos in the same frame
    copy = unit(a + 0.15 * np.random.default_rng(2).normal(size=D) / np.sqrt(D))
    raw_pair, raw_copy = float(a @ b), float(a @ copy)
    wa, wb, wc = w(np.stack([a, b, copy]))
    assert raw_pair > 0.5  # the frame makes them look alike
    assert float(wa @ wb) < raw_pair - 0.3
    assert float(wa @ wc) > 0.9 and float(wa @ wc) - float(wa @ wb) > raw_copy - raw_pair
    assert np.allclose(np.linalg.norm(w(x), axis=1), 1, atol=1e-5)


def test_the_prior_shrinks_the_whitening_of_a_small_collection():
    x, frame = templated(40, seed=3)
    strong, mild = fit_whitening(x, WhiteningSpec(prior=0)), fit_whitening(x, WhiteningSpec(prior=4000))
    pair = lambda w: float(np.dot(*w(x[:2])))  # noqa: E731
    assert pair(strong) < pair(mild) < float(x[0] @ x[1]) + 1e-6


def test_refit_rule_and_arrays_round_trip():
    w = fit_whitening(unit(np.random.default_rng(4).normal(size=(100, D))))
    assert not w.outgrown(100) and not w.outgrown(124) and w.outgrown(125) and w.outgrown(79)
    empty = fit_whitening(np.empty((0, D)))
    assert not empty.outgrown(REFIT_MIN - 1) and empty.outgrown(REFIT_MIN)
    back = Whitening.from_arrays(w.to_arrays())
    x = unit(np.random.default_rng(5).normal(size=(3, D)))
    np.testing.assert_array_equal(back(x), w(x))
    assert back.fitted_on == 100


@pytest.mark.parametrize("index_type", ["flat", "hnsw"])
def test_search_index_searches_the_whitened_space(index_type, tmp_path):
    x, _ = templated(300, seed=6)
    w = fit_whitening(x)
    ids = np.arange(1000, 1300)
    index = SearchIndex.build(x[:200], ids[:200], index_type, whitening=w)
    index.add(x[200:], ids[200:])
    q = unit(x[:20] + 0.05 * np.random.default_rng(7).normal(size=(20, D)))
    scores, found = index.search(q, 5)
    oracle = w(q) @ w(x).T
    want = np.argsort(-oracle, axis=1)[:, :5]
    np.testing.assert_array_equal(found, ids[want])
    np.testing.assert_allclose(scores, np.take_along_axis(oracle, want, 1), atol=1e-4)
    manifest = {"index_type": index_type, "params": index.params.__dict__}
    manifest["faiss"] = save_faiss(tmp_path, index, generation=3) | {"params": index.params.__dict__}
    again = load_faiss(tmp_path, manifest, 3)
    np.testing.assert_allclose(again.search(q, 5)[0], scores, atol=1e-5)
    (tmp_path / WHITENING_FILE).write_bytes(b"torn")
    assert load_faiss(tmp_path, manifest, 3) is None  # its vectors are whitened: without it the index is stale


def whitened_calibration() -> FittedCalibration:
    start = PACKAGED_CALIBRATIONS[0]
    return FittedCalibration(start.calibration, start.features, "sscd_distilled", None, DEFAULT_NORM,
                             whitening=WhiteningSpec().to_dict())


def refs(names, vectors) -> list[Reference]:
    return [Reference(n, f"v:{n}", v) for n, v in zip(names, vectors)]


def test_an_index_keeps_its_whitening_refits_it_as_it_grows_and_rebuilds_a_torn_one(tmp_path):
    x = unit(np.random.default_rng(8).normal(size=(60, 512)))
    engine = CopyIndex.create(tmp_path / "idx", ModelSpec("sscd_distilled"), local=None,
                              calibration=whitened_calibration())
    assert read_manifest(tmp_path / "idx")["whitening"] == WhiteningSpec().to_dict()
    engine.add(refs([f"r{i}" for i in range(40)], x[:40]))
    assert engine.search_index().whitening.fitted_on == 40  # refitted on reaching REFIT_MIN
    engine.add(refs([f"r{i}" for i in range(40, 49)], x[40:49]))
    assert engine.search_index().whitening.fitted_on == 40  # 49 < 1.25 * 40: the same whitening
    engine.save()
    want = engine.search_index().search(x[:5], 3)
    reopened = CopyIndex.open(tmp_path / "idx")
    assert reopened.search_index().whitening.fitted_on == 40
    np.testing.assert_allclose(reopened.search_index().search(x[:5], 3)[0], want[0], atol=1e-5)
    reopened.add(refs([f"r{i}" for i in range(49, 60)], x[49:60]))
    assert reopened.search_index().whitening.fitted_on == 60 and len(reopened.search_index()) == 60
    reopened.add(refs([f"s{i}" for i in range(5)], x[:5]))
    assert reopened.search_index().whitening.fitted_on == 60
    reopened.save()
    reopened.refit_whitening()  # what a batch `index` ends with
    assert reopened.search_index().whitening.fitted_on == 65 and len(reopened.search_index()) == 65
    reopened.save()
    assert CopyIndex.open(tmp_path / "idx").search_index().whitening.fitted_on == 65  # saved, not lost
    (tmp_path / "idx" / WHITENING_FILE).write_bytes(b"torn")
    rebuilt = CopyIndex.open(tmp_path / "idx")  # stale: fitted again on the catalog
    assert rebuilt.search_index().whitening.fitted_on == 65
    assert rebuilt.match_embeddings(["q"], x[7:8], k=1).reference == ["r7"]
    rebuilt.save()  # and written whole again, so the next open loads it
    manifest = read_manifest(tmp_path / "idx")
    assert manifest["format"] == 3 and load_faiss(tmp_path / "idx", manifest, rebuilt.catalog.generation) is not None


def test_a_background_index_is_searched_in_the_space_of_the_index(tmp_path):
    x = unit(np.random.default_rng(9).normal(size=(80, 512)))
    engine = CopyIndex.create(tmp_path / "idx", ModelSpec("sscd_distilled"), local=None,
                              calibration=whitened_calibration())
    engine.add(refs([f"r{i}" for i in range(50)], x[:50]))
    background = CopyIndex.create(tmp_path / "bg", ModelSpec("sscd_distilled"), local=None)  # raw: no calibration
    background.add(refs([f"b{i}" for i in range(30)], x[50:]))
    assert background.search_index().whitening is None and background.manifest["whitening"] is None
    w = engine.search_index().whitening
    scores, _ = background.search_index_in(w).search(x[:4], 30)
    np.testing.assert_allclose(scores, -np.sort(-(w(x[:4]) @ w(x[50:]).T), axis=1), atol=1e-5)
    assert engine.match_embeddings(["q"], x[3:4], k=1, background=background).reference == ["r3"]


def test_a_whitened_index_refuses_a_calibration_fitted_on_raw_descriptors(tmp_path):
    engine = CopyIndex.create(tmp_path / "idx", ModelSpec("sscd_distilled"), local=None,
                              calibration=whitened_calibration())
    raw = FittedCalibration(PACKAGED_CALIBRATIONS[0].calibration, PACKAGED_CALIBRATIONS[0].features, "sscd_distilled",
                            None, DEFAULT_NORM)
    with pytest.raises(CalibrationMismatch, match="whitening"):
        engine.set_calibration(raw)


def test_the_default_sscd_index_whitens_and_none_keeps_raw(tmp_path):
    whitened = CopyIndex.create(tmp_path / "a", ModelSpec("sscd"))
    raw = CopyIndex.create(tmp_path / "b", ModelSpec("sscd"), whitening=False)
    assert whitened.calibration.whitening == WhiteningSpec().to_dict() == whitened.manifest["whitening"]
    assert raw.calibration.whitening is None and raw.manifest["whitening"] is None


def test_index_whitening_none_keeps_a_raw_index(tmp_path, capsys):
    from PIL import Image
    from skimage import data

    from copyscope.jobs.cli import main

    (tmp_path / "refs").mkdir()
    Image.fromarray(data.astronaut()).save(tmp_path / "refs" / "astronaut.jpg")
    for whitening, expected in (("none", None), ("collection", WhiteningSpec().to_dict())):
        out = tmp_path / f"idx_{whitening}"
        assert main(["index", str(tmp_path / "refs"), "--out", str(out), "--whitening", whitening, "--ray", "off",
                     "--quiet"]) == 0
        assert read_manifest(out)["whitening"] == expected
    assert main(["index", str(tmp_path / "refs"), "--out", str(tmp_path / "idx_collection"), "--whitening", "none",
                 "--ray", "off", "--quiet"]) == 1  # a whitened index is not grown as a raw one
    assert "whitens its descriptors" in capsys.readouterr().err
    assert main(["index", str(tmp_path / "refs"), "--out", str(tmp_path / "idx_none"), "--ray", "off",
                 "--quiet"]) == 0  # a raw index grows with the default options
    capsys.readouterr()
