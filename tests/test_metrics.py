import numpy as np
import pytest

from copyscope.matching.metrics import NOT_PREDICTED, compute_metrics, query_ranks, share_by_group


def metrics_of(preds, gt):
    """preds: [(q, r, score)], gt: [(q, r)] with r == "" for a query without a copy."""
    q, r, s = zip(*preds) if preds else ((), (), ())
    gq, gr = zip(*gt)
    return compute_metrics(list(q), list(r), list(s), list(gq), list(gr))


def brute_force(preds, gt):
    """The DISC2021 definition written out with loops: the oracle for the vectorised code."""
    truth = {(q, r) for q, r in gt if r}
    ranked = sorted(((s, (q, r) in truth) for q, r, s in preds), key=lambda x: (-x[0], x[1]))
    hits, ap, points = 0, 0.0, []
    for n, (score, is_true) in enumerate(ranked, 1):
        hits += is_true
        ap += is_true * hits / n / len(truth)
        points.append((hits / n, hits / len(truth), score))
    valid = [p for p in points if p[0] >= 0.9]
    best = max((p[1] for p in valid), default=None)
    threshold = next((p[2] for p in valid if p[1] == best), None)
    ranks = []
    for q, r in truth:
        own = [s for qq, rr, s in preds if (qq, rr) == (q, r)]
        ranks.append(sum(s >= own[0] for qq, _, s in preds if qq == q) - 1 if own else 1 << 40)
    return {"uAP": ap, "recall_at_p90": best or 0.0, "threshold_at_p90": threshold,
            "recall_at_1": np.mean(np.array(ranks) < 1), "recall_at_10": np.mean(np.array(ranks) < 10)}


@pytest.mark.parametrize("seed", range(5))
def test_matches_brute_force_on_random_predictions_with_ties(seed):
    rng = np.random.default_rng(seed)
    gt = [(f"q{i}", f"r{rng.integers(30)}" if i < 25 else "") for i in range(40)]
    pairs = {(f"q{rng.integers(45)}", f"r{rng.integers(30)}") for _ in range(300)}
    pairs |= {p for p in gt[:20] if rng.random() < 0.7}
    # scores on a coarse grid: many ties, within and across queries; true pairs score higher on average
    preds = [(q, r, round(float(rng.random()) * 0.6 + 0.4 * ((q, r) in gt), 1)) for q, r in sorted(pairs)]
    got, want = metrics_of(preds, gt).as_dict(), brute_force(preds, gt)
    for key, value in want.items():
        assert got[key] == (pytest.approx(value, abs=1e-12) if value is not None else None), key


def test_tie_between_true_and_false_counts_the_false_one_first():
    m = metrics_of([("q1", "r1", 0.5), ("q2", "r9", 0.5)], [("q1", "r1")])
    assert m.uap == pytest.approx(0.5)  # 1.0 if the true one came first
    np.testing.assert_allclose(m.curve.precisions, [0.0, 0.5])
    assert (m.recall_at_p90, m.threshold_at_p90) == (0.0, None)


def test_tie_within_a_query_ranks_the_true_reference_last():
    m = metrics_of([("q1", "r1", 0.5), ("q1", "r2", 0.5)], [("q1", "r1")])
    assert (m.recall_at_1, m.recall_at_10) == (0.0, 1.0)
    assert m.gt_ranks.tolist() == [1]


