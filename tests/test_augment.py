import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

import copyscope.pipeline.augment as A
from copyscope.pipeline.augment.batch import BatchCopyAugment
from copyscope.pipeline.augment.imaging import FONTS, font_path
from copyscope.pipeline.augment.stage import PhotoPool, apply_chains_local, apply_chains_ray, encode_jpeg
from copyscope.pipeline.decode import decode_image

OTHERS = {"coffee": data.coffee(), "chelsea": data.chelsea()}
CTX = A.EditContext(OTHERS)
EDITS = A.list_edits()


def _inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    grey = data.camera()
    return {
        "1x1": rng.integers(0, 256, (1, 1, 3), dtype=np.uint8),
        "2x3": rng.integers(0, 256, (2, 3, 3), dtype=np.uint8),
        "odd": np.ascontiguousarray(data.astronaut()[:37, :53]),
        "grey": np.repeat(grey[..., None], 3, axis=2),
        "strip": rng.integers(0, 256, (1, 517, 3), dtype=np.uint8),
    }


def _is_plain(v) -> bool:
    if isinstance(v, dict):
        return all(isinstance(k, str) and _is_plain(x) for k, x in v.items())
    if isinstance(v, list):
        return all(_is_plain(x) for x in v)
    return type(v) in (int, float, str, bool)


def test_unknown_edit_and_group_list_known():
    with pytest.raises(KeyError, match="known: .*crop.*rotate"):
        A.get_edit("swirl")
    with pytest.raises(KeyError, match="known groups"):
        A.sample_chain(np.random.default_rng(0), 10, 10, kinds=["swirl"])
    with pytest.raises(KeyError, match="known"):
        A.list_edits("warp")


def test_registry_covers_the_issue():
    required = {"crop", "rotate", "rotate90", "flip", "perspective", "aspect", "pad", "rescale", "text", "emoji",
                "shapes", "stripes", "overlay_photo", "paste_into", "screenshot", "meme", "color_jitter",
                "grayscale", "blur", "noise", "pixelize", "sharpen", "jpeg"}
    assert required <= set(EDITS)
    assert {A.get_edit(n).group for n in EDITS} == set(A.GROUPS)


@pytest.mark.parametrize("name", EDITS)
def test_every_edit_gives_valid_rgb_for_odd_inputs(name):
    rng = np.random.default_rng(1)
    for label, image in _inputs().items():
        for _ in range(3):
            params = A.sample_edit(rng, name, *image.shape[:2], list(OTHERS))
            out = A.apply_edit(image, name, params, CTX)
            assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3, (label, out.shape)
            assert min(out.shape[:2]) >= 1 and out.flags.c_contiguous and out.flags.writeable
            assert not np.may_share_memory(out, image)
            assert out.shape[:2] == A.output_shape(name, params, *image.shape[:2]), (label, params)


def test_every_edit_on_a_huge_image_is_capped():
    rng = np.random.default_rng(2)
    huge = cv2.resize(data.astronaut(), (4000, 3000), interpolation=cv2.INTER_NEAREST)
    for name in EDITS:
        params = A.sample_edit(rng, name, 3000, 4000, list(OTHERS))
        out = A.apply_edit(huge, name, params, CTX)
        assert out.dtype == np.uint8 and out.shape[2] == 3 and max(out.shape[:2]) <= 4000, name
        assert out.shape[:2] == A.output_shape(name, params, 3000, 4000), name


def test_growth_is_capped_at_max_side():
    image = np.zeros((1500, 1000, 3), np.uint8)
    out = A.apply_edit(image, "rescale", {"scale": 2.0})
    assert max(out.shape[:2]) == A.MAX_SIDE and out.shape[:2] == A.output_shape("rescale", {"scale": 2.0}, 1500, 1000)


@pytest.mark.parametrize("name", EDITS)
def test_params_are_plain_json_and_edits_change_pixels(name):
    rng = np.random.default_rng(3)
    image = data.astronaut()
    for _ in range(5):
        params = A.sample_edit(rng, name, *image.shape[:2], list(OTHERS))
        assert _is_plain(params) and json.loads(json.dumps(params)) == params
        out = A.apply_edit(image, name, params, CTX)
        assert out.shape != image.shape or not np.array_equal(out, image), params


def test_edits_do_what_they_say():
    image = data.astronaut()
    assert np.array_equal(A.apply_edit(image, "rotate90", {"k": 1}), np.rot90(image))
    assert np.array_equal(A.apply_edit(image, "flip", {"axis": "horizontal"}), image[:, ::-1])
    crop = {"top": 0.25, "left": 0.5, "height": 0.5, "width": 0.25}
    assert np.array_equal(A.apply_edit(image, "crop", crop), image[128:384, 256:384])
    grey = A.apply_edit(image, "grayscale", {})
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])
    rgb = A.apply_edit(np.full((8, 8, 3), 128, np.uint8), "pad", {"sides": [0.5, 0, 0, 0], "fill": [1, 2, 3]})
    assert rgb.shape == (12, 8, 3) and rgb[0, 0].tolist() == [1, 2, 3] and rgb[-1, -1].tolist() == [128] * 3


