"""matching.compact_features: stored size, code-space matching, mirrors, and verification of real copies."""

import cv2
import numpy as np
import pytest
from skimage import data

from copyscope.descriptors.errors import UserError
from copyscope.matching.compact_features import compact, is_projected, load_projection, mirrored, project
from copyscope.matching.local_features import LocalSpec, extract_local_features, mirror_features, to_bytes
from copyscope.pipeline.verify_stage import verify_stored

SPEC = LocalSpec()


@pytest.fixture(scope="module")
def astronaut():
    return data.astronaut()


def test_default_store_is_under_24_kb(astronaut):
    full = extract_local_features(cv2.resize(astronaut, (1600, 1600)), "rootsift", max_keypoints=1000)
    assert len(full) == 1000 and len(to_bytes(full)) > 130_000
    stored = compact(full, SPEC)
    assert stored.descriptors.shape == (460, 48) and stored.descriptors.dtype == np.uint8
    assert len(to_bytes(stored)) <= 24_000
    np.testing.assert_array_equal(stored.keypoints, full.keypoints[:460])  # the strongest, in order
    assert compact(stored, SPEC) is stored and is_projected(stored, SPEC) and not is_projected(full, SPEC)


def test_codes_keep_distances(astronaut):
    full = extract_local_features(astronaut, "rootsift", max_keypoints=300)
    p = load_projection(SPEC.projection)
    x = full.descriptors.astype(np.float64) / 512
    c = p.codes(full.descriptors).astype(np.float64)
    i, j = np.triu_indices(len(x), 1)
    d_full = np.linalg.norm(x[i] - x[j], axis=1)
    d_code = np.linalg.norm(c[i] - c[j], axis=1) / p.scale
    assert np.corrcoef(d_full, d_code)[0, 1] > 0.95  # 48 dims keep the neighbourhoods matching needs


def test_mirror_of_stored_codes_matches_the_exact_mirror(astronaut):
    full = extract_local_features(astronaut, "rootsift", max_keypoints=300)
    exact = project(mirror_features(full), SPEC)
    approx = mirrored(compact(full, LocalSpec(stored_keypoints=None)), SPEC)
    gap = np.abs(exact.descriptors.astype(int) - approx.descriptors.astype(int)).mean()
    spread = np.abs(exact.descriptors.astype(int) - 128).mean()
    assert gap < 0.5 * spread


@pytest.mark.parametrize("edit", ["crop", "flip", "unrelated"])
def test_full_query_verifies_against_compact_reference(astronaut, edit):
    ref = compact(extract_local_features(astronaut, "rootsift"), SPEC)
    image = {"crop": astronaut[60:400, 100:450], "flip": astronaut[:, ::-1], "unrelated": data.coffee()}[edit]
    query = extract_local_features(np.ascontiguousarray(image), "rootsift")
    v = verify_stored(query, ref, SPEC)
    if edit == "unrelated":
        assert v.inliers < 8
    else:
        assert v.inliers >= 50 and v.mirrored == (edit == "flip")
        # and both stored: what dedup does
        assert verify_stored(compact(query, SPEC), ref, SPEC).inliers >= 30


def test_unknown_projection_and_wrong_method():
    with pytest.raises(UserError, match="known: rootsift_pca48"):
        load_projection("nope")
    with pytest.raises(ValueError, match="RootSIFT"):
        LocalSpec("orb")
    assert LocalSpec.for_method("orb").projection is None
