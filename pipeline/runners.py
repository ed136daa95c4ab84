"""Where the engine's batch work runs: in this process (no Ray), or on a pool of Ray actors. Both take and
give the same batches (pipeline.stages.prepare_batch + Embedder for embedding,
pipeline.verify_stage.VerifyActor for verification), and each Ray actor is a LocalRunner in its own process,
so a result never depends on where it was computed.

    embed(rows, spec, prepare) -> iterator of view-row batches with "embedding" (B, D) float32
    verify(rows, catalog_path, local, geometry) -> iterator of {"query", "reference", "evidence"} batches

A RayRunner starts its actors on first use and keeps them until `close()`: one pool serves every pass run
through it (a match cascade's two embed and two verify passes, a dedup job's embedding and verification),
so each actor loads a model and opens a catalog once, not once per pass.
"""

from __future__ import annotations

import os
import threading
from typing import Iterator

import numpy as np
import ray
from ray.util import ActorPool

from copyscope.descriptors import Descriptor
from copyscope.pipeline.embedding import EmbedSettings
from copyscope.pipeline.model_spec import ModelSpec
from copyscope.pipeline.ray_runtime import ACTOR_OPTIONS
from copyscope.pipeline.stages import Embedder, PrepareOptions, prepare_batch
from copyscope.pipeline.verify_stage import VerifyActor

VERIFY_ROWS = 4  # query rows per verify task: a query's candidates take a while, so small tasks balance actors


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
    """In process: each model is built once and kept; verification reads the catalog directly. Threads may
    share one runner (a service's requests): models and verifiers are built once under a lock."""

    def __init__(self, settings: EmbedSettings = EmbedSettings()):
        self.settings = settings
        self._models: dict[str, Descriptor] = {}
        self._verifiers: dict[tuple, VerifyActor] = {}
        self._building = threading.Lock()

    def embed(self, rows: list[dict], spec: ModelSpec, prepare: PrepareOptions,
              region_spec: ModelSpec | None = None) -> Iterator[dict]:
        """Prepared and embedded batches of `rows`; region views by `region_spec` (None: by `spec`)."""
        with self._building:
            embed = Embedder(self._model(spec), self._model(region_spec) if region_spec else None)
        options = prepare.to_dict()
        for start in range(0, len(rows), self.settings.batch_size):
            yield embed(prepare_batch(_columns(rows[start:start + self.settings.batch_size]), options))

    def _model(self, spec: ModelSpec) -> Descriptor:
        """The descriptor of `spec`, built on first use (the caller holds the lock)."""
        key = repr(spec.to_dict())
        if key not in self._models:
            threads = self.settings.threads_per_actor or os.cpu_count() or 1
            self._models[key] = spec.build(device=self.settings.device, num_threads=threads)
        return self._models[key]

    def verify(self, rows: list[dict], catalog_path: str, local: dict, geometry: str) -> Iterator[dict]:
        key = (str(catalog_path), repr(sorted(local.items())), geometry)
        with self._building:
            if key not in self._verifiers:
                self._verifiers[key] = VerifyActor(catalog_path, local, geometry)
        if rows:
            yield self._verifiers[key](_columns(rows))


class StageWorker:
    """One actor of a RayRunner's pool: a LocalRunner in the actor's process, kept for the whole command.
    Takes and gives what crosses the object store: specs as dicts, batches as lists."""

    def __init__(self, settings: EmbedSettings):
        self.runner = LocalRunner(settings)

    def embed(self, rows: list[dict], spec: dict, prepare: dict, region_spec: dict | None = None) -> list[dict]:
        region = ModelSpec.from_dict(region_spec) if region_spec else None
        return list(self.runner.embed(rows, ModelSpec.from_dict(spec), PrepareOptions.from_dict(prepare), region))

    def verify(self, rows: list[dict], catalog_path: str, local: dict, geometry: str) -> list[dict]:
        return list(self.runner.verify(rows, catalog_path, local, geometry))


class RayRunner:
    """On a pool of StageWorker actors (needs a running Ray: pipeline.ray_runtime.ray_session), started on first
    use and shared by every embed and verify call until `close()`; batches arrive in any order.

    settings.actors() actors embed, each on one CPU and, when settings.device is cuda, one GPU. Verification
    runs on one actor per CPU of the cluster (as many as embed on a CPU-only cluster; with a GPU or fewer
    model replicas than CPUs, CPU-only actors are added on the first verify call)."""

    def __init__(self, settings: EmbedSettings = EmbedSettings()):
        self.settings = settings
        self.workers: list[ray.actor.ActorHandle] = []  # the embedding actors first, then verify-only ones
        self._embedders = 0

    def _pool(self, size: int = 0) -> ActorPool:
        """An ActorPool over the first max(size, settings.actors()) actors, starting those missing: the
        embedding actors on first use, then CPU-only ones that only verify."""
        s = self.settings
        if not self.workers:
            self._embedders = s.actors()
            inside = EmbedSettings(s.actor_device or s.device, threads_per_actor=s.threads(self._embedders),
                                   batch_size=s.batch_size)
            gpus = 1 if s.device.startswith("cuda") else 0
            self.workers = [_start(inside, gpus) for _ in range(self._embedders)]
        size = max(size, self._embedders)
        self.workers += [_start(EmbedSettings(threads_per_actor=1), 0) for _ in range(size - len(self.workers))]
        return ActorPool(self.workers[:size])

    def embed(self, rows: list[dict], spec: ModelSpec, prepare: PrepareOptions,
              region_spec: ModelSpec | None = None) -> Iterator[dict]:
        size, spec_dict, options = self.settings.batch_size, spec.to_dict(), prepare.to_dict()
        region = region_spec.to_dict() if region_spec else None
        chunks = [rows[i:i + size] for i in range(0, len(rows), size)]
        if chunks:
            pool = self._pool()
            for batches in pool.map_unordered(lambda w, c: w.embed.remote(c, spec_dict, options, region), chunks):
                yield from batches

    def verify(self, rows: list[dict], catalog_path: str, local: dict, geometry: str) -> Iterator[dict]:
        path, chunks = str(catalog_path), [rows[i:i + VERIFY_ROWS] for i in range(0, len(rows), VERIFY_ROWS)]
        if chunks:
            pool = self._pool(int(ray.cluster_resources().get("CPU", 1)))
            for batches in pool.map_unordered(lambda w, c: w.verify.remote(c, path, local, geometry), chunks):
                yield from batches

    def close(self) -> None:
        """Kill the pool's actors (a joined cluster keeps no idle ones); a later call starts a new pool."""
        for worker in self.workers:
            ray.kill(worker)
        self.workers = []


_REMOTE_WORKER = ray.remote(StageWorker)  # one actor class for every pool, exported to the cluster once


def _start(settings: EmbedSettings, gpus: int) -> ray.actor.ActorHandle:
    return _REMOTE_WORKER.options(num_cpus=1, num_gpus=gpus, **ACTOR_OPTIONS).remote(settings)
