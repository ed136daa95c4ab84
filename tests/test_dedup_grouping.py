import numpy as np
import pytest

from copyscope.matching.index import SearchIndex
from copyscope.matching.grouping import FileInfo, exact_clusters, keeper_ranks, star_groups
from copyscope.matching.pairs import knn_pairs
from copyscope.matching.reranking import RerankOptions


def components(n, a, b):
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x

    for x, y in zip(a, b):
        parent[find(x)] = find(y)
    return {find(v) for v in range(n)}


def test_chain_does_not_merge_its_unrelated_ends():
    # A~B and B~C; A and C unrelated. Connected components would merge all three.
    a, b = [0, 1], [1, 2]
    assert len(components(3, a, b)) == 1
    groups = [g.nodes for g in star_groups(np.array([0, 1, 2]), a, b)]  # A is the best keeper
    assert groups == [[0, 1]]
    assert not any({0, 2} <= set(g) for g in groups)


def test_a_file_no_keeper_took_joins_through_a_strong_link_to_a_member():
    # keeper K (a screenshot of photo P, the largest file), P, and a crop C of P that links to P only
    a, b = [0, 1], [1, 2]
    ranks = np.array([0, 1, 2])
    weak = star_groups(ranks, a, b, np.array([0.95, 0.6]), join_at=0.9)
    assert [g.nodes for g in weak] == [[0, 1]]
    (star,) = star_groups(ranks, a, b, np.array([0.95, 0.97]), join_at=0.9)
    assert star.nodes == [0, 1, 2]
    assert star.parent == {1: 0, 2: 1}
    # an edge without strength (dedup: one to a reference, never acted on) carries no join
    assert [g.nodes for g in star_groups(ranks, a, b, np.array([0.95, -np.inf]), join_at=0.9)] == [[0, 1]]
    with pytest.raises(ValueError, match="strength"):
        star_groups(ranks, a, b, join_at=0.9)


def test_long_chain_is_cut_into_direct_links():
    n = 6
    a, b = list(range(n - 1)), list(range(1, n))
    groups = [g.nodes for g in star_groups(np.arange(n), a, b)]
    edges = set(zip(a, b)) | set(zip(b, a))
    assert groups == [[0, 1], [2, 3], [4, 5]]
    for g in groups:
        assert all((m, g[0]) in edges for m in g[1:])


def test_star_groups_properties_on_random_graphs():
    rng = np.random.default_rng(0)
    for trial in range(40):
        n = 40
        a, b = rng.integers(0, n, 60), rng.integers(0, n, 60)
        keep = a != b
        a, b = a[keep], b[keep]
        strength = rng.random(len(a))
        join_at = 0.7 if trial % 2 else None
        ranks = rng.permutation(n)
        edges = set(zip(a.tolist(), b.tolist())) | set(zip(b.tolist(), a.tolist()))
        weight = {}  # the strongest of an edge's copies
        for x, y, w in zip(a.tolist(), b.tolist(), strength):
            for e in ((x, y), (y, x)):
                weight[e] = max(w, weight.get(e, 0.0))
        stars = star_groups(ranks, a, b, strength, join_at)
        seen = [v for g in stars for v in g.nodes]
        assert len(seen) == len(set(seen))  # each node in at most one group
        linked = {v for e in edges for v in e}
        for g in stars:
            centre, members = g.nodes[0], g.nodes[1:]
            assert ranks[centre] == min(ranks[v] for v in g.nodes)  # the keeper ranks first
            assert set(g.parent) == set(members)
            for m in members:
                host = g.parent[m]
                assert (m, host) in edges  # every member links to its parent directly
                if host != centre:  # ... which is the keeper, or a member linked to it by a strong edge
                    assert join_at is not None and g.parent[host] == centre and weight[(m, host)] >= join_at
        # every linked node is grouped, or is a centre whose neighbours all went to better centres
        for v in linked - set(seen):
            assert all(any(u in g.nodes for g in stars) for x, u in edges if x == v)
            if join_at is not None:  # ... and whose edges to members are weak
                assert all(weight[(v, u)] < join_at for x, u in edges if x == v)


