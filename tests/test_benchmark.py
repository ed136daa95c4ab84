import csv
import hashlib
import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image
from skimage import data

from copyscope.pipeline.augment import apply_chain, chain_shape
from copyscope.pipeline.augment.stage import PhotoPool, encode_jpeg
from copyscope.jobs.benchmark import QUERY_KINDS, make_benchmark, reserve_template_photos, split_photos
from copyscope.pipeline.augment.imaging import box_pixels
from copyscope.pipeline.augment.templates import fine_grained_group
from copyscope.pipeline.decode import decode_image
from copyscope.pipeline.files import list_images

ROOT = Path(__file__).resolve().parents[1]
HARD = {"templates": 1, "template_size": 3, "lookalikes": True}  # every hard case, on 20 photos
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


@pytest.mark.parametrize("options", [{}, HARD], ids=["default", "hard"])
def test_deterministic_for_a_seed(photos, tmp_path, options):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        make_benchmark(photos, tmp_path / name, seed=seed, progress=False, **options)
    a, b, c = (_files(tmp_path / n) for n in "abc")
    assert a == b
    assert a.keys() != c.keys() or any(a[k] != c[k] for k in a)


def test_default_options_build_what_they_did_before(photos, tmp_path):
    make_benchmark(photos, tmp_path / "b", seed=0, progress=False, templates=0, lookalikes=False)
    files = _files(tmp_path / "b")
    # ground truth and query meta of seed 0 as built before templates and look-alikes existed
    assert hashlib.sha1(files["ground_truth.csv"] + files["query_meta.csv"]).hexdigest() == \
        "dd26a6831eb1f9af54d7fa4c0ff250c961841415"
    assert sorted(k for k in files if not k.startswith("queries/")) == sorted(
        [f"references/R{i:06d}.jpg" for i in range(8)] + [f"background/B{i:06d}.jpg" for i in range(6)]
        + ["ground_truth.csv", "query_meta.csv"])


@pytest.mark.parametrize("options", [{}, HARD], ids=["default", "hard"])
def test_copies_replay_from_the_reference_and_meta(photos, tmp_path, options):
    out = tmp_path / "b"
    make_benchmark(photos, out, seed=1, progress=False, **options)
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
    # with templates: the broken photo hosts a shared background (that template is left out) or is put in one
    ids = [i for i, _ in list_images(root).entries]
    for role, n_templates in ((1, 2), (2, 3)):
        seed = next(s for s in range(100) if "zz_broken" in reserve_template_photos(ids, 1, 2, s)[role])
        s = make_benchmark(root, tmp_path / f"t{role}", seed=seed, progress=False, templates=1, template_size=2,
                           lookalikes=True)
        assert [f.path for f in s.failures] == [str(root / "zz_broken.jpg")] and s.n_templates == n_templates
    with pytest.raises(ValueError, match="cannot give"):
        make_benchmark(root, tmp_path / "d", templates=1, template_size=4, progress=False)


@pytest.mark.parametrize("options", [{}, HARD], ids=["default", "hard"])
def test_ray_build_matches_local(photos, tmp_path, ray_local, options):
    make_benchmark(photos, tmp_path / "local", seed=5, progress=False, use_ray=False, **options)
    make_benchmark(photos, tmp_path / "ray", seed=5, progress=False, use_ray=True, **options)
    assert _files(tmp_path / "local") == _files(tmp_path / "ray")


def _source_photo(image_bytes: bytes, chain: list, candidates, pool) -> str:
    """The one candidate photo that `chain` turns into `image_bytes` (JPEG at 90, as written)."""
    shape = decode_image(image_bytes).shape[:2]
    loaded = {p: pool.load(p) for p in candidates}
    found = [p for p, image in loaded.items() if chain_shape(chain, *image.shape[:2]) == shape
             and encode_jpeg(apply_chain(image, chain, pool.context()), 90) == image_bytes]
    assert len(found) == 1, found
    return found[0]


def _frozen(chain: list) -> str:
    """The template a chain's first step puts its photo into: its params less the position."""
    name, params = chain[0]
    return json.dumps([name, {k: v for k, v in params.items() if k not in ("x", "y")}], sort_keys=True)


def test_templates_shared_by_different_photos_negatives_and_positives(photos, tmp_path):
    out = tmp_path / "b"
    s = make_benchmark(photos, out, seed=0, progress=False, templates=1, template_size=3)
    assert s.n_templates == 3 and set(s.reference_kinds) == {"plain", "template_screenshot", "template_meme",
                                                             "template_background"}
    paths = dict(list_images(photos).entries)
    pool = PhotoPool(paths, reencode=90)
    _, hosts, template_photos = reserve_template_photos(sorted(paths), 1, 3, 0)
    refs = {r["reference_id"]: r for r in _read_csv(out / "references_meta.csv")}
    gt = {r["query_id"]: r["reference_id"] for r in _read_csv(out / "ground_truth.csv")}
    queries = [r for r in _read_csv(out / "query_meta.csv") if r["kind"].startswith("template_")]
    shared: dict[str, list] = {}
    for rid, row in refs.items():
        if row["template"]:
            chain = json.loads(row["transforms"])
            shared.setdefault(_frozen(chain), []).append(
                _source_photo((out / "references" / f"{rid}.jpg").read_bytes(), chain, template_photos, pool))
            assert row["kind"] == "template_" + row["template"].split("_")[0]
        else:
            assert row["kind"] == "plain" and row["transforms"] == "[]"
    positives = 0
    for q in queries:
        chain, image = json.loads(q["transforms"]), (out / "queries" / f"{q['query_id']}.jpg").read_bytes()
        assert _frozen(chain) in shared and len(chain) == 2 and chain[1][0] in ("rescale", "jpeg")
        if gt[q["query_id"]]:  # a plain reference put into the template: its copy is that reference
            assert refs[gt[q["query_id"]]]["kind"] == "plain"
            reference = decode_image(out / "references" / f"{gt[q['query_id']]}.jpg")
            assert encode_jpeg(apply_chain(reference, chain, pool.context()), 90) == image
            positives += 1
        else:
            shared[_frozen(chain)].append(_source_photo(image, chain, template_photos, pool))
    assert len(shared) == 3 and positives >= 1
    assert all(len(group) == 3 == len(set(group)) for group in shared.values())  # 3 different photos each
    assert sorted(p for g in shared.values() for p in g) == sorted(template_photos)
    hosts_used = {json.loads(r["transforms"])[0][1].get("other") for r in refs.values() if r["template"]}
    assert hosts_used == {None, *hosts}


