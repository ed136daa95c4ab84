import numpy as np
import pytest

from copyscope.matching.shared_frames import INLIERS, MIN_CONTENT_INLIERS, discount, discount_frames, frame_points


def point(row: int) -> list[float]:
    """Where keypoint `row` lies in a 100 x 100 image: rows < 100 in a header band, the others on a grid below."""
    if row < 100:
        return [row * 3.0, 5.0]
    return [10.0 + (row - 100) % 8 * 10, 40.0 + (row - 100) // 8 * 10]


def evidence(query_rows, reference_rows=None, size=(100, 100), matches=50):
    """Evidence of a pair whose inliers are these keypoint rows (the same rows, at the same points, in both
    images unless reference rows are given)."""
    q = list(query_rows)
    r = list(reference_rows if reference_rows is not None else query_rows)
    xy = [point(row) for row in q]
    return {"inliers": len(q), "matches": matches, "inlier_ratio": len(q) / matches, "query_coverage": 0.5,
            "reference_coverage": 0.5, INLIERS: {"query": q, "reference": r, "query_xy": xy, "reference_xy": xy,
                                                  "query_size": list(size), "reference_size": list(size)}}


FRAME, PHOTO = range(0, 30), range(100, 140)


def test_keypoints_shared_with_many_images_are_a_frame():
    # a query in an app frame: its frame keypoints map to five templated references, its photo to one
    owners = [("q", f"t{i}") for i in range(5)] + [("q", "copy")]
    evidences = [evidence(FRAME) for _ in range(5)] + [evidence(list(FRAME) + list(PHOTO))]
    frames = frame_points(owners, evidences, min_images=4, sides=("query",))
    np.testing.assert_array_equal(frames["q"], [point(row) for row in FRAME])
    out = discount_frames(owners, evidences, sides=("query",), min_images=4)
    assert [e["inliers"] for e in out[:5]] == [0] * 5
    assert out[5]["inliers"] == 40 and out[5]["frame_inliers"] == 30
    assert out[5]["inlier_ratio"] == pytest.approx(40 / 50)
    assert 0 < out[5]["query_coverage"] < 1 and out[0]["query_coverage"] == 0
    assert out[0]["query_box"] == [0.0, 0.0, 0.0, 0.0]


def test_copies_of_one_photo_are_not_a_frame():
    # three partners (a copy group) stay under the burst count, five do not
    owners = [("q", f"c{i}") for i in range(3)]
    evidences = [evidence(PHOTO) for _ in range(3)]
    assert [e["inliers"] for e in discount_frames(owners, evidences, sides=("query",), min_images=4)] == [40] * 3
    owners += [("q", "c3"), ("q", "c4")]
    evidences += [evidence(PHOTO), evidence(PHOTO)]
    assert discount_frames(owners, evidences, sides=("query",), min_images=4)[0]["inliers"] == 0


def test_ignored_keypoints_and_too_few_left():
    e = evidence(list(FRAME) + [100, 101, 102])
    ignored = {"q": np.asarray([point(row) for row in range(0, 30, 2)], np.float32)}  # near every frame point
    out = discount_frames([("q", "r")], [e], sides=("query",), ignored=ignored)[0]
    assert out["inliers"] == 0 and len(PHOTO) > MIN_CONTENT_INLIERS  # 3 left are fewer than a map needs
    assert out["frame_inliers"] == 30  # the 3 left are too few for a map, but not a frame
    untouched = discount(e)
    assert untouched["inliers"] == 33 and untouched["frame_inliers"] == 0


def test_one_collection_counts_an_image_on_either_side():
    # dedup: image x is the query of some pairs and the reference of others; its frame rows add up
    owners = [("x", "a"), ("x", "b"), ("c", "x"), ("d", "x")]
    evidences = [evidence(FRAME), evidence(FRAME), evidence(FRAME, FRAME), evidence(FRAME, FRAME)]
    out = discount_frames(owners, evidences, min_images=4)
    assert all(e["inliers"] == 0 for e in out)
    assert discount_frames(owners[:3], evidences[:3], min_images=4)[0]["inliers"] == 30


def test_duplicate_groups_join_versions_of_one_photo_only():
    from copyscope.matching.shared_frames import duplicate_groups

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 16))
    versions = [a, a + 0.1 * rng.normal(size=16), a + 0.1 * rng.normal(size=16), b]
    vectors = np.stack([v / np.linalg.norm(v) for v in versions]).astype(np.float32)
    assert duplicate_groups([7, 3, 9, 5], vectors) == {7: 3, 3: 3, 9: 3, 5: 5}
    assert duplicate_groups([4], vectors[:1]) == {4: 4}
    assert duplicate_groups([7, 3, 9, 5], vectors, max_size=2) == {7: 7, 3: 3, 9: 9, 5: 5}


def test_many_siblings_on_one_template_are_not_versions():
    """Six photos pasted small onto one background are as close as versions of one photo; so many are a
    template, each its own partner, and the keypoints a query shares with all of them make a frame."""
    from copyscope.matching.shared_frames import MAX_VERSIONS, duplicate_groups

    rng = np.random.default_rng(1)
    background = rng.normal(size=16)
    siblings = np.stack([background + 0.1 * rng.normal(size=16) for _ in range(MAX_VERSIONS + 2)])
    siblings /= np.linalg.norm(siblings, axis=1, keepdims=True)
    ids = list(range(len(siblings)))
    assert duplicate_groups(ids, siblings) == {i: i for i in ids}
    owners = [("q", i) for i in ids]
    groups = duplicate_groups(ids, siblings)
    out = discount_frames(owners, [evidence(FRAME) for _ in ids], sides=("query",),
                          partner_of={(q, r): groups[r] for q, r in owners})
    assert all(e["inliers"] == 0 for e in out)
    assert duplicate_groups(ids[:MAX_VERSIONS], siblings[:MAX_VERSIONS]) == {i: 0 for i in ids[:MAX_VERSIONS]}
