import json

import numpy as np
import pytest
from PIL import Image
from skimage import data

from copyscope.matching.index import SearchIndex
from copyscope.pipeline.embedding import EmbedSettings
from copyscope.pipeline.formats import read_matches
from copyscope.jobs.index import index_folder
from copyscope.pipeline.model_spec import ModelSpec
from copyscope.jobs.match import match_folder
from copyscope.matching.candidates import QueryViews, candidates_of, margin_over_others, top_per_query
from copyscope.matching.reranking import RerankOptions

SETTINGS = EmbedSettings(num_actors=1, threads_per_actor=1, batch_size=4)


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_candidates_equal_brute_force_max_over_views():
    rng = np.random.default_rng(0)
    refs = unit(rng.normal(size=(50, 16)))
    ids = np.arange(50, dtype=np.int64) * 3 + 1  # ids, not rows
    index = SearchIndex.build(refs, ids)
    view_query = np.array([0, 0, 0, 1, 2, 2])
    vectors = unit(rng.normal(size=(6, 16)))
    views = QueryViews(["a", "b", "c"], view_query, np.zeros((6, 4), np.int32), vectors, np.array([0, 3, 4]))
    cands = candidates_of(views, *index.search(views.vectors, 5))
    sims = vectors @ refs.T
    for q in range(3):
        rows = np.flatnonzero(view_query == q)
        top = {r for v in rows for r in np.argsort(-sims[v])[:5]}
        got = {(int(r) - 1) // 3: s for qq, r, s in zip(cands.query, cands.reference, cands.best_score) if qq == q}
        assert set(got) == top
        for r, s in got.items():
            assert s == pytest.approx(max(sims[v, r] for v in rows if r in np.argsort(-sims[v])[:5]), abs=1e-5)
        full = {(int(r) - 1) // 3: s for qq, r, s in zip(cands.query, cands.reference, cands.whole_score) if qq == q}
        for r, s in full.items():
            expected = sims[views.full[q], r] if r in np.argsort(-sims[views.full[q]])[:5] else -np.inf
            assert s == pytest.approx(expected, abs=1e-5)


def test_top_per_query_keeps_the_n_best_of_each_query():
    query = np.array([1, 0, 1, 0, 1, 2])
    score = np.array([0.1, 0.9, 0.7, 0.3, 0.5, 0.2])
    kept = sorted(top_per_query(query, score, 2).tolist())
    assert kept == [1, 2, 3, 4, 5]


def test_margin_over_others_equals_brute_force_and_lets_versions_of_one_photo_share_the_top():
    rng = np.random.default_rng(1)
    query = rng.integers(0, 6, 60)
    score = rng.uniform(-0.2, 1.0, 60)
    version = rng.integers(0, 12, 60)
    rival = rng.uniform(size=60) < 0.7
    corner = rng.uniform(0, 50, (60, 2))
    content = np.hstack([corner, corner + rng.uniform(0, 50, (60, 2))]) * (rng.uniform(size=(60, 1)) < 0.6)

    def iou(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
        return w * h / union

    def apart(p, o):
        found = content[p, 2] > content[p, 0] and content[o, 2] > content[o, 0]
        return found and iou(content[p], content[o]) < 0.5

    for allowed, boxes in ((None, None), (rival, None), (rival, content)):
        got = margin_over_others(query, score, version, allowed, boxes)
        for p in range(60):
            rivals = [score[o] for o in range(60) if query[o] == query[p] and version[o] != version[p]
                      and (allowed is None or allowed[o] or not allowed[p])
                      and not (boxes is not None and apart(p, o))]
            assert got[p] == pytest.approx(score[p] - max(rivals, default=0.0))
    # a bank holding two versions of the photo a query copies: both stand out, the other photo does not
    margins = margin_over_others(np.zeros(3, np.int64), np.array([0.9, 0.85, 0.3]), np.array([5, 5, 7]))
    np.testing.assert_allclose(margins, [0.6, 0.55, -0.6])
    alone = margin_over_others(np.zeros(3, np.int64), np.array([0.9, 0.85, 0.3]), np.arange(3))
    assert alone[1] < 0  # counted as two photos, the second version falls below the first
    # a photo pasted into another known photo: both verified, in different parts of the query
    pasted = margin_over_others(np.zeros(3, np.int64), np.array([0.9, 0.6, 0.3]), np.arange(3),
                                content=np.array([[10, 10, 40, 40], [0, 0, 100, 100], [0, 0, 0, 0]], float))
    np.testing.assert_allclose(pasted, [0.6, 0.3, -0.6])
    # a query in a shared background: its candidates are siblings that the frame explains; a frame-explained
    # one does not stand out from them, and a candidate of content is not held back by them
    framed = margin_over_others(np.zeros(3, np.int64), np.array([0.7, 0.68, 0.4]), np.arange(3),
                                rival=np.array([False, False, True]))
    np.testing.assert_allclose(framed, [0.02, -0.02, 0.4])


def paste(small: np.ndarray, host: np.ndarray, scale: float, x: int, y: int) -> np.ndarray:
    h, w = int(small.shape[0] * scale), int(small.shape[1] * scale)
    out = host.copy()
    out[y:y + h, x:x + w] = np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR))
    return out


@pytest.fixture(scope="module")
def paste_set(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("paste")
    (root / "refs").mkdir(), (root / "queries").mkdir()
    for name in ("astronaut", "chelsea", "rocket", "coffee"):
        Image.fromarray(getattr(data, name)()).save(root / "refs" / f"{name}.jpg", quality=90)
    host = np.asarray(Image.fromarray(data.immunohistochemistry()).resize((640, 640)))
    Image.fromarray(paste(data.chelsea(), host, 0.55, 300, 330)).save(root / "queries" / "chelsea_pasted.jpg")
    Image.fromarray(np.ascontiguousarray(data.astronaut()[60:400, 100:450])).save(root / "queries" / "crop.jpg")
    Image.fromarray(data.camera()).save(root / "queries" / "unrelated.png")
    Image.fromarray(paste(data.astronaut(), data.coffee(), 0.45, 20, 20)).save(root / "queries" / "composite.jpg")
    index_folder(root / "refs", root / "idx", ModelSpec("sscd"), settings=SETTINGS, progress=False)
    return root


def test_full_rerank_finds_a_pasted_copy_and_explains_it(paste_set):
    root = paste_set
    summary = match_folder(root / "queries", root / "idx", root / "m.csv", k=3, settings=SETTINGS,
                           explain_path=root / "explain.jsonl", progress=False)
    assert summary.verified_pairs > 0
    m = read_matches(root / "m.csv")
    best = {}
    for q, r, s in m:
        best.setdefault(q, (r, s))
    assert best["chelsea_pasted"][0] == "chelsea" and best["crop"][0] == "astronaut"
    assert best["chelsea_pasted"][1] > 0.5 and best["crop"][1] > 0.5 and best["unrelated"][1] < 0.5
    assert all(0.0 <= s <= 1.0 for _, _, s in m)
    rows = [json.loads(line) for line in open(root / "explain.jsonl")]
    assert len(rows) == len(m)
    pasted = next(r for r in rows if r["query_id"] == "chelsea_pasted" and r["reference_id"] == "chelsea")
    assert pasted["inliers"] >= 10 and pasted["reference_coverage"] > pasted["query_coverage"]
    # the whole reference lies inside the query: "the query contains a copy of the reference", not the reverse;
    # a crop lies inside its reference: both
    assert pasted["score"] > 0.5 > pasted["reverse_score"]
    crop = next(r for r in rows if r["query_id"] == "crop" and r["reference_id"] == "astronaut")
    assert crop["score"] > 0.5 and crop["reverse_score"] > 0.5
    x0, y0, x1, y1 = pasted["query_box"]
    assert x0 >= 280 and y0 >= 310  # the matched region lies in the pasted area


def test_a_photo_pasted_into_another_known_photo_is_a_copy_of_both(paste_set):
    root = paste_set  # the two references are verified in different parts of the query: neither is a rival
    match_folder(root / "queries", root / "idx", root / "both.csv", k=3, settings=SETTINGS,
                 explain_path=root / "both.jsonl", progress=False)
    rows = {r["reference_id"]: r for r in map(json.loads, open(root / "both.jsonl")) if r["query_id"] == "composite"}
    assert rows["astronaut"]["score"] > 0.9 and rows["coffee"]["score"] > 0.9
    assert rows["astronaut"]["margin"] > 0 and rows["coffee"]["margin"] > 0


def test_rerank_none_gives_raw_global_scores(paste_set):
    root = paste_set
    match_folder(root / "queries", root / "idx", root / "none.csv", k=2, rerank=RerankOptions(mode="none"),
                 settings=SETTINGS, progress=False)
    m = read_matches(root / "none.csv")
    assert len(m) == 8 and all(-1.0001 <= s <= 1.0001 for _, _, s in m)  # cosines, no calibration
    best = {}
    for q, r, s in m:
        if s > best.get(q, ("", -2.0))[1]:
            best[q] = (r, s)
    assert best["crop"][0] == "astronaut" and best["crop"][1] > best["unrelated"][1] + 0.2
    # the raw score is a max over views, the whole image among them: at least the whole-image cosine, in the
    # space the index searches (whitened by its references)
    from copyscope.descriptors import create_descriptor
    from copyscope.pipeline.decode import decode_image
    from copyscope.pipeline.engine import CopyIndex

    model = create_descriptor("sscd", num_threads=1)
    q, r = CopyIndex.open(root / "idx").search_index().whitening(
        model([decode_image(root / "queries" / "crop.jpg"), decode_image(root / "refs" / "astronaut.jpg")]))
    assert best["crop"][1] >= float(q @ r) - 0.02


def test_verify_needs_local_features_in_the_index(tmp_path, paste_set):
    index_folder(paste_set / "refs", tmp_path / "idx", ModelSpec("sscd_distilled"), settings=SETTINGS,
                 local=None, progress=False)
    with pytest.raises(ValueError, match="no local features"):
        match_folder(paste_set / "queries", tmp_path / "idx", tmp_path / "m.csv", settings=SETTINGS,
                     rerank=RerankOptions(mode="verify"), progress=False)


def test_background_index_must_use_the_same_model(tmp_path, paste_set):
    index_folder(paste_set / "refs", tmp_path / "bg", ModelSpec("sscd_distilled"), settings=SETTINGS,
                 local=None, progress=False)
    with pytest.raises(ValueError, match="another model"):
        match_folder(paste_set / "queries", paste_set / "idx", tmp_path / "m.csv", settings=SETTINGS,
                     background_dir=tmp_path / "bg", progress=False)


def test_show_draws_the_pair(tmp_path, paste_set):
    from copyscope.jobs.cli import main

    out = tmp_path / "pair.png"
    assert main(["show", str(paste_set / "queries" / "chelsea_pasted.jpg"), str(paste_set / "refs" / "chelsea.jpg"),
                 "--out", str(out)]) == 0
    drawn = np.asarray(Image.open(out))
    assert drawn.ndim == 3 and drawn.shape[1] > drawn.shape[0]


def test_rerank_options_validate_and_normalise():
    with pytest.raises(ValueError, match="known: none, verify, full"):
        RerankOptions(mode="best")
    with pytest.raises(ValueError, match="known: stretch, subtract"):
        RerankOptions(score_norm="zscore")
    scores, level = np.array([0.6, 0.2]), np.array([0.2, 0.2])
    np.testing.assert_allclose(RerankOptions(score_norm="subtract", beta=0.5).normalised(scores, level), [0.5, 0.1])
    np.testing.assert_allclose(RerankOptions().normalised(scores, level), [0.5, 0.0])
