"""Different photos in one app frame are not copies of each other: the engine discounts inliers that only the
shared frame explains (bursty keypoints, and an --ignore index of known frames), and still finds a real copy
inside the frame."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image
from skimage import data

from copyscope.jobs.dedup import dedup_folder
from copyscope.pipeline.augment import apply_chain
from copyscope.pipeline.engine import CopyIndex
from copyscope.pipeline.model_spec import ModelSpec

SPEC = ModelSpec("sscd_distilled")
FRAME = {"canvas": [900, 460], "dark": False, "accent": [30, 90, 200], "title": "Photo Share Daily",
         "image_frac": 0.4, "icons": 5,
         "caption": ["liked by many friends today", "see all the comments below", "share this with everyone now"]}
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")


def framed(image: np.ndarray) -> np.ndarray:
    return apply_chain(image, [("screenshot", FRAME)])


def write(folder, name, image) -> tuple[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.jpg"
    Image.fromarray(np.ascontiguousarray(image)).save(path, quality=90)
    return name, str(path)


@pytest.fixture(scope="module")
def framed_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("frames")
    photos = {name: getattr(data, name)() for name in PHOTOS}
    refs = [write(root / "refs", f"framed_{n}", framed(photos[n])) for n in PHOTOS[:5]]
    refs.append(write(root / "refs", "retina", photos["retina"]))
    queries = [write(root / "queries", "other_in_frame", framed(np.stack([data.camera()] * 3, axis=-1))),
               write(root / "queries", "retina_in_frame", framed(photos["retina"]))]
    blank = write(root / "ignore", "frame", framed(np.full((300, 400, 3), 128, np.uint8)))
    return refs, queries, blank, root


def evidence_of(result, query: str) -> dict[str, dict]:
    return {e["reference_id"]: e for e in result.explain if e["query_id"] == query}


def test_a_shared_frame_is_not_a_copy_but_a_copy_inside_it_is(tmp_path, framed_set):
    refs, queries, _, _ = framed_set
    engine = CopyIndex.create(tmp_path / "idx", SPEC)
    engine.add_images(refs)
    result = engine.match(queries, k=6)
    other = evidence_of(result, "other_in_frame")
    framed_refs = [f"framed_{n}" for n in PHOTOS[:5]]
    # the frame alone maps well between two screenshots, and all of it is taken out
    assert max(other[r]["frame_inliers"] for r in framed_refs if r in other) >= 12
    assert all(other[r]["inliers"] == 0 for r in framed_refs if r in other)
    copy = evidence_of(result, "retina_in_frame")
    assert copy["retina"]["inliers"] >= 12  # the photo's own keypoints remain
    assert max(e["score"] for e in other.values()) < 0.5
    assert copy["retina"]["score"] == max(e["score"] for e in copy.values())


def test_an_ignore_index_takes_out_a_known_frame(tmp_path, framed_set):
    refs, queries, blank, root = framed_set
    engine = CopyIndex.create(tmp_path / "idx", SPEC)
    engine.add_images(refs[:2])  # two framed photos: too few for the frame to look bursty
    before = evidence_of(engine.match(queries[:1], k=2), "other_in_frame")
    assert max(e["inliers"] for e in before.values()) >= 12
    ignore = CopyIndex.create(tmp_path / "ignore", SPEC)
    ignore.add_images([blank])
    after = evidence_of(engine.match(queries[:1], k=2, ignore=ignore), "other_in_frame")
    assert all(e["inliers"] == 0 and e["frame_inliers"] >= 12 for e in after.values())
    assert max(e["score"] for e in after.values()) < max(e["score"] for e in before.values())


def dedup_run(tmp_path, files: list[tuple[str, str]], ignore_dir=None) -> tuple[list[set[str]], dict]:
    """Dedup a folder of these files -> its groups and {(a, b): inliers} of its candidate pairs."""
    folder = tmp_path / "folder"
    folder.mkdir(parents=True)
    for name, path in files:
        (folder / f"{name}.jpg").write_bytes(open(path, "rb").read())
    out = tmp_path / "out"
    dedup_folder(folder, out, SPEC, ignore_dir=ignore_dir, use_ray=False, progress=False)
    with open(out / "pairs.csv", newline="") as f:
        inliers = {tuple(sorted((row["a"], row["b"]))): int(row["inliers"]) for row in csv.DictReader(f)}
    return [set(g) for g in json.loads((out / "groups.json").read_text())], inliers


def test_dedup_groups_a_copy_in_a_frame_and_not_the_frame(tmp_path, framed_set):
    refs, queries, _, _ = framed_set
    groups, _ = dedup_run(tmp_path, refs + queries)
    assert groups == [{"retina.jpg", "retina_in_frame.jpg"}]


def test_dedup_ignores_a_known_frame(tmp_path, framed_set):
    refs, _, blank, _ = framed_set
    pair = ("framed_astronaut.jpg", "framed_coffee.jpg")
    _, before = dedup_run(tmp_path / "plain", refs[:2])
    assert before[pair] >= 12  # two photos in one frame: too few for the frame to look bursty
    ignore = CopyIndex.create(tmp_path / "ignore", SPEC)
    ignore.add_images([blank])
    ignore.save()
    groups, after = dedup_run(tmp_path / "ignored", refs[:2], ignore_dir=tmp_path / "ignore")
    assert after[pair] == 0 and groups == []


def test_versions_of_one_photo_in_a_bank_are_not_a_frame(tmp_path):
    """Four versions of a photo map every keypoint of its copy to four references, as a frame would; they
    are copies of each other, so they count as one partner and the copy is matched to each."""
    photo = data.chelsea()
    versions = {"chelsea": photo, "chelsea_grey": np.repeat(photo.mean(axis=2, keepdims=True), 3, 2).astype(np.uint8),
                "chelsea_crop": photo[20:280, 30:420], "chelsea_bright": np.clip(photo * 1.2 + 10, 0, 255).astype(np.uint8)}
    refs = [write(tmp_path / "refs", n, v) for n, v in versions.items()]
    refs += [write(tmp_path / "refs", n, getattr(data, n)()) for n in ("astronaut", "coffee")]
    queries = [write(tmp_path / "queries", "chelsea_crop_copy", photo[40:260, 60:400]),
               write(tmp_path / "queries", "chelsea_full_copy", np.clip(photo * 0.9, 0, 255).astype(np.uint8))]
    engine = CopyIndex.create(tmp_path / "idx", SPEC)
    engine.add_images(refs)
    result = engine.match(queries, k=6)
    for query, _ in queries:  # a crop, and a re-upload of the whole photo (it matches every keypoint of each)
        found = evidence_of(result, query)
        for name in versions:
            assert found[name]["inliers"] >= 12 and found[name]["score"] >= 0.5, (query, name, found[name])