def test_star_groups_of_no_edges_is_empty():
    assert star_groups(np.arange(3), np.empty(0, np.int64), np.empty(0, np.int64)) == []


def test_keeper_rules_and_references_first():
    files = [FileInfo("b.jpg", 100, 30, pixels=400), FileInfo("a.jpg", 200, 10, pixels=400),
             FileInfo("c.jpg", 50, 20, pixels=900), FileInfo("index:r", 0, 0, reference=True)]
    best = lambda rule: int(np.argmin(keeper_ranks(files, rule)))  # noqa: E731
    assert best("largest") == 3
    files = files[:3]
    assert keeper_ranks(files, "largest").tolist() == [2, 1, 0]  # pixels, then bytes
    assert best("oldest") == 1 and best("newest") == 0 and best("path") == 1
    with pytest.raises(ValueError, match="known: largest"):
        keeper_ranks(files, "smallest")


def test_exact_clusters_skip_failures():
    assert exact_clusters(["x", "y", "x", "", "", "y", "z"]) == [[0, 2], [1, 5]]


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_knn_self_join_equals_brute_force():
    rng = np.random.default_rng(1)
    x = unit(rng.normal(size=(200, 8)))
    index = SearchIndex.build(x, [str(i) for i in range(200)])
    k, floor = 4, 0.5
    got, level = knn_pairs(x, index, k, floor, self_join=True, batch_size=64,
                           rerank=RerankOptions(background_skip=1, background_k=5))
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    expected = {}
    for i in range(200):
        for j in np.argsort(-sims[i])[:k]:
            if sims[i, j] >= floor:
                expected[(min(i, j), max(i, j))] = sims[i, j]
    assert {(int(a), int(b)) for a, b in zip(got.a, got.b)} == set(expected)
    assert len(got) == len(expected)  # each unordered pair once
    for a, b, s in zip(got.a, got.b, got.global_score):
        assert s == pytest.approx(expected[(a, b)], abs=1e-5)
    # background level: mean of the neighbours ranked 1..5, the image itself left out (searched wider than k)
    assert level == pytest.approx(np.sort(sims, axis=1)[:, ::-1][:, 1:6].mean(axis=1), abs=1e-5)


def test_knn_cross_join_keeps_direction():
    rng = np.random.default_rng(2)
    refs, queries = unit(rng.normal(size=(30, 8))), unit(rng.normal(size=(5, 8)))
    got, _ = knn_pairs(queries, SearchIndex.build(refs, [str(i) for i in range(30)]), 3, -1.0, self_join=False)
    assert len(got) == 15
    assert set(got.a.tolist()) == set(range(5))
    top = np.argsort(-(queries @ refs.T), axis=1)[:, :3]
    assert {(int(a), int(b)) for a, b in zip(got.a, got.b)} == {(q, int(r)) for q in range(5) for r in top[q]}


def test_content_crops_span_each_sides_inliers_widened_by_the_margin():
    from copyscope.matching.pairs import content_crops
    from copyscope.matching.shared_frames import INLIERS

    mapped = {"inliers": 20, "query_box": [10.0, 20.0, 50.0, 60.0], "reference_box": [0.0, 0.0, 200.0, 100.0],
              INLIERS: {"query_size": [100, 200], "reference_size": [100, 200]}}
    pair, side, boxes = content_crops([{"inliers": 0}, mapped, mapped], np.array([0, 1]), margin=0.1)
    assert pair.tolist() == [1, 1] and side.tolist() == [0, 1]  # no map, no crop; pair 2 not looked at
    np.testing.assert_allclose(boxes, [[6 / 200, 16 / 100, 54 / 200, 64 / 100], [0, 0, 1, 1]], rtol=1e-6)