def test_hand_computed_example():
    gt = [("q1", "r1"), ("q2", "r2"), ("q3", "r3"), ("q4", "r4"), ("q5", "")]
    preds = [("q3", "r8", 0.6), ("q1", "r1", 0.95), ("q4", "r9", 0.5), ("q5", "r7", 0.8),
             ("q2", "r2", 0.9), ("q4", "r4", 0.4), ("q3", "r3", 0.7)]
    m = metrics_of(preds, gt)
    # ranked: T T F T F F T -> precisions at the hits 1, 1, 3/4, 4/7; recall steps 1/4
    assert m.uap == pytest.approx((1 + 1 + 3 / 4 + 4 / 7) / 4)
    np.testing.assert_allclose(m.curve.recalls, [0.25, 0.5, 0.5, 0.75, 0.75, 0.75, 1.0])
    np.testing.assert_allclose(m.curve.thresholds, [0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    assert (m.recall_at_p90, m.threshold_at_p90) == (0.5, 0.9)
    assert (m.recall_at_1, m.recall_at_10) == (0.75, 1.0)  # q4's copy is second, behind r9
    assert m.is_true.tolist() == [False, True, False, False, True, True, True]
    assert m.ranks.tolist() == [1, 0, 0, 0, 0, 1, 0]


def test_precision_of_exactly_090_counts():
    gt = [(f"q{i}", f"r{i}") for i in range(9)]
    preds = [("q0", "bad", 1.0)] + [(f"q{i}", f"r{i}", 0.9 - i / 100) for i in range(9)]
    m = metrics_of(preds, gt)
    assert m.curve.precisions[-1] == 0.9
    assert (m.recall_at_p90, m.threshold_at_p90) == (1.0, pytest.approx(0.82))


def test_queries_without_predictions_are_misses():
    m = metrics_of([("q1", "r1", 0.9)], [("q1", "r1"), ("q2", "r2")])
    assert m.uap == pytest.approx(0.5)
    assert (m.recall_at_p90, m.threshold_at_p90) == (0.5, 0.9)
    assert (m.recall_at_1, m.recall_at_10) == (0.5, 0.5)
    assert m.gt_ranks.tolist() == [0, NOT_PREDICTED]
    assert m.gt_predictions.tolist() == [0, -1]


def test_no_predictions_gives_zeros_and_empty_curve():
    m = metrics_of([], [("q1", "r1"), ("q2", "")])
    assert m.as_dict() == {"uAP": 0.0, "recall_at_p90": 0.0, "threshold_at_p90": None, "recall_at_1": 0.0,
                           "recall_at_10": 0.0, "num_predictions": 0, "num_positives": 1}
    assert m.curve.precisions.shape == m.curve.thresholds.shape == (0,)
    assert m.curve.recalls.dtype == np.float64 and m.is_true.dtype == bool


def test_perfect_predictions_score_one():
    gt = [(f"q{i}", f"r{i}") for i in range(5)] + [("q9", "")]
    preds = [(f"q{i}", f"r{i}", 0.5 + i / 10) for i in range(5)] + [(f"q{i}", "rx", 0.1) for i in range(5)]
    m = metrics_of(preds, gt)
    assert (m.uap, m.recall_at_p90, m.recall_at_1, m.recall_at_10) == (1.0, 1.0, 1.0, 1.0)
    assert m.threshold_at_p90 == 0.5


def test_predictions_for_queries_outside_the_ground_truth_are_false_positives():
    m = metrics_of([("unknown", "r1", 0.9), ("q1", "r1", 0.8)], [("q1", "r1")])
    assert m.uap == pytest.approx(0.5)
    assert m.is_true.tolist() == [False, True]


def test_duplicate_prediction_is_an_error():
    with pytest.raises(ValueError, match=r"\('q1', 'r1'\) is predicted more than once"):
        metrics_of([("q1", "r1", 0.9), ("q1", "r2", 0.5), ("q1", "r1", 0.1)], [("q1", "r1")])


def test_duplicate_ground_truth_pair_is_an_error():
    with pytest.raises(ValueError, match="in the ground truth more than once"):
        metrics_of([], [("q1", "r1"), ("q1", "r1")])


def test_ground_truth_without_copies_is_an_error():
    with pytest.raises(ValueError, match="no \\(query, reference\\) pair"):
        metrics_of([("q1", "r1", 0.5)], [("q1", ""), ("q2", "")])


def test_non_finite_score_is_an_error():
    with pytest.raises(ValueError, match="not a finite number"):
        metrics_of([("q1", "r1", float("nan"))], [("q1", "r1")])


def test_pairs_are_not_confused_across_queries():
    # (q1, r2) and (q2, r1) are false although every id occurs in a true pair
    m = metrics_of([("q1", "r2", 0.9), ("q2", "r1", 0.8)], [("q1", "r1"), ("q2", "r2")])
    assert m.is_true.tolist() == [False, False] and m.uap == 0.0


def test_query_ranks_count_ties_worst_first():
    ranks = query_ranks(np.array([0, 0, 0, 1, 1, 2]), np.array([0.5, 0.9, 0.5, 0.1, 0.1, 0.3]))
    assert ranks.tolist() == [2, 0, 2, 1, 1, 0]
    assert query_ranks(np.empty(0, np.int64), np.empty(0)).shape == (0,)


def test_share_by_group():
    gt_ranks = np.array([0, 3, NOT_PREDICTED, 0, 1])
    groups = ["crop", "blur", "crop", "crop", "blur"]
    assert share_by_group(gt_ranks < 1, groups) == {"blur": (0.0, 2), "crop": (2 / 3, 3)}
    assert share_by_group(gt_ranks < 10, groups) == {"blur": (1.0, 2), "crop": (2 / 3, 3)}
