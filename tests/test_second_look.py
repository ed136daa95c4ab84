"""The second look (pipeline.second_look): a query verification found nothing for has its best region view
described closer and verified again.

Oracles: box features map back onto the whole image (verified against the whole image's own features, the
map is the identity); photos pasted small into an unrelated photo are found only with the second look, and
the host photo alone, or a wrong reference, gets none.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from copyscope.jobs import cli
from copyscope.matching.candidates import Candidates, QueryViews
from copyscope.matching.local_features import LocalSpec, extract_box_features, extract_local_features
from copyscope.matching.reranking import RerankOptions
from copyscope.matching.shared_frames import INLIERS
from copyscope.matching.verification import verify_pair
from copyscope.pipeline.engine import CopyIndex
from copyscope.pipeline.runners import LocalRunner
from copyscope.pipeline.second_look import (
    FEW_INLIERS, MIN_REFERENCE_COVERAGE, SECOND_LOOK_INLIERS, box_features, looks_to_take, second_looks,
)

PASTED = {"immunohistochemistry": 140, "hubble_deep_field": 170, "rocket": 170}  # long side of the paste


def test_box_features_are_in_the_whole_images_pixels():
    image = data.astronaut()
    box = [180, 40, 330, 190]  # 150 px, upscaled to 512
    boxed = extract_box_features(image, box, side=512)
    assert boxed.image_size == image.shape[:2]
    x, y = boxed.keypoints.T
    assert x.min() >= box[0] - 1 and x.max() <= box[2] and y.min() >= box[1] - 1 and y.max() <= box[3]
    v = verify_pair(boxed, extract_local_features(image, max_side=1024), ratio=0.8)
    assert v.inliers >= 20
    h = v.transform / v.transform[2, 2]
    assert np.abs(h[:2, :2] - np.eye(2)).max() < 0.02 and np.abs(h[:2, 2]).max() < 2.0
    assert np.abs(h[2, :2]).max() < 1e-4


def test_box_features_refuse_an_empty_box():
    with pytest.raises(ValueError, match="empty"):
        extract_box_features(data.astronaut(), [600, 0, 700, 100])


def _views_and_candidates():
    """Two queries, each a whole view and one region view; q0's candidates 5 (whole) and 6, 7 (region),
    q1's candidate 8 (region)."""
    views = QueryViews(["q0", "q1"], np.array([0, 0, 1, 1]),
                       np.array([[0, 0, 100, 100], [10, 10, 50, 50], [0, 0, 80, 80], [5, 5, 40, 40]]),
                       np.zeros((4, 2), np.float32), np.array([0, 2]))
    cands = Candidates(np.array([0, 0, 0, 1]), np.array([5, 6, 7, 8], np.int64), np.array([0.9, 0.6, 0.5, 0.4]),
                       np.array([0.9, -np.inf, -np.inf, -np.inf]), np.array([0, 1, 1, 3]))
    return views, cands


def test_only_queries_with_no_verified_candidate_are_looked_at_again():
    views, cands = _views_and_candidates()
    weak = {("q0", 5): {"inliers": FEW_INLIERS - 1}, ("q1", 8): {"inliers": 0}}
    looks = looks_to_take(views, cands, np.arange(4), weak, top=10)
    assert set(looks) == {"q0", "q1"}
    box, refs = looks["q0"]
    assert box.tolist() == [10, 10, 50, 50] and refs == [6, 7]  # region-found candidates, by best score
    assert looks_to_take(views, cands, np.arange(4), weak, top=1)["q0"][1] == [6]
    strong = weak | {("q0", 5): {"inliers": FEW_INLIERS}}
    assert set(looks_to_take(views, cands, np.arange(4), strong, top=10)) == {"q1"}


def _evidence(inliers: int, coverage: float, xy: list) -> dict:
    return {"inliers": inliers, "matches": inliers, "reference_coverage": coverage,
            INLIERS: {"query": list(range(len(xy))), "reference": list(range(len(xy))), "query_xy": xy,
                      "reference_xy": xy, "query_size": [100, 100], "reference_size": [100, 100]}}


