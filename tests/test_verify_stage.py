"""Oracle: the Ray verify stage gives, pair for pair, the evidence of `verify_stored` called directly on the
same features (the reference features as the workers read them back from the catalog)."""

import contextlib
import json

import numpy as np
from skimage import data

from copyscope.matching.compact_features import compact
from copyscope.matching.local_features import LocalSpec, extract_local_features
from copyscope.pipeline.catalog import Catalog, Reference
from copyscope.pipeline.runners import RayRunner
from copyscope.pipeline.verify_stage import evidence_of, query_rows, verify_stored

METHOD = "rootsift"
SPEC = LocalSpec()  # compact stored references, full queries projected at verification


def ray_verify(pairs: dict[str, list[int]], local: dict, catalog_path) -> dict[tuple[str, int], dict]:
    """The Ray entry point under test -> {(query, reference id): evidence}. The one place to adapt."""
    found = {}
    with contextlib.closing(RayRunner()) as runner:
        for batch in runner.verify(query_rows(pairs, local), str(catalog_path), SPEC.to_dict(), "homography"):
            for q, r, e in zip(batch["query"], batch["reference"], batch["evidence"]):
                found[(str(q), int(r))] = json.loads(str(e))
    return found


def test_ray_verify_stage_equals_verify_stored(tmp_path, ray_local):
    references = {"chelsea": data.chelsea(), "astronaut": data.astronaut(), "coffee": data.coffee()}
    catalog = Catalog(tmp_path / "catalog.sqlite", method=METHOD)
    ids = dict(zip(references, catalog.put([
        Reference(name, "0:0", np.zeros(4, np.float32), compact(extract_local_features(image, METHOD), SPEC))
        for name, image in references.items()]).ids))
    stored = {i: catalog.features(i) for i in ids.values()}
    catalog.close()
    queries = {"crop": np.ascontiguousarray(data.astronaut()[60:400, 100:450]),
               "flip": np.ascontiguousarray(data.chelsea()[:, ::-1]), "other": data.rocket()}
    local = {q: extract_local_features(image, METHOD) for q, image in queries.items()}

    got = ray_verify({q: list(ids.values()) for q in queries}, local, tmp_path / "catalog.sqlite")

    assert sorted(got) == sorted((q, i) for q in queries for i in ids.values())
    for (q, r), evidence in got.items():
        assert evidence == evidence_of(verify_stored(local[q], stored[r], SPEC), local[q].image_size, stored[r].image_size), (q, r)
    # the oracle is not vacuous: true copies verify (the flip through the mirror pass), the rest do not
    assert got["crop", ids["astronaut"]]["inliers"] >= 20
    assert got["flip", ids["chelsea"]]["inliers"] >= 20 and got["flip", ids["chelsea"]]["mirrored"]
    assert max(got["other", i]["inliers"] for i in ids.values()) < 20
