import cv2
import numpy as np
import pytest
from skimage import data

from copyscope.descriptors.regions import (
    MIN_REGION_PX,
    box_iou,
    crop_boxes,
    detect_rectangles,
    propose_regions,
    tile_boxes,
)


def _noise_background(height, width, seed=0):
    """Isotropic random texture (blurred, stretched colour noise), seeded."""
    noise = np.random.default_rng(seed).normal(0, 1, (height, width, 3)).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), 6)
    return cv2.normalize(noise, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


def _paste(background, photo, box):
    x0, y0, x1, y1 = box
    out = background.copy()
    out[y0:y1, x0:x1] = cv2.resize(photo, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    return out


def _screenshot(photo, grey):
    """A phone-like flat grey frame: title bar with text, the photo, caption lines -> (image, photo box)."""
    frame = np.full((960, 480, 3), grey, np.uint8)
    fg = (40, 40, 40) if grey > 128 else (225, 225, 225)
    frame[:64] = (200, 60, 40)
    cv2.putText(frame, "Some App", (16, 44), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (255, 255, 255), 2)
    box = (24, 110, 456, 434)
    frame = _paste(frame, photo, box)
    for i in range(4):
        cv2.putText(frame, f"caption line {i} lorem ipsum", (24, 500 + 44 * i), cv2.FONT_HERSHEY_SIMPLEX,
                    0.8, fg, 2)
    return frame, box


def _best_iou(boxes, box):
    return float(box_iou(boxes, np.array([box])).max()) if len(boxes) else 0.0


def _assert_valid(boxes, height, width, min_side_frac=0.15):
    assert boxes.dtype == np.int32 and boxes.ndim == 2 and boxes.shape[1] == 4
    x0, y0, x1, y1 = boxes.T
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x1 <= width).all() and (y1 <= height).all()
    assert (x1 - x0 >= max(MIN_REGION_PX, min_side_frac * width)).all()
    assert (y1 - y0 >= max(MIN_REGION_PX, min_side_frac * height)).all()


@pytest.mark.parametrize("photo", ["coffee", "chelsea", "rocket"])
def test_boxes_are_valid_and_bounded(photo):
    image = getattr(data, photo)()
    boxes = propose_regions(image, max_regions=9)
    assert 0 < len(boxes) <= 9
    _assert_valid(boxes, *image.shape[:2])
    iou = box_iou(boxes, boxes)
    assert (iou[~np.eye(len(boxes), dtype=bool)] < 0.7).all()
    assert (box_iou(boxes, np.array([[0, 0, image.shape[1], image.shape[0]]])) < 0.85).all()


def test_deterministic():
    image = _paste(_noise_background(480, 640), data.astronaut(), (300, 100, 460, 260))
    np.testing.assert_array_equal(propose_regions(image), propose_regions(image.copy()))


@pytest.mark.parametrize("shape", [(1, 1, 3), (20, 30, 3), (40, 300, 3), (0, 0, 3)])
def test_tiny_images_give_typed_empty(shape):
    boxes = propose_regions(np.zeros(shape, np.uint8))
    assert boxes.shape == (0, 4) and boxes.dtype == np.int32


def test_rejects_non_rgb():
    with pytest.raises(ValueError, match="H, W, 3"):
        propose_regions(np.zeros((64, 64), np.uint8))


@pytest.mark.parametrize("background", ["noise", "coffee"])
@pytest.mark.parametrize("box", [(300, 100, 460, 260), (20, 250, 260, 460), (400, 0, 640, 180)])
def test_finds_pasted_photo(background, box):
    bg = _noise_background(480, 640) if background == "noise" else cv2.resize(data.coffee(), (640, 480))
    image = _paste(bg, data.astronaut(), box)
    boxes = propose_regions(image)
    assert _best_iou(boxes[:4], box) >= 0.7  # among the detected, ranked before the tiles


def test_finds_pasted_photo_with_white_border():
    image = _paste(cv2.resize(data.coffee(), (640, 480)), np.pad(data.chelsea(), ((8, 8), (8, 8), (0, 0)),
                   constant_values=255), (200, 150, 440, 350))
    assert _best_iou(propose_regions(image)[:4], (208, 157, 432, 343)) >= 0.7


@pytest.mark.parametrize("grey", [24, 128, 248])
def test_finds_photo_in_screenshot(grey):
    image, box = _screenshot(data.chelsea(), grey)
    assert _best_iou(propose_regions(image)[:4], box) >= 0.7


def test_trims_padding():
    photo = data.rocket()
    image = cv2.copyMakeBorder(photo, 120, 30, 200, 60, cv2.BORDER_CONSTANT, value=(30, 200, 90))
    box = (200, 120, 200 + photo.shape[1], 120 + photo.shape[0])
    assert _best_iou(detect_rectangles(image), box) >= 0.9


def test_plain_photo_detects_little():
    # not a guarantee (real photos have straight edges), but a smooth texture has no frame
    assert len(detect_rectangles(_noise_background(480, 640, seed=3))) == 0


def test_detect_false_gives_tiles_only():
    image = _paste(_noise_background(480, 640), data.astronaut(), (300, 100, 460, 260))
    boxes = propose_regions(image, detect=False, max_regions=50)
    tiles = np.concatenate([tile_boxes(480, 640, 1, 0.6), tile_boxes(480, 640, 2, 0.6), tile_boxes(480, 640, 3, 0.45)])
    assert {tuple(b) for b in boxes} <= {tuple(b) for b in tiles}


@pytest.mark.parametrize("grid,fraction", [(1, 0.6), (2, 0.6), (3, 0.45), (3, 0.34)])
def test_tiles_cover_the_image(grid, fraction):
    height, width = 301, 457
    boxes = tile_boxes(height, width, grid, fraction)
    assert boxes.shape == (grid * grid, 4) and boxes.dtype == np.int32
    _assert_valid(boxes, height, width, min_side_frac=0)
    covered = np.zeros((height, width), bool)
    for x0, y0, x1, y1 in boxes:
        covered[y0:y1, x0:x1] = True
    if grid == 1:  # the centre crop is centred
        x0, y0, x1, y1 = boxes[0]
        assert abs(x0 - (width - x1)) <= 1 and abs(y0 - (height - y1)) <= 1
    else:
        assert covered.all()


def test_tiles_centre_first():
    boxes = tile_boxes(300, 300, 3, 0.4)
    np.testing.assert_array_equal(boxes[0], [90, 90, 210, 210])
    corners = {(0, 0), (180, 0), (0, 180), (180, 180)}
    assert {tuple(b[:2]) for b in boxes[-4:]} == corners


def test_dedup_and_limit():
    image = cv2.resize(data.coffee(), (640, 480))
    # identical layouts twice: the second copy must be dropped as duplicates
    boxes = propose_regions(image, detect=False, tiles=[(2, 0.6), (2, 0.6)], max_regions=50)
    assert len(boxes) == 4
    assert len(propose_regions(image, max_regions=3)) == 3
    assert propose_regions(image, max_regions=0).shape == (0, 4)


def test_box_iou_oracle():
    rng = np.random.default_rng(0)
    a = np.sort(rng.integers(0, 50, (6, 2, 2)), axis=1).transpose(0, 2, 1).reshape(6, 4)[:, [0, 2, 1, 3]]
    b = np.sort(rng.integers(0, 50, (5, 2, 2)), axis=1).transpose(0, 2, 1).reshape(5, 4)[:, [0, 2, 1, 3]]
    for i, (ax0, ay0, ax1, ay1) in enumerate(a):
        for j, (bx0, by0, bx1, by1) in enumerate(b):
            ma, mb = np.zeros((50, 50), bool), np.zeros((50, 50), bool)
            ma[ay0:ay1, ax0:ax1], mb[by0:by1, bx0:bx1] = True, True
            union = (ma | mb).sum()
            expected = (ma & mb).sum() / union if union else 0.0
            assert box_iou(a, b)[i, j] == pytest.approx(expected)


def test_crop_boxes():
    image = data.astronaut()
    boxes = np.array([[10, 20, 110, 70], [0, 0, 512, 512]], np.int32)
    crops = crop_boxes(image, boxes)
    assert [c.shape for c in crops] == [(50, 100, 3), (512, 512, 3)]
    assert all(c.flags.c_contiguous and c.flags.owndata for c in crops)
    np.testing.assert_array_equal(crops[0], image[20:70, 10:110])
    crops[0][:] = 0
    assert image[20:70, 10:110].any()
    assert crop_boxes(image, np.zeros((0, 4), np.int32)) == []
    with pytest.raises(ValueError, match="empty"):
        crop_boxes(image, np.array([[5, 5, 5, 9]]))
