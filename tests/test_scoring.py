import json

import numpy as np
import pytest

from copyscope.matching.scoring import Calibration, fit_logistic, tail_level, normalise, stretch


def test_background_level_normalise_and_stretch():
    sims = np.array([[0.9, 0.8, 0.5, 0.3], [0.2, 0.2, 0.2, -np.inf]], np.float32)
    level = tail_level(sims, skip=2)  # ranks 2.. (the second row found 3: from rank 3 // 2 = 1)
    np.testing.assert_allclose(level, [0.4, 0.2])
    scores = np.array([[0.9, 0.4], [0.6, 0.2]])
    np.testing.assert_allclose(normalise(scores, level, beta=0.5), [[0.7, 0.2], [0.5, 0.1]])
    stretched = stretch(scores, level)
    np.testing.assert_allclose(stretched[:, 1], [0.0, 0.0], atol=1e-7)  # background level -> 0
    np.testing.assert_allclose(stretch(np.ones((2, 1)), level)[:, 0], [1.0, 1.0])  # identical -> 1
    assert tail_level(np.zeros((3, 0)), skip=5).shape == (3,)
    np.testing.assert_allclose(tail_level(np.full((1, 4), -np.inf), skip=1), [0.0])
    np.testing.assert_allclose(tail_level(np.array([[0.95, -np.inf]]), skip=8), [0.0])  # the copy alone: no level


def test_calibration_is_a_probability_and_monotone_in_positive_weights():
    cal = Calibration((2.0, 1.0), -1.0)
    x = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 5.0], [100.0, 100.0]])
    p = cal(x)
    assert np.all((p >= 0) & (p <= 1)) and np.all(np.diff(p) > 0)
    assert p[-1] == pytest.approx(1.0)


def test_fit_logistic_separates_labelled_pairs():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    y = (x[:, 0] - 0.5 * x[:, 2] + 0.1 * rng.normal(size=400) > 0).astype(float)
    w, b = fit_logistic(x, y, l2=1e-2)
    assert w[0] > 0 and w[2] < 0 and abs(w[1]) < 0.3 * w[0]
    accuracy = ((Calibration(tuple(w), b)(x) > 0.5) == (y > 0)).mean()
    assert accuracy > 0.95


def test_a_fitted_calibration_carries_its_reverse_direction():
    from copyscope.matching.reranking import FEATURES, directional_scores, either_way_scores
    from copyscope.matching.scoring import FittedCalibration

    weight = {"query_coverage": 4.0, "reference_coverage": -4.0}
    forward = Calibration(tuple(weight.get(name, 0.0) for name in FEATURES), 0.0)
    reverse = Calibration(tuple([0.0] * len(FEATURES)), 2.0)
    fitted = FittedCalibration(forward, FEATURES, "sscd", {}, "stretch", reverse)
    again = FittedCalibration.from_dict(json.loads(json.dumps(fitted.to_dict())))
    assert again == fitted
    features = {name: np.zeros(2) for name in FEATURES} | {"query_coverage": np.array([1.0, 0.0]),
                                                          "reference_coverage": np.array([0.0, 1.0])}
    score, rev = directional_scores(features, fitted)
    np.testing.assert_allclose(rev, 1 / (1 + np.exp(-2.0)))  # its own calibration
    assert score[0] > 0.9 > 0.1 > score[1]
    _, swapped = directional_scores(features, FittedCalibration(forward, FEATURES, "sscd", {}, "stretch"))
    np.testing.assert_allclose(swapped, score[::-1])  # no reverse record: the roles swapped
    np.testing.assert_allclose(either_way_scores(features, forward), score.max())  # a pair of one collection


def test_a_calibration_may_use_some_of_the_features_a_use_computes_and_no_others():
    from copyscope.descriptors.errors import UserError
    from copyscope.matching.reranking import FEATURES, MATCH_FEATURES, directional_scores
    from copyscope.matching.scoring import CalibrationMismatch, FittedCalibration

    names = ("best_view", "margin")
    fitted = FittedCalibration(Calibration((2.0, 3.0), -1.0), names, "sscd", {}, "stretch")
    fitted.check("sscd", {}, "stretch", MATCH_FEATURES)  # a match computes them all
    with pytest.raises(CalibrationMismatch, match="features"):
        fitted.check("sscd", {}, "stretch", FEATURES)  # dedup has no margin
    features = {name: np.full(1, 0.5) for name in MATCH_FEATURES} | {"margin": np.array([0.25])}
    score, _ = directional_scores(features, fitted)
    np.testing.assert_allclose(score, 1 / (1 + np.exp(-(2.0 * 0.5 + 3.0 * 0.25 - 1.0))))  # in its own order
    record = fitted.to_dict() | {"weights": [1.0]}
    with pytest.raises(UserError, match="one weight per feature"):
        FittedCalibration.from_dict(record)
