"""Where the engine's batch work runs: in this process (no Ray), or on Ray actors. Both take and give the
same batches (pipeline.stages.prepare_batch + EmbedActor for embedding, pipeline.verify_stage.VerifyActor
for verification), so a result never depends on where it was computed.

    embed(rows, spec, prepare) -> iterator of view-row batches with "embedding" (B, D) float32
    verify(rows, catalog_path, local, geometry) -> iterator of {"query", "reference", "evidence"} batches
"""

from __future__ import annotations

import os
import threading
from typing import Iterator

import numpy as np
import ray

from copyscope.pipeline.embedding import EmbedSettings, embed_rows
from copyscope.pipeline.model_spec import ModelSpec
from copyscope.pipeline.ray_runtime import ACTOR_OPTIONS
from copyscope.pipeline.stages import EmbedActor, PrepareOptions, prepare_batch
from copyscope.pipeline.verify_stage import VerifyActor


def _columns(rows: list[dict]) -> dict[str, np.ndarray]:
    out = {}
    for key in rows[0]:
        values = [r[key] for r in rows]
        if isinstance(values[0], np.ndarray):
            col = np.empty(len(values), object)
            col[:] = values
        else:
            col = np.asarray(values)
        out[key] = col
    return out


class LocalRunner:
    """In process: the model is built once and kept; verification reads the catalog directly. Threads may
    share one runner (a service's requests): models and verifiers are built once under a lock."""

    def __init__(self, settings: EmbedSettings = EmbedSettings()):
        self.settings = settings
        self._models: dict[str, EmbedActor] = {}
        self._verifiers: dict[tuple, VerifyActor] = {}
        self._building = threading.Lock()

    def embed(self, rows: list[dict], spec: ModelSpec, prepare: PrepareOptions) -> Iterator[dict]:
        key = repr(spec.to_dict())
        with self._building:
            if key not in self._models:
                threads = self.settings.threads_per_actor or os.cpu_count() or 1
                self._models[key] = EmbedActor(spec.to_dict(), self.settings.device, threads)
        model, options = self._models[key], prepare.to_dict()
        for start in range(0, len(rows), self.settings.batch_size):
            yield model(prepare_batch(_columns(rows[start:start + self.settings.batch_size]), options))

    def verify(self, rows: list[dict], catalog_path: str, local: dict, geometry: str) -> Iterator[dict]:
        key = (str(catalog_path), repr(sorted(local.items())), geometry)
        with self._building:
            if key not in self._verifiers:
                self._verifiers[key] = VerifyActor(catalog_path, local, geometry)
        if rows:
            yield self._verifiers[key](_columns(rows))


class RayRunner:
    """On Ray actors (needs a running Ray: pipeline.ray_runtime.ray_session); batches arrive in any order."""

    def __init__(self, settings: EmbedSettings = EmbedSettings()):
        self.settings = settings

    def embed(self, rows: list[dict], spec: ModelSpec, prepare: PrepareOptions) -> Iterator[dict]:
        yield from embed_rows(rows, spec, prepare, self.settings)

    def verify(self, rows: list[dict], catalog_path: str, local: dict, geometry: str) -> Iterator[dict]:
        if not rows:
            return
        workers = max(1, min(len(rows), int(ray.cluster_resources().get("CPU", 1))))
        ds = ray.data.from_items(rows, override_num_blocks=min(len(rows), 4 * workers))
        ds = ds.map_batches(VerifyActor, batch_size=4, batch_format="numpy", num_cpus=1,
                            fn_constructor_kwargs={"catalog_path": str(catalog_path), "local": local,
                                                   "geometry": geometry},
                            compute=ray.data.ActorPoolStrategy(size=workers), **ACTOR_OPTIONS)
        yield from ds.iter_batches(batch_size=None, batch_format="numpy")
