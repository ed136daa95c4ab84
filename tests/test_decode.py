import io
import time

import numpy as np
import pytest
from PIL import Image, features

from copyscope.pipeline.decode import DEFAULT_MAX_PIXELS, DecodeError, decode_image, image_size
from tests import badfiles
from tests.badfiles import make_bad_corpus, png_bytes

EXPECTED_REASONS = {
    "truncated.jpg": "truncated JPEG",
    "corrupt.png": "corrupt PNG",
    "empty.jpg": "empty file",
    "text.png": "not an image",
    "bomb.png": "too large",
    "broken_link.jpg": "broken symlink",
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    return folder, make_bad_corpus(folder)


def _encode(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_corpus_is_small_and_covers_both_outcomes(corpus):
    folder, expected = corpus
    assert set(EXPECTED_REASONS) == {name for name, ok in expected.items() if not ok}
    size = sum((folder / n).stat().st_size for n in expected if not (folder / n).is_symlink())
    assert size < 1_000_000


def test_corpus_files_decode_or_fail_with_reason(corpus):
    folder, expected = corpus
    for name, ok in expected.items():
        if ok:
            img = decode_image(folder / name)
            assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8, name
            assert img.flags.c_contiguous and img.flags.writeable, name
        else:
            with pytest.raises(DecodeError) as err:
                decode_image(folder / name)
            assert err.value.reason.startswith(EXPECTED_REASONS[name]), (name, err.value.reason)


def test_bytes_and_path_give_the_same_pixels(corpus):
    folder, _ = corpus
    for name in ("good.jpg", "gray16.png", "exif_rotated.jpg"):
        path = folder / name
        np.testing.assert_array_equal(decode_image(path), decode_image(path.read_bytes()))
        np.testing.assert_array_equal(decode_image(path), decode_image(str(path)))


def test_unreadable_paths(tmp_path):
    for source, reason in [(tmp_path, "is a directory"), (tmp_path / "missing.jpg", "file not found"),
                           (b"", "empty file"), (b"GIF89a", "not an image")]:
        with pytest.raises(DecodeError, match=reason):
            decode_image(source)


def test_exif_orientation_is_applied(corpus):
    folder, _ = corpus
    w, h = badfiles.EXIF_STORED_WH
    stored = np.asarray(Image.open(folder / "exif_rotated.jpg"))
    assert stored.shape[:2] == (h, w) and stored[0, 0, 0] > 200  # red block stored top-left
    img = decode_image(folder / "exif_rotated.jpg")
    assert img.shape[:2] == (w, h)
    # orientation 6: rotate 90 degrees clockwise, the stored top-left lands top-right
    top_right, top_left = img[:8, -8:].mean(axis=(0, 1)), img[:8, :8].mean(axis=(0, 1))
    assert top_right[0] > 200 and top_right[1] < 50
    np.testing.assert_allclose(top_left, 128, atol=8)


def test_16bit_grey_is_scaled_not_clipped(corpus):
    folder, _ = corpus
    img = decode_image(folder / "gray16.png")
    stored = np.asarray(Image.open(folder / "gray16.png")).astype(np.float64)
    np.testing.assert_array_equal(img[0, :4, 0], [0, 1, 128, 255])
    np.testing.assert_allclose(img[..., 0], stored * 255 / 65535, atol=0.5 + 1e-9)
    assert (img[..., 0] == img[..., 1]).all() and (img[..., 0] == img[..., 2]).all()


def test_16bit_grey_in_mode_i_is_scaled():
    img = Image.fromarray(np.array([[0, 32768, 65535, 70000]], np.int32))
    assert img.mode == "I"
    np.testing.assert_array_equal(decode_image(_encode(img, "TIFF"))[0, :, 0], [0, 128, 255, 255])


def test_16bit_rgb_png_keeps_the_high_byte():
    row = np.array([[65535, 32768, 0], [256, 255, 1000]], ">u2").tobytes()
    img = decode_image(png_bytes(2, 1, 16, 2, [b"\x00" + row]))
    np.testing.assert_array_equal(img, [[[255, 128, 0], [1, 0, 3]]])


@pytest.mark.parametrize("values, expected", [([0.0, 0.5, 1.0], [0, 128, 255]),
                                              ([0.0, 100.0, 300.0], [0, 100, 255])])
def test_float_images(values, expected):
    img = Image.fromarray(np.array([values], np.float32))
    assert img.mode == "F"
    np.testing.assert_array_equal(decode_image(_encode(img, "TIFF"))[0, :, 0], expected)


def test_alpha_is_composited_onto_white(corpus):
    folder, _ = corpus
    r, g, b, a = badfiles.RGBA_PIXEL
    expected = [round(c * a / 255 + 255 * (1 - a / 255)) for c in (r, g, b)]
    rgba = decode_image(folder / "rgba.png")
    np.testing.assert_allclose(rgba, np.broadcast_to(expected, (8, 16, 3)), atol=1)
    pal = decode_image(folder / "palette_alpha.png")
    assert (pal[:, :8] == 255).all()  # transparent index -> white
    assert (pal[:, 8:] == badfiles.PALETTE_RGB[1]).all()
    la = decode_image(_encode(Image.new("LA", (3, 2), (0, 0)), "PNG"))
    assert (la == 255).all()


@pytest.mark.parametrize("mode, colour, expected", [("1", 1, (255, 255, 255)), ("L", 77, (77, 77, 77))])
def test_grey_modes_become_rgb(mode, colour, expected):
    img = decode_image(_encode(Image.new(mode, (5, 4), colour), "PNG"))
    assert img.shape == (4, 5, 3) and (img == expected).all()


def test_cmyk_jpeg_matches_its_rgb_source(corpus):
    folder, _ = corpus
    rgb = decode_image(folder / "good.jpg").astype(np.int16)
    cmyk = decode_image(folder / "cmyk.jpg").astype(np.int16)
    assert np.abs(rgb - cmyk).mean() < 6


def test_animated_first_frame(corpus):
    folder, _ = corpus
    assert (decode_image(folder / "animated.gif") == badfiles.FRAME_COLOURS[0]).all()


@pytest.mark.skipif(not features.check("webp"), reason="Pillow built without WebP")
def test_animated_webp_first_frame():
    frames = [Image.new("RGB", (12, 10), c) for c in badfiles.FRAME_COLOURS]
    data = _encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    assert (decode_image(data) == badfiles.FRAME_COLOURS[0]).all()


def test_one_pixel(corpus):
    folder, _ = corpus
    np.testing.assert_array_equal(decode_image(folder / "tiny.png"), [[[10, 20, 30]]])


def test_bomb_is_refused_fast(corpus):
    folder, _ = corpus
    start = time.perf_counter()
    with pytest.raises(DecodeError, match="too large"):
        decode_image(folder / "bomb.png")
    assert time.perf_counter() - start < 1.0


def test_own_pixel_limit_is_checked_before_decoding():
    side = 9000  # 81 MP: over our default, under Pillow's own warning threshold
    assert side * side > DEFAULT_MAX_PIXELS
    data = badfiles.bomb_png(side, side)
    start = time.perf_counter()
    with pytest.raises(DecodeError) as err:
        decode_image(data)
    assert time.perf_counter() - start < 1.0
    assert err.value.reason == f"too large: {side}x{side} pixels > limit {DEFAULT_MAX_PIXELS}"
    assert image_size(data) == (side, side)


def test_max_pixels_argument(corpus):
    folder, _ = corpus
    with pytest.raises(DecodeError, match="too large: 451x300 pixels > limit 1000"):
        decode_image(folder / "good.jpg", max_pixels=1000)
    assert decode_image(folder / "good.jpg", max_pixels=451 * 300).shape == (300, 451, 3)


@pytest.mark.parametrize("min_side, shape", [(None, (300, 451)), (100, (150, 226)),
                                             (40, (75, 113)), (10, (38, 57)), (1000, (300, 451))])
def test_min_side_draft_keeps_short_side(corpus, min_side, shape):
    folder, _ = corpus
    img = decode_image(folder / "good.jpg", min_side=min_side)
    assert img.shape[:2] == shape
    assert min(img.shape[:2]) >= min(min_side or 0, 300)
    full = decode_image(folder / "good.jpg").astype(np.float32)
    assert abs(img.mean() - full.mean()) < 3  # same picture, only smaller


def test_min_side_ignored_for_png_and_applied_after_exif(corpus):
    folder, _ = corpus
    assert decode_image(folder / "good_crop.png", min_side=10).shape == (96, 128, 3)
    w, h = badfiles.EXIF_STORED_WH
    assert decode_image(folder / "exif_rotated.jpg", min_side=12).shape == (w // 2, h // 2, 3)


def test_image_size_reads_the_header(corpus):
    folder, _ = corpus
    assert image_size(folder / "good.jpg") == (451, 300)
    assert image_size(folder / "exif_rotated.jpg") == badfiles.EXIF_STORED_WH
    with pytest.raises(DecodeError, match="not an image"):
        image_size(folder / "text.png")
