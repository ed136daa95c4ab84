import cv2
import numpy as np
import pytest
from skimage import data

from copyscope.matching.local_features import (
    LOCAL_METHODS,
    LocalFeatures,
    available_methods,
    extract_local_features,
    extract_query_features,
    from_bytes,
    mirror_features,
    to_bytes,
)

DIMS = {"rootsift": 128, "sift": 128, "orb": 32, "akaze": 61}
NEEDS_AKAZE = pytest.mark.skipif("akaze" not in available_methods(),
                                 reason="AKAZE needs opencv-contrib-python-headless from OpenCV 5 on")
METHODS = [pytest.param(m, marks=NEEDS_AKAZE) if m == "akaze" else m for m in LOCAL_METHODS]


@pytest.fixture(scope="module")
def astronaut():
    return data.astronaut()


@pytest.mark.parametrize("method", METHODS)
def test_extract_is_typed_and_in_original_pixels(method):
    image = cv2.resize(data.coffee(), (900, 600))  # larger than max_side: keypoints are scaled back
    features = extract_local_features(image, method, max_keypoints=300, max_side=512)
    assert features.method == method and features.image_size == (600, 900)
    assert 100 <= len(features) <= 300
    assert features.keypoints.dtype == np.float32 and features.keypoints.shape == (len(features), 2)
    assert features.descriptors.dtype == np.uint8 and features.descriptors.shape == (len(features), DIMS[method])
    assert features.keypoints.min() >= -0.5
    assert np.all(features.keypoints.max(axis=0) <= [899.5, 599.5])
    assert features.keypoints[:, 0].max() > 512  # would stay below 512 if left in the shrunk image's pixels


def test_keypoints_map_back_to_original_pixel_centres():
    image = np.zeros((600, 800, 3), np.uint8)
    cv2.circle(image, (300, 200), 12, (255, 255, 255), -1, cv2.LINE_AA)
    features = extract_local_features(image, "sift", max_side=400)  # shrunk by 2
    nearest = np.linalg.norm(features.keypoints - [300, 200], axis=1).min()
    assert nearest < 1.0


@pytest.mark.parametrize("method", [pytest.param("akaze", marks=NEEDS_AKAZE), "rootsift"])
def test_keeps_the_strongest_keypoints(astronaut, method):
    few = extract_local_features(astronaut, method, max_keypoints=50)
    many = extract_local_features(astronaut, method, max_keypoints=5000)
    assert len(few) == 50 and len(many) > 50
    np.testing.assert_array_equal(few.keypoints, many.keypoints[:50])


def test_rootsift_is_unit_norm_hellinger_descriptor(astronaut):
    features = extract_local_features(astronaut, "rootsift")
    norms = np.linalg.norm(features.descriptors / 512.0, axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=0.02)


def test_unknown_method_lists_known_ones(astronaut):
    with pytest.raises(ValueError, match="rootsift, sift, orb, akaze"):
        extract_local_features(astronaut, "surf")


def test_missing_akaze_says_which_package_has_it(astronaut):
    if "akaze" in available_methods():
        assert len(extract_local_features(astronaut, "akaze")) > 0
    else:
        with pytest.raises(ImportError, match="opencv-contrib-python-headless"):
            extract_local_features(astronaut, "akaze")


@pytest.mark.parametrize("method", METHODS)
def test_flat_image_gives_typed_empty(method):
    features = extract_local_features(np.full((64, 80, 3), 128, np.uint8), method)
    assert len(features) == 0 and features.image_size == (64, 80)
    assert features.keypoints.shape == (0, 2) and features.keypoints.dtype == np.float32
    assert features.descriptors.shape == (0, DIMS[method]) and features.descriptors.dtype == np.uint8


def _agreement(a: LocalFeatures, b: LocalFeatures) -> float:
    """Fraction of mutual nearest descriptors whose keypoints coincide (within 1.5 px)."""
    bf = cv2.BFMatcher(cv2.NORM_HAMMING if a.method in ("orb", "akaze") else cv2.NORM_L2, crossCheck=True)
    to_float = (lambda d: d) if a.method in ("orb", "akaze") else (lambda d: d.astype(np.float32))
    matches = bf.match(to_float(a.descriptors), to_float(b.descriptors))
    same = [np.linalg.norm(a.keypoints[m.queryIdx] - b.keypoints[m.trainIdx]) < 1.5 for m in matches]
    return float(np.mean(same)) if same else 0.0


@pytest.mark.parametrize("method", ["rootsift", "orb"])
def test_mirrored_features_describe_the_flipped_image_in_the_original_frame(astronaut, method):
    flipped = np.ascontiguousarray(astronaut[:, ::-1])
    of_flipped = extract_local_features(flipped, method)
    in_original_frame = LocalFeatures(of_flipped.keypoints * [-1, 1] + [astronaut.shape[1] - 1, 0],
                                      of_flipped.descriptors, of_flipped.image_size, method)
    mirrored = extract_local_features(astronaut, method, mirror=True)
    assert _agreement(mirrored, in_original_frame) > 0.8
    assert _agreement(extract_local_features(astronaut, method), in_original_frame) < 0.5


def test_query_features_pair_direct_and_mirrored(astronaut):
    direct, mirrored = extract_query_features(astronaut, "rootsift")
    assert direct.equals(extract_local_features(astronaut, "rootsift"))
    assert mirrored.equals(mirror_features(direct))
    np.testing.assert_array_equal(mirrored.keypoints, direct.keypoints)
    assert not np.array_equal(mirrored.descriptors, direct.descriptors)


def test_mirror_features_refuses_binary_descriptors(astronaut):
    with pytest.raises(ValueError, match="mirror=True"):
        mirror_features(extract_local_features(astronaut, "orb"))


def _assert_close(restored: LocalFeatures, original: LocalFeatures) -> None:
    assert restored.method == original.method and restored.image_size == original.image_size
    assert restored.keypoints.dtype == np.float32
    h, w = original.image_size
    np.testing.assert_allclose(restored.keypoints, original.keypoints, atol=max(h, w) / 65535 + 1e-4)
    np.testing.assert_array_equal(restored.descriptors, original.descriptors)
    assert restored.descriptors.dtype == original.descriptors.dtype


def test_blob_round_trip(astronaut):
    image = cv2.resize(astronaut, (4096, 3000))
    features = extract_local_features(image, "rootsift", max_keypoints=200)
    blob = to_bytes(features)
    assert len(blob) == 19 + len(features) * (4 + 128)
    _assert_close(from_bytes(blob, "rootsift"), features)


def test_blob_round_trip_empty_and_binary(astronaut):
    for features in (extract_local_features(np.zeros((50, 70, 3), np.uint8), "orb"),
                     extract_local_features(astronaut, "orb", max_keypoints=40)):
        _assert_close(from_bytes(to_bytes(features), "orb"), features)
    with pytest.raises(ValueError, match="magic"):
        from_bytes(b"x" * 40, "orb")


def test_float_descriptors_are_stored_as_float16():
    rng = np.random.default_rng(0)
    features = LocalFeatures(rng.uniform(0, 99, (5, 2)).astype(np.float32),
                             rng.normal(size=(5, 128)).astype(np.float32), (100, 100), "disk")
    blob = to_bytes(features)
    assert len(blob) == 19 + 5 * (4 + 2 * 128)  # float16
    restored = from_bytes(blob, "disk")
    assert restored.descriptors.dtype == np.float32
    np.testing.assert_allclose(restored.descriptors, features.descriptors, rtol=1e-3, atol=1e-3)
