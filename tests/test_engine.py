"""pipeline.engine: in-place add / remove / match in process, incremental `index` against a fresh-index oracle,
stale FAISS files rebuilt from the catalog, calibration that travels with the index, precomputed descriptors."""

from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from copyscope.descriptors.errors import UserError
from copyscope.jobs.cli import main
from copyscope.jobs.index import index_folder
from copyscope.jobs.match import match_folder
from copyscope.matching.local_features import LocalSpec
from copyscope.matching.reranking import RerankOptions
from copyscope.matching.scoring import CalibrationMismatch, FittedCalibration
from copyscope.pipeline.embedding import EmbedSettings
from copyscope.pipeline.engine import CopyIndex
from copyscope.pipeline.decode import decode_image
from copyscope.pipeline.formats import read_matches
from copyscope.pipeline.index_files import IndexCorruptError
from copyscope.pipeline.model_spec import ModelSpec
from copyscope.pipeline.runners import LocalRunner
from tests.photo_edits import make_copy_set

SPEC = ModelSpec("sscd_distilled")
SETTINGS = EmbedSettings(num_actors=1, threads_per_actor=1, batch_size=4)


@pytest.fixture(scope="module")
def copy_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("set")
    truth = make_copy_set(root)
    return root, truth


def images(folder) -> list[tuple[str, str]]:
    return sorted((p.stem, str(p)) for p in folder.iterdir())


def best_match(result) -> dict[str, tuple[str, float]]:
    best = {}
    for q, r, s in zip(result.query, result.reference, result.score):
        best.setdefault(q, (r, float(s)))
    return best


def test_engine_adds_removes_and_matches_in_process(tmp_path, copy_set, monkeypatch):
    root, truth = copy_set

    def no_ray(*args, **kwargs):
        raise AssertionError("the engine started Ray work in process")

    for name in ("init", "data.from_items"):  # nothing of this may start Ray or a Ray dataset
        monkeypatch.setattr("ray." + name, no_ray)
    engine = CopyIndex.create(tmp_path / "idx", SPEC)
    refs = images(root / "refs")
    assert engine.add_images(refs[:-1]) == len(refs) - 1
    queries = [(q, str(root / "queries" / f"{q}.jpg")) for q in ("coffee_crop", "chelsea_text")]
    best = best_match(engine.match(queries, k=3))
    assert best["coffee_crop"][0] == "coffee" and best["chelsea_text"][0] == "chelsea"
    assert best["coffee_crop"][1] > 0.5

    engine.remove(["coffee"])  # gone at once: from FAISS and from the feature store
    assert "coffee" not in best_match(engine.match(queries[:1], k=3)).get("coffee_crop", ("",))[0]
    last = refs[-1]
    engine.add_images([last])  # a new reference is matchable at once
    q = [(f"{last[0]}_crop", str(root / "queries" / f"{last[0]}_crop.jpg"))]
    assert best_match(engine.match(q, k=1))[q[0][0]][0] == last[0]
    engine.save()

    reopened = CopyIndex.open(tmp_path / "idx")
    assert sorted(reopened.names().values()) == sorted(n for n, _ in refs if n != "coffee")
    assert reopened.catalog.ids_of(["chelsea"]) == engine.catalog.ids_of(["chelsea"])  # ids survive a restart
    n, mean, top = reopened.catalog.feature_bytes()
    assert n == len(refs) - 1 and 0 < mean <= top