def test_a_second_look_counts_above_its_floors_and_outside_the_collections_frames():
    spread = [[float(x), float(y)] for x in (10, 40, 70) for y in (10, 40, 70)]  # 9 inliers
    first = {("q", 1): {"inliers": 2}}
    boxed = {("q", 1): _evidence(len(spread), 0.5, spread), ("q", 2): _evidence(len(spread), 0.5, spread),
             ("q", 3): _evidence(len(spread), MIN_REFERENCE_COVERAGE / 2, spread),
             ("q", 4): _evidence(SECOND_LOOK_INLIERS - 1, 0.5, spread[:SECOND_LOOK_INLIERS - 1])}
    frames = {2: np.array(spread[:3], np.float32)}  # reference 2 shares a frame with the collection
    boxes = {"q": np.array([5, 5, 80, 80])}
    out = second_looks(first, boxed, frames, boxes)
    assert set(out) == {("q", 1)} and out[("q", 1)]["second_look"] and out[("q", 1)]["look_box"] == [5, 5, 80, 80]
    assert second_looks({("q", 1): {"inliers": 20}}, boxed, frames, boxes) == {}  # the first look was better


@pytest.fixture(scope="module")
def pasted(tmp_path_factory):
    """The six skimage references; photos pasted small into the camera photo (not a reference), and it alone."""
    root = tmp_path_factory.mktemp("second_look")
    refs, queries = root / "refs", root / "queries"
    refs.mkdir(), queries.mkdir()
    for name in ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry"):
        Image.fromarray(getattr(data, name)()).save(refs / f"{name}.jpg", quality=90)
    host = np.asarray(Image.fromarray(data.camera()).convert("RGB").resize((1400, 1000)))
    for name, side in PASTED.items():
        photo = Image.fromarray(getattr(data, name)())
        scale = side / max(photo.size)
        small = np.asarray(photo.resize((round(photo.width * scale), round(photo.height * scale))))
        canvas = host.copy()
        canvas[300:300 + small.shape[0], 500:500 + small.shape[1]] = small
        Image.fromarray(canvas).save(queries / f"{name}.jpg", quality=80)
    Image.fromarray(host).save(queries / "host.jpg", quality=80)
    engine = CopyIndex.create(root / "idx")
    engine.add_images(sorted((p.stem, str(p)) for p in refs.iterdir()), LocalRunner())
    return engine, sorted((p.stem, str(p)) for p in queries.iterdir())


def test_small_pastes_are_found_by_the_second_look_only(pasted):
    engine, queries = pasted
    runs = {look: engine.match(queries, LocalRunner(), rerank=RerankOptions(second_look=look))
            for look in (False, True)}
    for look, result in runs.items():
        inliers = {(q, r): e.get("inliers", 0) for q, r, e in zip(result.query, result.reference, result.explain)}
        looked = {(q, r) for q, r, e in zip(result.query, result.reference, result.explain) if e.get("second_look")}
        for name in PASTED:
            if look:
                assert (name, name) in looked and inliers[(name, name)] >= SECOND_LOOK_INLIERS
            else:
                assert inliers.get((name, name), 0) < FEW_INLIERS
        assert all(q == r for q, r in looked)  # no wrong reference, nothing for the host alone
    found = {q: s for q, r, s in zip(runs[True].query, runs[True].reference, runs[True].score) if q == r}
    missed = {q: s for q, r, s in zip(runs[False].query, runs[False].reference, runs[False].score) if q == r}
    assert all(found[name] > missed.get(name, 0.0) for name in PASTED)


def test_match_command_turns_the_second_look_off(pasted, tmp_path):
    engine, queries = pasted
    folder = Path(queries[0][1]).parent
    looked = {}
    for flags in ([], ["--no-second-look"]):
        explain = tmp_path / f"explain{len(flags)}.jsonl"
        cli.main(["match", str(folder), "--index", str(engine.directory), "--out", str(tmp_path / "m.csv"),
                  "--explain", str(explain), "--quiet", "--ray", "off", *flags])
        looked[bool(flags)] = sum(bool(json.loads(line).get("second_look")) for line in explain.open())
    assert looked[False] >= len(PASTED) and looked[True] == 0


def test_a_query_file_that_changed_or_broke_keeps_its_first_look(tmp_path):
    image = data.astronaut()
    Image.fromarray(image).save(tmp_path / "same.png")
    Image.fromarray(image[:256]).save(tmp_path / "shrunk.png")  # changed since it was embedded
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    paths = {name: str(tmp_path / f) for name, f in (("same", "same.png"), ("shrunk", "shrunk.png"),
                                                      ("broken", "broken.jpg"))}
    box = np.array([180, 40, 330, 190])
    out = box_features(paths, dict.fromkeys(paths, box), dict.fromkeys(paths, image.shape[:2]), LocalSpec(),
                       max_pixels=10**8)
    assert set(out) == {"same"} and out["same"].image_size == image.shape[:2]