def test_crop_area_between_10_and_90_percent():
    rng = np.random.default_rng(4)
    for _ in range(300):
        p = A.sample_edit(rng, "crop", 400, 600)
        h, w = A.output_shape("crop", p, 400, 600)
        assert 0.09 <= h * w / (400 * 600) <= 0.91


def test_other_photo_comes_from_the_recorded_key():
    image = data.astronaut()
    params = A.sample_edit(np.random.default_rng(5), "paste_into", 512, 512, ["coffee"])
    assert params["other"] == "coffee"
    a = A.apply_edit(image, "paste_into", params, CTX)
    b = A.apply_edit(image, "paste_into", {**params, "other": "chelsea"}, CTX)
    assert not np.array_equal(a, b)
    with pytest.raises(KeyError, match="does not hold"):
        A.apply_edit(image, "paste_into", {**params, "other": "rocket"}, CTX)
    with pytest.raises(ValueError, match="needs other photos"):
        A.sample_edit(np.random.default_rng(5), "overlay_photo", 512, 512)


def test_chain_sampling_tracks_sizes_and_filters_kinds():
    rng = np.random.default_rng(6)
    for _ in range(20):
        chain = A.sample_chain(rng, 300, 451, kinds=["crop", "geometric"])
        assert 1 <= len(chain) <= 4 and all(A.get_edit(n).group in ("crop", "geometric") for n, _ in chain)
    no_others = [n for _ in range(50) for n, _ in A.sample_chain(rng, 300, 451, kinds=["overlay", "paste"])]
    assert "overlay_photo" not in no_others and "paste_into" not in no_others
    with pytest.raises(ValueError, match="no edit"):
        A.sample_chain(rng, 300, 451, kinds=["paste"])


def test_chain_replay_from_json_gives_identical_pixels():
    image = data.chelsea()
    for seed in range(12):
        chain = A.sample_chain(np.random.default_rng(seed), *image.shape[:2], other_keys=list(OTHERS))
        assert chain == A.sample_chain(np.random.default_rng(seed), *image.shape[:2], other_keys=list(OTHERS))
        out = A.apply_chain(image, chain, CTX)
        replay = A.apply_chain(image, json.loads(json.dumps(chain)), A.EditContext(dict(OTHERS)))
        assert np.array_equal(out, replay), chain
        assert out.shape[:2] == A.chain_shape(chain, *image.shape[:2])


def test_fonts_are_matplotlibs_dejavu():
    import matplotlib

    for name in FONTS:
        path = font_path(name)
        assert path.is_file() and Path(matplotlib.get_data_path()) in path.parents
    with pytest.raises(KeyError, match="known"):
        font_path("Comic Sans")


def test_batch_augment_replays_identically():
    aug = BatchCopyAugment(size=64)
    x = torch.rand(4, 3, 80, 96, generator=torch.Generator().manual_seed(0))
    out, params = aug(x, seed=7)
    assert out.shape == (4, 3, 64, 64) and out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 1
    assert torch.equal(aug.apply(x, params), out)
    assert torch.equal(aug(x, seed=7)[0], out)
    assert not torch.equal(aug(x, seed=8)[0], out)
    with pytest.raises(ValueError, match="expected"):
        aug.apply(x[:, :1], params)


def _photo_files(tmp_path) -> dict[str, str]:
    paths = {}
    for name in ("astronaut", "coffee", "chelsea"):
        paths[name] = str(tmp_path / f"{name}.png")
        Image.fromarray(getattr(data, name)()).save(paths[name])
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    paths["bad"] = str(tmp_path / "bad.jpg")
    return paths


def _rows():
    rng = np.random.default_rng(9)
    rows = [{"id": f"q{i}", "source": "astronaut",
             "chain": json.dumps(A.sample_chain(rng, 512, 512, other_keys=["coffee", "chelsea"]))} for i in range(3)]
    return rows + [{"id": "q3", "source": "bad", "chain": "[]"}]


def test_stage_renders_recorded_chains(tmp_path):
    paths = _photo_files(tmp_path)
    pool = PhotoPool(paths, reencode=90)
    got = {r["id"]: r for r in apply_chains_local(_rows(), paths, reencode=90, quality=90)}
    for row in _rows()[:3]:
        expected = A.apply_chain(pool.load("astronaut"), json.loads(row["chain"]), pool.context())
        assert got[row["id"]]["error"] == "" and got[row["id"]]["jpeg"] == encode_jpeg(expected, 90)
        assert decode_image(got[row["id"]]["jpeg"]).shape == expected.shape
    assert got["q3"]["jpeg"] == b"" and got["q3"]["error"] == "not an image"


def test_ray_stage_matches_local(tmp_path, ray_local):
    paths = _photo_files(tmp_path)
    local = {r["id"]: (r["jpeg"], r["error"]) for r in apply_chains_local(_rows(), paths, 90, 90)}
    remote = {str(r["id"]): (bytes(r["jpeg"]), str(r["error"])) for r in apply_chains_ray(_rows(), paths, 90, 90)}
    assert remote == local
