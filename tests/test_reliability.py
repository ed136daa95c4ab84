import numpy as np
import pytest

from copyscope.matching.metrics import at_score_thresholds, compute_metrics, is_probability, reliability


def test_hand_computed_bins_and_ece():
    # bin [0.1, 0.2): 0.1 F, 0.15 T -> mean 0.125, precision 0.5; bin [0.3, 0.4): 0.3 T (an edge opens
    # its bin); bin [0.9, 1.0]: 0.9 T, 0.95 F, 1.0 T -> mean 0.95, precision 2/3
    scores = [0.1, 0.15, 0.3, 0.9, 0.95, 1.0]
    correct = [False, True, True, True, False, True]
    table = reliability(scores, correct)
    assert table.lo.tolist() == pytest.approx([i / 10 for i in range(10)])
    assert table.hi[-1] == 1.0
    assert table.counts.tolist() == [0, 2, 0, 1, 0, 0, 0, 0, 0, 3]
    full = table.counts > 0
    assert table.mean_scores[full].tolist() == pytest.approx([0.125, 0.3, 0.95])
    assert table.precisions[full].tolist() == pytest.approx([0.5, 1.0, 2 / 3])
    assert np.isnan(table.mean_scores[~full]).all() and np.isnan(table.precisions[~full]).all()
    expected = (2 * abs(0.5 - 0.125) + 1 * abs(1.0 - 0.3) + 3 * abs(2 / 3 - 0.95)) / 6
    assert table.ece == pytest.approx(expected)
    rows = table.bins()
    assert rows[1] == {"lo": 0.1, "hi": 0.2, "count": 2, "mean_score": pytest.approx(0.125), "precision": 0.5}
    assert rows[0] == {"lo": 0.0, "hi": 0.1, "count": 0, "mean_score": None, "precision": None}


def test_scores_of_exactly_zero_and_one():
    table = reliability([0.0, 0.0, 1.0], [False, False, True])
    assert table.counts[0] == 2 and table.counts[-1] == 1 and table.counts.sum() == 3
    assert table.ece == 0.0


def test_calibrated_sample_has_small_ece_and_miscalibrated_a_large_one():
    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 1, 50_000)
    labels = rng.uniform(0, 1, len(scores)) < scores  # a copy with probability = score
    assert reliability(scores, labels).ece < 0.02
    overconfident = np.sqrt(scores)  # the same outcomes scored higher than their odds
    assert reliability(overconfident, labels).ece > 0.1
    assert reliability(scores, ~labels).ece > 0.4  # scores pointing the wrong way


def test_empty_input_gives_typed_empty_bins():
    table = reliability(np.zeros(0), np.zeros(0, bool))
    assert table.num_predictions == 0 and table.ece == 0.0
    assert table.counts.dtype == np.int64 and len(table.counts) == 10
    assert all(b["count"] == 0 and b["precision"] is None for b in table.bins())


def test_bad_input_is_an_error():
    with pytest.raises(ValueError, match="not a probability"):
        reliability([0.5, 1.2], [True, False])
    with pytest.raises(ValueError, match="not a probability"):
        reliability([np.nan], [True])
    with pytest.raises(ValueError, match="2 scores but 1"):
        reliability([0.5, 0.6], [True])
    assert is_probability([0.0, 1.0]) and not is_probability([-0.1]) and is_probability([])


def test_precision_and_recall_at_score_thresholds():
    # 3 true pairs; Q1-R1 0.995 T, Q2-R9 0.95 F, Q2-R2 0.9 T (>= 0.9 counts), Q3-R9 0.6 F, Q4-R4 0.2 T
    metrics = compute_metrics(["Q1", "Q2", "Q2", "Q3", "Q4"], ["R1", "R9", "R2", "R9", "R4"],
                              [0.995, 0.95, 0.9, 0.6, 0.2], ["Q1", "Q2", "Q4", "Q5"], ["R1", "R2", "R4", "R5"])
    points = {p.threshold: p for p in at_score_thresholds(metrics.curve)}
    assert (points[0.99].count, points[0.99].precision, points[0.99].recall) == (1, 1.0, pytest.approx(1 / 4))
    assert (points[0.9].count, points[0.9].precision, points[0.9].recall) == (3, pytest.approx(2 / 3),
                                                                              pytest.approx(2 / 4))
    assert (points[0.5].count, points[0.5].precision, points[0.5].recall) == (4, 0.5, pytest.approx(2 / 4))
    none = at_score_thresholds(metrics.curve, (0.999,))[0]
    assert (none.count, none.precision, none.recall) == (0, None, 0.0)
