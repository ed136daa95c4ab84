import csv
import json
import re

import pytest
from PIL import Image
from skimage import data

from copyscope.pipeline.augment import apply_chain
from copyscope.pipeline.augment.stage import PhotoPool, encode_jpeg
from copyscope.jobs.benchmark import QUERY_KINDS, make_benchmark, split_photos
from copyscope.pipeline.decode import decode_image
from copyscope.pipeline.files import list_images

NAMES = ("astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry", "hubble_deep_field",
         "colorwheel", "retina", "coins")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """20 small photos (two views of ten skimage images, one grey), as JPEG and PNG."""
    root = tmp_path_factory.mktemp("photos")
    (root / "sub").mkdir()
    for i, name in enumerate(NAMES):
        image = Image.fromarray(getattr(data, name)())
        image.thumbnail((160, 160))
        image.save(root / f"{name}.jpg", quality=95)
        w, h = image.size
        image.crop((0, 0, w * 2 // 3, h * 2 // 3)).save(root / ("sub" if i % 2 else "") / f"{name}_part.png")
    return root


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_ground_truth_and_meta(photos, tmp_path):
    s = make_benchmark(photos, tmp_path / "b", seed=0, progress=False)
    out = tmp_path / "b"
    assert (s.n_references, s.n_queries, s.n_positive_queries, s.n_background) == (8, 8, 4, 6)
    assert s.failures == [] and sum(s.kinds.values()) == 8 and set(s.kinds) <= set(QUERY_KINDS)
    refs = sorted(p.stem for p in (out / "references").iterdir())
    assert refs == [f"R{i:06d}" for i in range(8)]
    assert sorted(p.stem for p in (out / "background").iterdir()) == [f"B{i:06d}" for i in range(6)]
    queries = sorted(p.stem for p in (out / "queries").iterdir())
    assert all(re.fullmatch(r"Q\d{5}", q) for q in queries)
    gt, meta = _read_csv(out / "ground_truth.csv"), _read_csv(out / "query_meta.csv")
    assert list(gt[0]) == ["query_id", "reference_id"] and list(meta[0]) == ["query_id", "kind", "transforms"]
    assert sorted(r["query_id"] for r in gt) == queries == sorted(r["query_id"] for r in meta)
    copies = [r["reference_id"] for r in gt if r["reference_id"]]
    assert len(copies) == 4 == len(set(copies)) and set(copies) <= set(refs)
    assert [bool(r["reference_id"]) for r in gt] != sorted(bool(r["reference_id"]) for r in gt)  # shuffled
    for row in meta:
        chain = json.loads(row["transforms"])
        assert row["kind"] in QUERY_KINDS and 1 <= len(chain) <= 4 and all(isinstance(p, dict) for _, p in chain)
    for f in (out / "queries").iterdir():
        assert decode_image(f).ndim == 3


def test_deterministic_for_a_seed(photos, tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        make_benchmark(photos, tmp_path / name, seed=seed, progress=False)
    a, b, c = (_files(tmp_path / n) for n in "abc")
    assert a == b
    assert a.keys() != c.keys() or any(a[k] != c[k] for k in a)


def test_copies_replay_from_the_reference_and_meta(photos, tmp_path):
    out = tmp_path / "b"
    make_benchmark(photos, out, seed=1, progress=False)
    hosts = PhotoPool(dict(list_images(photos).entries), reencode=90).context()
    meta = {r["query_id"]: json.loads(r["transforms"]) for r in _read_csv(out / "query_meta.csv")}
    copies = [r for r in _read_csv(out / "ground_truth.csv") if r["reference_id"]]
    assert copies
    for row in copies:
        reference = decode_image(out / "references" / f"{row['reference_id']}.jpg")
        edited = apply_chain(reference, meta[row["query_id"]], hosts)
        assert encode_jpeg(edited, 90) == (out / "queries" / f"{row['query_id']}.jpg").read_bytes()


def test_roles_are_disjoint_and_hosts_never_written(photos, tmp_path):
    ids = [i for i, _ in list_images(photos).entries]
    split = split_photos(ids, seed=2)
    roles = (split.references, split.negatives, split.hosts, split.background)
    assert sorted(sum(roles, [])) == sorted(ids) and set(split.positives) <= set(split.references)
    make_benchmark(photos, tmp_path / "b", seed=2, progress=False)
    pool = PhotoPool(dict(list_images(photos).entries))  # as written: decoded, encoded once
    written = set(_files(tmp_path / "b").values())
    assert all(encode_jpeg(pool.load(h), 90) not in written for h in split.hosts)
    assert all(encode_jpeg(pool.load(r), 90) in written for r in split.references + split.background)


def test_bad_photo_is_a_failure_and_bad_requests_raise(photos, tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    for p in sorted(photos.glob("*.*"))[:11]:
        (root / p.name).write_bytes(p.read_bytes())
    (root / "zz_broken.jpg").write_bytes(b"\xff\xd8 broken")
    # the broken photo is a copied reference (seed 1), another reference (2), the source of a query
    # without copy (0), background (4) and a host (11)
    for seed in (0, 1, 2, 4, 11):
        s = make_benchmark(root, tmp_path / f"b{seed}", seed=seed, progress=False)
        assert [f.path for f in s.failures] == [str(root / "zz_broken.jpg")] and s.failures[0].reason
        assert s.n_references + s.n_background + s.n_hosts + s.n_queries - s.n_positive_queries == 11
    with pytest.raises(ValueError, match="not empty"):
        make_benchmark(root, tmp_path / "b0", seed=0, progress=False)
    with pytest.raises(ValueError, match="cannot give"):
        make_benchmark(root, tmp_path / "c", n_references=10, n_queries=8, progress=False)


def test_ray_build_matches_local(photos, tmp_path, ray_local):
    make_benchmark(photos, tmp_path / "local", seed=5, progress=False, use_ray=False)
    make_benchmark(photos, tmp_path / "ray", seed=5, progress=False, use_ray=True)
    assert _files(tmp_path / "local") == _files(tmp_path / "ray")
