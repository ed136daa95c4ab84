import cv2
import numpy as np
import pytest
from skimage import data

from copyscope.matching.local_features import LOCAL_METHODS, LocalFeatures, available_methods, extract_local_features
from copyscope.matching.verification import Verification, implausibility, match_features, verify_images, verify_pair

METHODS = [pytest.param(m, marks=pytest.mark.skipif(m not in available_methods(), reason=f"no {m} in this OpenCV"))
           for m in LOCAL_METHODS]


def _warped(reference: np.ndarray, degrees: float, scale: float, shift=(40.0, -30.0), size=(420, 380)):
    """reference -> (query, A) with query = reference warped by A (3, 3), reference -> query pixels."""
    h, w = reference.shape[:2]
    A = np.vstack([cv2.getRotationMatrix2D((w / 2, h / 2), degrees, scale), [0, 0, 1]])
    A[:2, 2] += shift
    return cv2.warpPerspective(reference, A, size), A


def _apply(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    homogeneous = np.hstack([points, np.ones((len(points), 1))]) @ transform.T
    return homogeneous[:, :2] / homogeneous[:, 2:]


@pytest.fixture(scope="module")
def chelsea():
    return data.chelsea()


@pytest.fixture(scope="module")
def rotated(chelsea):
    return _warped(chelsea, degrees=20, scale=0.8)


def _assert_maps_like(verification: Verification, expected: np.ndarray, tolerance_px: float = 3.0) -> None:
    """The transform agrees with `expected` (query -> reference) over the matched query region."""
    region = verification.query_region.astype(np.float64)
    probes = np.vstack([region, region.mean(axis=0)])
    error = np.linalg.norm(_apply(verification.transform, probes) - _apply(expected, probes), axis=1)
    assert error.max() < tolerance_px, error


@pytest.mark.parametrize("geometry", ["homography", "affine"])
def test_rotated_scaled_crop_recovers_the_transform(chelsea, rotated, geometry):
    query, A = rotated
    v = verify_images(query, chelsea, geometry=geometry)
    assert v.verified and v.reason == "" and not v.mirrored
    assert v.inliers >= 30 and v.inlier_ratio > 0.5
    _assert_maps_like(v, np.linalg.inv(A))
    if geometry == "affine":
        np.testing.assert_array_equal(v.transform[2], [0, 0, 1])


def test_record_is_consistent(chelsea, rotated):
    q = extract_local_features(rotated[0])
    r = extract_local_features(chelsea)
    v = verify_pair(q, r)
    assert v.pairs.dtype == np.int32 and v.pairs.shape == (v.matches, 2)
    assert v.inlier_mask.dtype == bool and v.inlier_mask.sum() == v.inliers
    assert v.inlier_ratio == pytest.approx(v.inliers / v.matches)
    np.testing.assert_array_equal(v.query_points, q.keypoints[v.pairs[:, 0]])
    np.testing.assert_array_equal(v.reference_points, r.keypoints[v.pairs[:, 1]])
    assert v.query_region.dtype == np.float32 and v.query_region.shape[1] == 2 and len(v.query_region) >= 3
    assert 0 < v.query_coverage <= 1 and 0 < v.reference_coverage <= 1
    assert v.transform.shape == (3, 3) and v.transform.dtype == np.float64


def test_mirrored_copy_verifies_through_the_mirror_pass(chelsea):
    w = chelsea.shape[1]
    query = np.ascontiguousarray(chelsea[20:280, ::-1][:, 30:400])  # flipped, then cropped
    v = verify_images(query, chelsea)
    assert v.verified and v.mirrored and v.inliers >= 30
    assert np.linalg.det(v.transform[:2, :2]) < 0
    expected = np.array([[-1.0, 0, w - 1 - 30], [0, 1, 20], [0, 0, 1]])  # query -> reference pixels
    _assert_maps_like(v, expected)
    assert verify_images(query, chelsea, mirror=False).inliers < 10  # descriptors are not mirror invariant


@pytest.mark.parametrize("method", METHODS)
def test_each_method_separates_copy_from_unrelated(chelsea, rotated, method):
    copy = verify_images(rotated[0], chelsea, method)
    assert copy.verified and copy.inliers >= 20
    _assert_maps_like(copy, np.linalg.inv(rotated[1]), tolerance_px=4.0)
    assert verify_images(data.coffee(), data.rocket(), method).inliers < 10


def test_pasted_copy_is_located_in_the_query():
    astronaut, coffee = data.astronaut(), data.coffee().copy()
    x0, y0, side = 300, 80, 256  # a quarter of the astronaut's area
    coffee[y0:y0 + side, x0:x0 + side] = cv2.resize(astronaut, (side, side), interpolation=cv2.INTER_AREA)
    v = verify_images(coffee, astronaut)
    assert v.verified and v.inliers >= 30
    qx0, qy0 = v.query_region.min(axis=0)
    qx1, qy1 = v.query_region.max(axis=0)
    inter = max(0, min(qx1, x0 + side) - max(qx0, x0)) * max(0, min(qy1, y0 + side) - max(qy0, y0))
    iou = inter / ((qx1 - qx0) * (qy1 - qy0) + side * side - inter)
    assert iou > 0.6
    assert v.reference_coverage > 0.5
    assert 0.05 < v.query_coverage < 0.3


def test_empty_features_give_the_empty_record(chelsea):
    r = extract_local_features(chelsea)
    for q in (LocalFeatures.empty("rootsift", (10, 10)), extract_local_features(np.zeros((40, 40, 3), np.uint8))):
        v = verify_pair(q, r, mirrored=q)
        assert not v.verified and v.inliers == 0 and v.matches == 0 and "no keypoints" in v.reason
        assert v.pairs.shape == (0, 2) and v.pairs.dtype == np.int32 and v.inlier_mask.shape == (0,)
        assert v.query_region.shape == (0, 2) and v.transform.shape == (0, 3)
    empty = Verification.empty()
    assert empty.inlier_ratio == 0.0 and empty.query_points.shape == (0, 2)


def test_deterministic(chelsea, rotated):
    q, r = extract_local_features(rotated[0], "orb"), extract_local_features(chelsea, "orb")
    first, second = verify_pair(q, r, seed=3), verify_pair(q, r, seed=3)
    np.testing.assert_array_equal(first.transform, second.transform)
    np.testing.assert_array_equal(first.inlier_mask, second.inlier_mask)


def _brute_force_matches(qd, rd, binary, ratio, mutual):
    if binary:
        qb, rb = np.unpackbits(qd, axis=1).astype(int), np.unpackbits(rd, axis=1).astype(int)
        dist = (qb[:, None, :] != rb[None, :, :]).sum(-1).astype(float)
    else:
        dist = np.sqrt(((qd[:, None, :].astype(float) - rd[None, :, :].astype(float)) ** 2).sum(-1))
    order = np.argsort(dist, axis=1, kind="stable")  # the first of tied nearest, as argmin
    found = set()
    for i, (j, k) in enumerate(order[:, :2]):
        if (ratio is None or dist[i, j] < ratio * dist[i, k]) and (not mutual or np.argmin(dist[:, j]) == i):
            found.add((i, int(j)))
    return found


@pytest.mark.parametrize("method,dim", [("rootsift", 128), ("orb", 32)])
@pytest.mark.parametrize("mutual", [True, False])
@pytest.mark.parametrize("ratio", [0.8, None])
def test_match_features_equals_brute_force(method, dim, mutual, ratio):
    rng = np.random.default_rng(0)
    rd = rng.integers(0, 256, (300, dim), dtype=np.uint8)
    planted = rng.choice(300, 120, replace=False)
    noise = rng.integers(-20, 21, (120, dim)) if method != "orb" else 0
    qd = np.vstack([np.clip(rd[planted].astype(int) + noise, 0, 255).astype(np.uint8),
                    rng.integers(0, 256, (80, dim), dtype=np.uint8)])
    if method == "orb":  # flip a few bits of the planted copies
        qd[:120] ^= (rng.random((120, dim)) < 0.03).astype(np.uint8) << rng.integers(0, 8, (120, dim)).astype(np.uint8)
    features = [LocalFeatures(np.zeros((len(d), 2), np.float32), d, (100, 100), method) for d in (qd, rd)]
    got = match_features(*features, ratio=ratio, mutual=mutual)
    assert got.dtype == np.int32
    assert {tuple(p) for p in got.tolist()} == _brute_force_matches(qd, rd, method == "orb", ratio, mutual)
    assert len(got) >= 100


def test_match_features_against_one_reference_descriptor():
    rng = np.random.default_rng(1)
    qd, rd = rng.integers(0, 256, (5, 128), dtype=np.uint8), rng.integers(0, 256, (1, 128), dtype=np.uint8)
    q, r = (LocalFeatures(np.zeros((len(d), 2), np.float32), d, (100, 100), "rootsift") for d in (qd, rd))
    nearest = int(np.argmin(((qd.astype(float) - rd[0].astype(float)) ** 2).sum(1)))
    assert match_features(q, r, ratio=0.75).tolist() == [[nearest, 0]]  # no second nearest: no ratio test


def test_argument_errors(chelsea):
    sift, orb = extract_local_features(chelsea, "sift"), extract_local_features(chelsea, "orb")
    with pytest.raises(ValueError, match="cannot match"):
        match_features(sift, orb)
    with pytest.raises(ValueError, match="homography, affine"):
        verify_pair(sift, sift, geometry="similarity")
    with pytest.raises(ValueError, match="mirror pass"):
        verify_pair(sift, sift, pairs=np.zeros((0, 2), np.int32), mirrored=sift)


def test_given_pairs_replace_descriptor_matching(chelsea, rotated):
    q, r = extract_local_features(rotated[0]), extract_local_features(chelsea)
    pairs = match_features(q, r)
    assert verify_pair(q, r, pairs=pairs).inliers == verify_pair(q, r).inliers
    assert verify_pair(q, r, pairs=pairs[:3]).reason == "too few matches: 3"


@pytest.fixture(scope="module")
def grid():
    x, y = np.meshgrid(np.linspace(50, 250, 6), np.linspace(40, 200, 5))
    return np.stack([x.ravel(), y.ravel()], axis=1)


@pytest.mark.parametrize("transform,reason", [
    (np.eye(3), ""),
    (np.array([[-1.0, 0, 299], [0, 1, 0], [0, 0, 1]]), ""),  # a mirror is a legitimate copy
    (np.array([[0.9, 0.2, 5], [-0.1, 1.1, 3], [2e-4, -1e-4, 1]]), ""),  # mild perspective
    (np.diag([10.0, 1.0, 1.0]), "anisotropy"),
    (np.array([[1.0, 0, 0], [0, 1, 0], [-0.01, 0, 1]]), "horizon"),  # w = 0 at x = 100
    (np.diag([100.0, 100.0, 1.0]), "relative scale"),
])
def test_implausibility(grid, transform, reason):
    found = implausibility(transform, grid, (300, 300), (300, 300))
    assert (reason in found and found.startswith("degenerate")) if reason else found == ""


def test_collinear_inliers_are_degenerate():
    line = np.stack([np.linspace(0, 200, 20), np.linspace(10, 110, 20)], axis=1)
    assert "line" in implausibility(np.eye(3), line, (300, 300), (300, 300))


# Learned path (kornia DISK + LightGlue) with random weights from temp files: typed results, the
# loading code and the geometry hand-off are real; the numbers are meaningless.

@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from kornia.feature import DISK, LightGlue

    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    torch.save({"extractor": DISK().state_dict()}, folder / "disk.pth")
    # cvg/LightGlue checkpoints name the attention blocks "self_attn.<i>", kornia "transformers.<i>.self_attn"
    state = {k.replace("transformers.0.self_attn.", "self_attn.0."): v
             for k, v in LightGlue(None, input_dim=128).state_dict().items()}
    assert any(k.startswith("self_attn.0.") for k in state)
    torch.save(state, folder / "lightglue.pth")
    return folder / "disk.pth", folder / "lightglue.pth"


def test_learned_matcher_gives_typed_features_and_verifications(random_weights):
    from copyscope.matching.learned_matchers import LearnedMatcher

    matcher = LearnedMatcher.from_files(*random_weights, device="cpu", max_keypoints=128, max_side=128)
    image = data.astronaut()  # 512 px, described at 128 px
    features = matcher.extract(image)
    assert features.method == "disk" and 20 <= len(features) <= 128
    assert features.descriptors.dtype == np.float32 and features.descriptors.shape == (len(features), 128)
    assert features.keypoints.dtype == np.float32 and features.keypoints.max() > 400  # original pixels
    other = matcher.verify(features, matcher.extract(data.coffee()))
    assert other.pairs.dtype == np.int32 and other.pairs.shape == (other.matches, 2)


def test_learned_matches_feed_the_geometry(random_weights):
    from copyscope.matching.learned_matchers import LearnedMatcher

    # With no score threshold even random LightGlue pairs each point with itself between identical inputs.
    matcher = LearnedMatcher.from_files(*random_weights, filter_threshold=0.0, max_keypoints=128, max_side=128)
    features = matcher.extract(data.chelsea())
    v = matcher.verify(features, features)
    assert v.verified and v.inliers == v.matches > 20
    np.testing.assert_array_equal(v.pairs[:, 0], v.pairs[:, 1])
    np.testing.assert_allclose(v.transform, np.eye(3), atol=1e-3)


def test_learned_weights_are_never_downloaded(random_weights, tmp_path):
    from copyscope.matching.learned_matchers import load_disk, load_lightglue

    with pytest.raises(ValueError, match="never downloads"):
        load_disk(None)
    with pytest.raises(FileNotFoundError):
        load_lightglue(tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="not a LightGlue checkpoint"):
        load_lightglue(random_weights[0])
