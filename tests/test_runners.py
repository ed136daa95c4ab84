"""RayRunner: one pool of actors per runner, started on first use, serving every embed and verify call, and
killed by close() (which choose_runner calls when its block exits, also on error)."""

import contextlib
import time

import numpy as np
import pytest
import ray
from PIL import Image
from skimage import data

from copyscope.matching.compact_features import compact
from copyscope.matching.local_features import LocalSpec, extract_local_features
from copyscope.pipeline.catalog import Catalog, Reference
from copyscope.pipeline.embedding import EmbedSettings
from copyscope.pipeline.model_spec import ModelSpec
from copyscope.pipeline.ray_runtime import choose_runner
from copyscope.pipeline.runners import LocalRunner, RayRunner
from copyscope.pipeline.stages import PrepareOptions
from copyscope.pipeline.verify_stage import verify_through

MODEL = ModelSpec("timm:resnet18", options=dict(proj_dim=32, image_size=64))
LOCAL = LocalSpec()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """(image rows, their PrepareOptions, catalog path, a query's features, reference ids): work of each kind."""
    root = tmp_path_factory.mktemp("runners")
    rows = []
    for name, image in {"chelsea": data.chelsea(), "coffee": data.coffee(), "rocket": data.rocket()}.items():
        Image.fromarray(image).save(root / f"{name}.png")
        rows.append({"id": name, "path": str(root / f"{name}.png")})
    catalog = Catalog(root / "catalog.sqlite", method=LOCAL.method)
    ids = catalog.put([Reference("chelsea", "0:0", np.zeros(4, np.float32),
                                 compact(extract_local_features(data.chelsea(), LOCAL.method), LOCAL))]).ids
    catalog.close()
    query = extract_local_features(np.ascontiguousarray(data.chelsea()[40:280, 60:400]), LOCAL.method)
    return rows, PrepareOptions(MODEL.build().cfg.to_dict()), root / "catalog.sqlite", query, [int(i) for i in ids]


def run_all(runner, work) -> None:
    """Two embed passes (whole images, then regions only, as a cascade does) and one verify pass."""
    rows, whole, catalog_path, query, ids = work
    for prepare in (whole, PrepareOptions(whole.preprocess, regions=2, whole=False)):
        batches = list(runner.embed(rows, MODEL, prepare))
        assert sorted({str(i) for b in batches for i in b["id"]}) == sorted(r["id"] for r in rows)
    found = verify_through(runner, {"q": ids}, {"q": query}, catalog_path, LOCAL.to_dict())
    assert found["q", ids[0]]["inliers"] >= 20


def held(worker) -> tuple[int, int]:
    """(models, verifiers) that a StageWorker actor has built."""
    return ray.get(worker.__ray_call__.remote(lambda w: (len(w.runner._models), len(w.runner._verifiers))))


def assert_dead(workers) -> None:
    """Every actor is gone within 60 s (ray.kill is asynchronous: a call can land before the kill does)."""
    deadline = time.monotonic() + 60
    for worker in workers:
        while True:
            try:
                ray.get(worker.__ray_ready__.remote(), timeout=60)
            except ray.exceptions.RayActorError:
                break
            assert time.monotonic() < deadline, "an actor is still alive 60 s after close"
            time.sleep(0.1)


def test_one_pool_serves_every_call_until_close(ray_local, work):
    runner = RayRunner(EmbedSettings(threads_per_actor=1, batch_size=1))
    assert runner.workers == []  # nothing starts before the first call
    with contextlib.closing(runner):
        run_all(runner, work)
        workers = list(runner.workers)
        assert len(workers) == 2  # one per CPU of the test cluster, for embedding and verifying alike
        run_all(runner, work)
        assert runner.workers == workers
        # each actor built the model once over four embed passes, and at most one verifier over two verify passes
        assert [held(w) for w in workers] in ([(1, 1), (1, 1)], [(1, 1), (1, 0)], [(1, 0), (1, 1)])
    assert runner.workers == []
    assert_dead(workers)


def test_verify_only_actors_fill_the_cpus_and_choose_runner_kills_all_on_error(ray_local, work):
    settings = EmbedSettings(num_actors=1, threads_per_actor=1, batch_size=1)
    with pytest.raises(RuntimeError, match="stop"), choose_runner(0, settings, use_ray=True) as runner:
        list(runner.embed(work[0], MODEL, work[1]))
        embedder = list(runner.workers)
        run_all(runner, work)
        workers = list(runner.workers)
        assert len(embedder) == 1 and len(workers) == 2 and workers[0] is embedder[0]
        assert held(workers[1])[0] == 0  # the CPU-only actor only verifies
        raise RuntimeError("stop")
    assert_dead(workers)


def test_region_views_reach_the_region_model_on_the_pool(ray_local, work):
    rows, whole, *_ = work
    region_model = ModelSpec("timm:resnet18", options=dict(proj_dim=32, image_size=64, seed=1))
    prepare = PrepareOptions(whole.preprocess, regions=2)

    def embedded(runner, region_spec):
        return {(str(i), int(v)): e for b in runner.embed(rows, MODEL, prepare, region_spec)
                for i, v, e in zip(b["id"], b["view"], b["embedding"])}

    local_plain, local = embedded(LocalRunner(), None), embedded(LocalRunner(), region_model)
    with contextlib.closing(RayRunner(EmbedSettings(threads_per_actor=1, batch_size=2))) as runner:
        pooled = embedded(runner, region_model)
    assert pooled.keys() == local.keys() == local_plain.keys()
    for key in local:
        np.testing.assert_allclose(pooled[key], local[key], atol=1e-5)
        same = np.allclose(local[key], local_plain[key], atol=1e-5)
        assert same == (key[1] == 0)  # whole images by the model, region views by the region model