def test_two_versions_of_a_photo_in_the_index_both_stand_out_for_its_copy(tmp_path, copy_set):
    from PIL import Image

    root, _ = copy_set
    version = tmp_path / "coffee_small.jpg"  # the same photo again, smaller and re-encoded
    with Image.open(root / "refs" / "coffee.jpg") as im:
        im.resize((im.width * 3 // 4, im.height * 3 // 4)).save(version, quality=70)
    engine = CopyIndex.create(tmp_path / "idx", SPEC)
    engine.add_images(images(root / "refs") + [("coffee_small", str(version))])
    result = engine.match([("coffee_crop", str(root / "queries" / "coffee_crop.jpg"))], k=5)
    margin = {row["reference_id"]: row["margin"] for row in result.explain}
    best = {row["reference_id"]: row["best_view"] for row in result.explain}
    assert margin["coffee"] > 0 and margin["coffee_small"] > 0  # neither is the other's rival
    rival = max(b for name, b in best.items() if not name.startswith("coffee"))
    assert margin["coffee_small"] == pytest.approx(best["coffee_small"] - rival)


@pytest.mark.parametrize("spec", [SPEC, ModelSpec("sscd")])  # sscd: whitened by its references
def test_incremental_index_equals_a_fresh_index(tmp_path, copy_set, spec):
    root, _ = copy_set
    folder = tmp_path / "refs"
    shutil.copytree(root / "refs", folder)
    for name in ("coffee_crop", "rocket_text"):  # two more references in the first version
        shutil.copy(root / "queries" / f"{name}.jpg", folder / f"{name}.jpg")
    first = index_folder(folder, tmp_path / "idx", spec, settings=SETTINGS, use_ray=False, progress=False)
    assert first.added == 8
    ids_before = CopyIndex.open(tmp_path / "idx").catalog.ids_of(["astronaut", "coffee_crop"])

    (folder / "coffee_crop.jpg").unlink()  # deleted
    (folder / "rocket_text.jpg").unlink()
    shutil.copy(root / "queries" / "unrelated_camera.png", folder / "camera.png")  # added
    target = folder / "chelsea.jpg"  # changed in place
    target.write_bytes((root / "queries" / "chelsea_grey_blur.jpg").read_bytes())
    os.utime(target, ns=(time.time_ns() + 10**9,) * 2)
    again = index_folder(folder, tmp_path / "idx", spec, settings=SETTINGS, use_ray=False, progress=False)
    assert (again.added, again.updated, again.removed, again.unchanged) == (1, 1, 2, 5)
    assert CopyIndex.open(tmp_path / "idx").catalog.ids_of(["astronaut", "coffee_crop"]) == \
        {"astronaut": ids_before["astronaut"]}

    index_folder(folder, tmp_path / "fresh", spec, settings=SETTINGS, use_ray=False, progress=False)
    a, b = CopyIndex.open(tmp_path / "idx"), CopyIndex.open(tmp_path / "fresh")
    assert sorted(a.names().values()) == sorted(b.names().values())
    for out, idx in (("a.csv", "idx"), ("b.csv", "fresh")):
        match_folder(root / "queries", tmp_path / idx, tmp_path / out, k=3, settings=SETTINGS, use_ray=False,
                     explain_path=tmp_path / f"{out}.jsonl", progress=False)
    ma, mb = read_matches(tmp_path / "a.csv"), read_matches(tmp_path / "b.csv")
    assert list(ma.query_ids) == list(mb.query_ids) and list(ma.reference_ids) == list(mb.reference_ids)
    np.testing.assert_allclose(ma.scores, mb.scores, atol=1e-4)
    assert "coffee_crop" not in set(ma.reference_ids)  # a deleted reference no longer matches


def test_stale_or_missing_faiss_file_is_rebuilt_from_the_catalog(tmp_path, copy_set):
    root, _ = copy_set
    index_folder(root / "refs", tmp_path / "idx", SPEC, settings=SETTINGS, use_ray=False, progress=False)
    queries = images(root / "queries")[:6]
    want = CopyIndex.open(tmp_path / "idx").match(queries, k=2, rerank=RerankOptions(mode="none"))
    data = (tmp_path / "idx" / "index.faiss").read_bytes()
    (tmp_path / "idx" / "index.faiss").write_bytes(data[: len(data) // 2])  # a torn file
    got = CopyIndex.open(tmp_path / "idx").match(queries, k=2, rerank=RerankOptions(mode="none"))
    assert got.reference == want.reference
    (tmp_path / "idx" / "index.faiss").unlink()
    engine = CopyIndex.open(tmp_path / "idx")
    assert len(engine.search_index()) == 6
    engine.remove(["rocket"])  # a change not saved: the file on disk is now behind the catalog
    assert CopyIndex.open(tmp_path / "idx").search_index().ids().size == 5


def test_corrupt_manifest_is_a_clear_error(tmp_path, copy_set):
    root, _ = copy_set
    CopyIndex.create(tmp_path / "idx", SPEC)
    manifest = tmp_path / "idx" / "manifest.json"
    text = manifest.read_text()
    manifest.write_text("{")
    with pytest.raises(IndexCorruptError, match="JSON"):
        CopyIndex.open(tmp_path / "idx")
    manifest.write_text(json.dumps({**json.loads(text), "format": 1}))
    with pytest.raises(IndexCorruptError, match="format 2"):
        CopyIndex.open(tmp_path / "idx")
    manifest.unlink()
    with pytest.raises(IndexCorruptError, match="copyscope index"):
        CopyIndex.open(tmp_path / "idx")
    with pytest.raises(UserError, match="no index at"):
        CopyIndex.open(tmp_path / "nowhere")
    CopyIndex.create(tmp_path / "other", SPEC)
    with pytest.raises(UserError, match="already holds an index"):
        CopyIndex.create(tmp_path / "other", SPEC)


def test_calibration_travels_with_the_index_and_is_refused_elsewhere(tmp_path, copy_set):
    root, _ = copy_set
    engine = CopyIndex.create(tmp_path / "idx", ModelSpec("sscd"))
    assert engine.calibration.model == "sscd" and engine.calibration.local == LocalSpec().to_dict()
    with pytest.raises(CalibrationMismatch, match="score normalisation"):
        engine.calibration_for(RerankOptions(score_norm="subtract"))
    other = FittedCalibration(engine.calibration.calibration, engine.calibration.features, "sscd_distilled",
                              LocalSpec().to_dict(), "stretch")
    with pytest.raises(CalibrationMismatch, match="model"):
        engine.set_calibration(other)
    # a model without a fitted calibration: rerank is refused with what to do, --rerank none works
    bare = CopyIndex.create(tmp_path / "timm", ModelSpec("timm:resnet18", options={"proj_dim": 32, "image_size": 64}),
                            local=LocalSpec(max_keypoints=50))
    assert bare.calibration is None
    bare.add_images(images(root / "refs")[:2])
    with pytest.raises(UserError, match="no calibration"):
        bare.match(images(root / "queries")[:1])
    assert len(bare.match(images(root / "queries")[:1], k=1, rerank=RerankOptions(mode="none"))) == 1
    # a written calibration file is taken by `index --calibration`
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(other.to_dict()))
    assert main(["index", str(root / "refs"), "--out", str(tmp_path / "with"), "--model", "sscd_distilled",
                 "--calibration", str(path), "--ray", "off", "--quiet"]) == 0
    assert CopyIndex.open(tmp_path / "with").calibration == other


def test_region_views_are_embedded_by_the_region_model(tmp_path, copy_set):
    root, _ = copy_set
    (name, path), = images(root / "queries")[:1]
    student = ModelSpec("sscd_distilled")  # distilled into sscd's descriptor space
    auto = CopyIndex.create(tmp_path / "auto", ModelSpec("sscd"), region_model=student)
    same = CopyIndex.create(tmp_path / "same", ModelSpec("sscd"))
    assert auto.region_spec == student and same.region_spec is None
    assert auto.calibration.region_model == "sscd_distilled" and same.calibration.region_model is None
    views = {}
    for engine in (auto, same):
        views[engine] = {v: (box, e) for v, box, e in
                         engine.embed_queries([(name, path)], LocalRunner(), regions=3, local=False).by_name[name]}
    assert views[auto].keys() == views[same].keys() and len(views[auto]) > 1
    np.testing.assert_allclose(views[auto][0][1], views[same][0][1], atol=1e-6)  # the whole image: sscd
    image = decode_image(path)
    for model, engine in ((student.build(), auto), (ModelSpec("sscd").build(), same)):
        for v, (box, vector) in views[engine].items():
            if v:
                crop = np.ascontiguousarray(image[box[1]:box[3], box[0]:box[2]])
                np.testing.assert_allclose(vector, model([crop])[0], atol=1e-5)
    crops = auto.embed_crops([(path, np.array([0.1, 0.1, 0.6, 0.7]))], LocalRunner())  # a dedup's closer look
    h, w = image.shape[:2]
    crop = np.ascontiguousarray(image[round(0.1 * h):round(0.7 * h), round(0.1 * w):round(0.6 * w)])
    np.testing.assert_allclose(crops[0], student.build()([crop])[0], atol=1e-5)
    # a calibration fitted with regions of the model itself is refused for an index whose student embeds them
    with pytest.raises(CalibrationMismatch, match="region model"):
        auto.set_calibration(same.calibration)
    # re-running `index` with the same choice opens the index; another choice is refused; an index made before
    # region models (no region_model in its manifest) opens as one whose regions are its own model's
    assert CopyIndex.open_or_create(tmp_path / "auto", ModelSpec("sscd"), region_model=student).region_spec == student
    with pytest.raises(UserError, match="region_model"):
        CopyIndex.open_or_create(tmp_path / "auto", ModelSpec("sscd"))
    manifest = json.loads((tmp_path / "same" / "manifest.json").read_text())
    del manifest["region_model"]
    (tmp_path / "same" / "manifest.json").write_text(json.dumps(manifest))
    assert CopyIndex.open_or_create(tmp_path / "same", ModelSpec("sscd")).region_spec is None


def test_index_region_model_option(tmp_path, copy_set, capsys):
    root, _ = copy_set
    refs = root / "refs"
    assert main(["index", str(refs), "--out", str(tmp_path / "student"), "--region-model", "sscd_distilled",
                 "--ray", "off", "--quiet"]) == 0
    index = CopyIndex.open(tmp_path / "student")
    assert index.region_spec == ModelSpec("sscd_distilled") and index.calibration.region_model == "sscd_distilled"
    assert main(["index", str(refs), "--out", str(tmp_path / "bad"), "--region-model", "nonesuch", "--quiet"]) == 1
    assert "unknown descriptor 'nonesuch'" in capsys.readouterr().err
    # naming the index's own model is the default, "same"
    assert main(["index", str(refs), "--out", str(tmp_path / "own"), "--model", "sscd_distilled", "--region-model",
                 "sscd_distilled", "--ray", "off", "--quiet", "--local-features", "none"]) == 0
    assert CopyIndex.open(tmp_path / "own").region_spec is None


def write_parquet(path, ids, vectors) -> None:
    pq.write_table(pa.table({"id": ids, "embedding": [list(map(float, v)) for v in vectors]}), path)


def test_precomputed_descriptors_index_and_match(tmp_path, capsys):
    rng = np.random.default_rng(0)
    refs = rng.normal(size=(50, 512)).astype(np.float32)
    write_parquet(tmp_path / "refs.parquet", [f"r{i}" for i in range(50)], refs)
    assert main(["index", "--descriptors", str(tmp_path / "refs.parquet"), "--model", "sscd",
                 "--out", str(tmp_path / "idx")]) == 0
    queries = refs[[3, 17]] + 0.05 * rng.normal(size=(2, 512)).astype(np.float32)
    write_parquet(tmp_path / "q.parquet", ["a", "b"], queries)
    assert main(["match", "--descriptors", str(tmp_path / "q.parquet"), "--index", str(tmp_path / "idx"),
                 "--out", str(tmp_path / "m.csv"), "--k", "2"]) == 0
    m = read_matches(tmp_path / "m.csv")
    assert [(q, r) for q, r, _ in m][::2] == [("a", "r3"), ("b", "r17")]
    # re-running with one id dropped and one changed touches only those
    write_parquet(tmp_path / "refs.parquet", [f"r{i}" for i in range(49)], np.concatenate([refs[:48], refs[:1]]))
    assert main(["index", "--descriptors", str(tmp_path / "refs.parquet"), "--model", "sscd",
                 "--out", str(tmp_path / "idx")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["removed"], summary["updated"], summary["unchanged"]) == (1, 1, 48)
    # such an index has no local features: re-ranking is refused with what to do
    with pytest.raises(UserError, match="no local features"):
        CopyIndex.open(tmp_path / "idx").match([("x", "y")])


@pytest.mark.parametrize("ids, vectors, problem", [
    (["a", "b"], np.ones((2, 10), np.float32), "dimension is 512"),
    (["a", "a"], np.ones((2, 512), np.float32), "already given"),
    (["a", "b"], np.stack([np.ones(512), np.full(512, np.nan)]).astype(np.float32), "not finite"),
    (["a", ""], np.ones((2, 512), np.float32), "non-empty string"),
])
def test_precomputed_descriptors_are_checked(tmp_path, capsys, ids, vectors, problem):
    write_parquet(tmp_path / "e.parquet", ids, vectors)
    assert main(["index", "--descriptors", str(tmp_path / "e.parquet"), "--model", "sscd",
                 "--out", str(tmp_path / "idx")]) == 1
    assert problem in capsys.readouterr().err
    pq.write_table(pa.table({"name": ["a"]}), tmp_path / "bad.parquet")
    assert main(["index", "--descriptors", str(tmp_path / "bad.parquet"), "--out", str(tmp_path / "i2")]) == 1
    assert "missing column" in capsys.readouterr().err


def unit_rows(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, 512)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def refs_of(names, vectors) -> list:
    from copyscope.pipeline.catalog import Reference

    return [Reference(n, f"v:{i}", v) for i, (n, v) in enumerate(zip(names, vectors))]


def top1(engine, vectors) -> list[str]:
    return engine.match_embeddings([f"q{i}" for i in range(len(vectors))], vectors, k=1).reference


def test_two_writers_never_leave_a_stale_faiss_index(tmp_path):
    """Two engines on one directory (a service and an `index` run): each one's save keeps the other's writes."""
    x = unit_rows(40, seed=1)
    a = CopyIndex.create(tmp_path / "idx", SPEC, local=None)
    a.add(refs_of([f"r{i}" for i in range(10)], x[:10]))
    a.save()
    b = CopyIndex.open(tmp_path / "idx")
    b.add(refs_of([f"new{i}" for i in range(20)], x[10:30]))
    b.save()
    a.remove(["r0"])  # a's in-memory index missed b's adds: it must not be saved as current
    a.save()
    again = CopyIndex.open(tmp_path / "idx")
    assert len(again.search_index()) == len(again.catalog) == 29
    assert top1(again, x[10:30]) == [f"new{i}" for i in range(20)]
    assert top1(a, x[10:13]) == ["new0", "new1", "new2"]  # and a itself sees them after its own write


def test_ivfpq_index_works_from_the_first_image_and_trains_when_it_can(tmp_path):
    x = unit_rows(800, seed=2)
    engine = CopyIndex.create(tmp_path / "idx", SPEC, local=None, index_type="ivfpq")
    engine.add(refs_of([f"r{i}" for i in range(100)], x[:100]))
    assert top1(engine, x[:5]) == [f"r{i}" for i in range(5)]  # exact stand-in until trainable
    engine.save()
    assert CopyIndex.open(tmp_path / "idx").search_index().index_type == "flat"
    engine.add(refs_of([f"r{i}" for i in range(100, 800)], x[100:]))
    engine.remove(["r3"])
    engine.save()
    reopened = CopyIndex.open(tmp_path / "idx")
    assert reopened.search_index().index_type == "ivfpq" and len(reopened.search_index()) == 799
    hits = top1(reopened, x[:50])
    assert sum(h == f"r{i}" for i, h in enumerate(hits)) >= 45 and "r3" not in hits


def test_engine_refuses_what_would_corrupt_it(tmp_path):
    x = unit_rows(3, seed=3)
    engine = CopyIndex.create(tmp_path / "idx", SPEC, local=None)
    with pytest.raises(UserError, match="given twice"):
        engine.add(refs_of(["a", "a"], x[:2]))
    assert len(engine.catalog) == 0
    engine.add(refs_of(["a"], x[:1]))
    engine.save()
    (tmp_path / "idx" / "manifest.json").unlink()  # a lost manifest: the catalog of another model may be there
    with pytest.raises(UserError, match="manifest is lost"):
        CopyIndex.create(tmp_path / "idx", ModelSpec("sscd"), local=None)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        CopyIndex.create(tmp_path / "file", SPEC, local=None)


def test_unchanged_rerun_rewrites_nothing_and_odd_paths_work(tmp_path, copy_set):
    root, _ = copy_set
    odd = tmp_path / "run#3 ?%41"
    index_folder(root / "refs", odd, SPEC, settings=SETTINGS, use_ray=False, progress=False)
    faiss_file = odd / "index.faiss"
    stamp = faiss_file.stat().st_mtime_ns
    again = index_folder(root / "refs", odd, SPEC, settings=SETTINGS, use_ray=False, progress=False)
    assert again.unchanged == 6 and faiss_file.stat().st_mtime_ns == stamp
    best = best_match(CopyIndex.open(odd).match(images(root / "queries")[:2], k=1))  # verification reads it
    assert len(best) == 2