def test_lookalike_crops_do_not_overlap_and_classmates_share_a_group(photos, tmp_path):
    root = tmp_path / "photos"  # the photos under ImageNet names: the first 10 are dogs
    root.mkdir()
    for i, (pid, path) in enumerate(list_images(photos).entries):
        wnid = f"n0208{5620 + i}" if i < 10 else f"n0{3000000 + i}"
        shutil.copyfile(path, root / f"{wnid}_{pid.replace('/', '_')}{path[-4:]}")
    out = tmp_path / "b"
    s = make_benchmark(root, out, seed=2, progress=False, lookalikes=True)
    paths = dict(list_images(root).entries)
    pool = PhotoPool(paths, reencode=90)
    refs = {r["reference_id"]: r for r in _read_csv(out / "references_meta.csv")}
    queries = {r["query_id"]: json.loads(r["transforms"]) for r in _read_csv(out / "query_meta.csv")}
    gt = {r["query_id"]: r["reference_id"] for r in _read_csv(out / "ground_truth.csv")}
    kinds = {r["kind"] for r in refs.values()}
    assert {"plain_crop", "lookalike_crop", "lookalike_class"} <= kinds <= {"plain", *kinds}
    # every query's photo has its other crop among the references
    assert sum(r["kind"] == "lookalike_crop" for r in refs.values()) == s.n_queries
    assert sorted(r["lookalike_of"] for r in refs.values() if r["kind"] == "lookalike_crop") == sorted(
        [q for q in queries if not gt[q]] + [gt[q] for q in queries if gt[q]])

    def crop_a_and_photo(of: str) -> tuple[dict, str]:
        """Crop A of the reference or query `of`, and the photo it was cut from."""
        if of in refs:
            chain, image = json.loads(refs[of]["transforms"]), (out / "references" / f"{of}.jpg").read_bytes()
        else:
            chain, image = queries[of], (out / "queries" / f"{of}.jpg").read_bytes()
        return chain[0][1], _source_photo(image, chain, paths, pool)

    for rid, row in refs.items():
        image = (out / "references" / f"{rid}.jpg").read_bytes()
        if row["kind"] == "lookalike_crop":
            crop_b = json.loads(row["transforms"])
            crop_a, photo = crop_a_and_photo(row["lookalike_of"])
            assert _source_photo(image, crop_b, paths, pool) == photo  # the same photo, cut in two
            h, w = pool.load(photo).shape[:2]
            (t0, b0, l0, r0), (t1, b1, l1, r1) = box_pixels(crop_a, h, w), box_pixels(crop_b[0][1], h, w)
            assert not (t0 < b1 and t1 < b0 and l0 < r1 and l1 < r0)
        elif row["kind"] == "lookalike_class":
            mate = _source_photo(image, [], paths, PhotoPool(paths))  # written whole, encoded once
            _, photo = crop_a_and_photo(row["lookalike_of"])
            assert mate != photo and fine_grained_group(mate) == fine_grained_group(photo) == "dog"


def _dedup_bench():
    spec = importlib.util.spec_from_file_location("dedup_bench", ROOT / "benchmarks" / "dedup_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dedup_folder_hard_cases_stay_ungrouped(photos, tmp_path):
    bench, root = _dedup_bench(), tmp_path / "photos"  # the photos under ImageNet names: 4 dogs, 16 others
    root.mkdir()
    for i, (pid, path) in enumerate(list_images(photos).entries):
        shutil.copyfile(path, root / f"n0{2085620 + i if i < 4 else 3000000 + i}_{pid.replace('/', '_')}{path[-4:]}")
    out = tmp_path / "folder"
    planted, hard = bench.build_folder(root, out, None, 3, 0, templates=1, template_size=2)
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    whole = {f for f in files if f.startswith("photos/")}
    assert len(whole) == 11 and sum(bench.fine_grained_group(f) == "dog" for f in whole) == 4  # 20 - 1 - 6 - 2
    grouped = set().union(*planted)
    assert len(planted) == 3 and all(len(g & whole) == 1 and len(g) >= 2 for g in planted)
    assert sorted(hard) == ["crop pair 0", "crop pair 1", "template background_0", "template meme_0",
                            "template screenshot_0"] and all(len(hard[f"crop pair {i}"]) == 2 for i in range(2))
    for case, members in hard.items():
        own = members - grouped  # a template also holds the planted copies put into it
        assert len(own) == 2 and not own & whole
    assert files == whole | grouped | set().union(*hard.values())
    tune, _ = bench.build_folder(root, tmp_path / "tune", None, 2, 0, half="tune")
    names = [p.name for p in (tmp_path / "tune" / "photos").rglob("*.*")]
    assert names and all(bench.half_of(n) == "tune" for n in names) and len(tune) == 2
    assert len(names) == sum(bench.half_of(p.name) == "tune" for p in root.iterdir())
