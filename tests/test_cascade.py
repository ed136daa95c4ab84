"""The match cascade (RerankOptions.settle): whole images first, regions only for undecided queries.

Oracle: a query the first pass does not decide gets exactly the one-pass result; with a settle level no
score reaches, the cascade equals the one-pass match row for row.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage import data

from copyscope.matching.reranking import RerankOptions
from copyscope.pipeline.engine import CopyIndex
from copyscope.pipeline.runners import LocalRunner
from tests.photo_edits import make_copy_set


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    root = tmp_path_factory.mktemp("cascade")
    make_copy_set(root)
    queries = root / "queries"
    coffee = data.coffee()
    canvas = np.full((600, 800, 3), 40, np.uint8)  # the astronaut pasted small into a plain frame
    canvas[200:392, 300:492] = np.asarray(Image.fromarray(data.astronaut()).resize((192, 192)))
    Image.fromarray(canvas).save(queries / "pasted_astronaut.jpg", quality=85)
    Image.fromarray(coffee[:40, :40]).save(queries / "tiny_corner.png")  # too small for regions
    engine = CopyIndex.create(root / "idx")
    runner = LocalRunner()
    engine.add_images(sorted((p.stem, str(p)) for p in (root / "refs").iterdir()), runner)
    return engine, sorted((p.stem, str(p)) for p in queries.iterdir()), runner


def rows(result) -> list[tuple]:
    return [(q, r, float(s), e.get("inliers")) for q, r, s, e in
            zip(result.query, result.reference, result.score, result.explain)]


def same(a: list[tuple], b: list[tuple]) -> bool:
    """Row for row the same pairs and inliers, scores equal up to float rounding (FAISS sums a batch of
    queries in another order than a single one)."""
    return len(a) == len(b) and all(x[::3] == y[::3] and x[1] == y[1] and abs(x[2] - y[2]) < 1e-5
                                    for x, y in zip(a, b))


def test_cascade_that_decides_nothing_equals_one_pass(indexed):
    engine, queries, runner = indexed
    one_pass = engine.match(queries, runner, rerank=RerankOptions(settle=None))
    cascade = engine.match(queries, runner, rerank=RerankOptions(settle=1.01))
    assert same(rows(cascade), rows(one_pass))
    assert cascade.queries == one_pass.queries and len(cascade.failures) == len(one_pass.failures)


def test_decided_queries_skip_regions_and_the_others_get_the_one_pass_result(indexed):
    engine, queries, runner = indexed
    one_pass = engine.match(queries, runner, rerank=RerankOptions(settle=None))
    counts: dict[str, int] = {}
    cascade = engine.match(queries, runner, rerank=RerankOptions(settle=0.99),
                           progress=lambda stage, n: counts.__setitem__(stage, counts.get(stage, 0) + n))
    assert counts["embed"] == len(queries)
    assert 0 < counts["regions"] <= len(queries) - 4  # several copies decided on their whole image
    best = {}
    for q, r, s in zip(cascade.query, cascade.reference, cascade.score):
        best.setdefault(q, (r, float(s)))
    ours, theirs = rows(cascade), rows(one_pass)
    for q in cascade.queries:
        if not same([r for r in ours if r[0] == q], [r for r in theirs if r[0] == q]):
            assert best[q][1] >= 0.99, q  # only a decided query may differ from the one-pass result
    assert best["pasted_astronaut"][0] == "astronaut"  # found through its regions in the second pass
    assert cascade.verified_pairs < one_pass.verified_pairs + len(queries)
