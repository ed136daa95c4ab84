import numpy as np
import pytest
from PIL import Image
from skimage import data

from copyscope.matching.verification import Verification, verify_images
from copyscope.pipeline.reports.pair_drawing import CAPTION_HEIGHT, GAP, INLIER_COLOUR, caption, draw_pair, save_png


@pytest.fixture(scope="module")
def pair():
    reference = data.chelsea()  # 300 x 451
    query = np.ascontiguousarray(reference[40:260, 60:420])
    return query, reference, verify_images(query, reference)


def _plain(query, reference, verification):
    return draw_pair(query, reference, Verification.empty(verification.reason))


def test_shape_and_layout(pair):
    query, reference, v = pair
    drawn = draw_pair(query, reference, v)
    height = reference.shape[0]  # the taller image keeps its height; the query is scaled up to it
    query_width = round(query.shape[1] * height / query.shape[0])
    assert drawn.dtype == np.uint8
    assert drawn.shape == (height + CAPTION_HEIGHT, query_width + GAP + reference.shape[1], 3)
    plain = _plain(query, reference, v)  # lines cross the gap; without them it is white
    np.testing.assert_array_equal(plain[:height, query_width:query_width + GAP], 255)
    np.testing.assert_array_equal(plain[:height, -reference.shape[1]:], reference)


def test_draws_inliers_and_regions(pair):
    query, reference, v = pair
    assert v.verified
    drawn, plain = draw_pair(query, reference, v), _plain(query, reference, v)
    changed = np.any(drawn != plain, axis=-1)
    assert changed[: reference.shape[0]].mean() > 0.01
    assert np.all(drawn == INLIER_COLOUR, axis=-1).sum() > 100
    assert caption(v).startswith(f"{v.inliers} inliers / {v.matches} matches")


def test_max_side_and_grey_input(pair):
    query, reference, v = pair
    drawn = draw_pair(query[..., 0], reference, v, max_side=150)
    assert drawn.shape[0] == 150 + CAPTION_HEIGHT and drawn.shape[2] == 3


def test_unverified_pair_draws_only_the_caption(pair):
    query, reference, _ = pair
    empty = Verification.empty("no keypoints in the query")
    drawn = draw_pair(query, reference, empty)
    assert "not verified (no keypoints in the query)" in caption(empty)
    np.testing.assert_array_equal(drawn[: reference.shape[0], -reference.shape[1]:], reference)


def test_save_png_round_trips(tmp_path, pair):
    drawn = draw_pair(*pair)
    save_png(tmp_path / "pair.png", drawn)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "pair.png")), drawn)
    assert [p.name for p in tmp_path.iterdir()] == ["pair.png"]
