"""The prepare stage: one row per view, the whole image at the model's size, regions at theirs."""

import numpy as np
from PIL import Image
from skimage import data

from copyscope.descriptors import PreprocessCfg
from copyscope.pipeline.stages import PrepareOptions, prepare_batch


def _prepare(tmp_path, **options) -> dict:
    Image.fromarray(data.astronaut()).save(tmp_path / "a.png")
    batch = {"id": np.array(["a"]), "path": np.array([str(tmp_path / "a.png")])}
    return prepare_batch(batch, PrepareOptions(PreprocessCfg(size=128).to_dict(), **options).to_dict())


def test_region_views_are_resized_to_region_size_and_keep_their_boxes(tmp_path):
    default = _prepare(tmp_path, regions=4)
    small = _prepare(tmp_path, regions=4, region_size=64)
    assert list(small["view"]) == [0, 1, 2, 3, 4] == list(default["view"])
    np.testing.assert_array_equal(small["box"], default["box"])
    assert min(small["image"][0].shape[:2]) == 128  # the whole image at the model's size
    assert all(min(im.shape[:2]) == 64 for im in small["image"][1:])
    assert all(min(im.shape[:2]) == 128 for im in default["image"][1:])
    np.testing.assert_array_equal(small["image"][0], default["image"][0])


def test_a_regions_only_pass_gives_the_region_rows_of_a_full_pass(tmp_path):
    rows = _prepare(tmp_path, regions=3, whole=False, region_size=64)
    full = _prepare(tmp_path, regions=3, region_size=64)
    assert list(rows["view"]) == [1, 2, 3] == list(full["view"][1:])
    np.testing.assert_array_equal(rows["box"], full["box"][1:])
    for got, want in zip(rows["image"], full["image"][1:]):
        np.testing.assert_array_equal(got, want)


def test_given_boxes_replace_the_proposals(tmp_path):
    Image.fromarray(data.astronaut()).save(tmp_path / "a.png")  # 512 x 512
    batch = {"id": np.array(["a"]), "path": np.array([str(tmp_path / "a.png")]), "boxes": np.empty(1, object)}
    batch["boxes"][0] = np.array([[0.25, 0.5, 0.75, 1.0], [0.0, 0.0, 1e-4, 1e-4]], np.float32)
    rows = prepare_batch(batch, PrepareOptions(PreprocessCfg(size=128).to_dict(), whole=False,
                                               full_size=True).to_dict())
    assert list(rows["view"]) == [1, 2] and "boxes" not in rows
    np.testing.assert_array_equal(rows["box"], [[128, 256, 384, 512], [0, 0, 1, 1]])  # at least a pixel
    assert min(rows["image"][0].shape[:2]) == 128
