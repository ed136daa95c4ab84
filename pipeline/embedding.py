"""The embedding stage on Ray: (id, path) rows -> one actor pool that prepares and embeds -> batches.

Each actor (stages.EmbedActor) runs `prepare_batch` (decode, resize, regions, local features) and the
model on its batch: decoded pixels never cross the object store, and each actor keeps one core busy from
JPEG bytes to descriptor, which on this kind of machine beats one process running the model on every
core (see benchmarks/throughput.py). pipeline.runners.LocalRunner does the same in process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

import ray

from copyscope.pipeline.model_spec import ModelSpec
from copyscope.pipeline.ray_runtime import ACTOR_OPTIONS
from copyscope.pipeline.stages import EmbedActor, PrepareOptions


@dataclass(frozen=True)
class EmbedSettings:
    """How the embed stage runs; the job decides the device.

    num_actors: model replicas; None = one per CPU of the Ray cluster (one per GPU with a GPU).
    threads_per_actor: intra-op threads of each; None = this machine's cores split between actors.
    batch_size: images per model call. actor_device: the device as a Ray GPU actor sees it (Ray narrows
    CUDA_VISIBLE_DEVICES, so "cuda:1" is "cuda:0" there; the job maps it, jobs.device.actor_device);
    None = device.
    """

    device: str = "cpu"
    num_actors: int | None = None
    threads_per_actor: int | None = None
    batch_size: int = 16
    actor_device: str | None = None

    def actors(self) -> int:
        if self.num_actors:
            return self.num_actors
        key = "GPU" if self.device.startswith("cuda") else "CPU"
        return max(1, int(ray.cluster_resources().get(key, 1)))

    def threads(self, actors: int) -> int:
        return self.threads_per_actor or max(1, (os.cpu_count() or 1) // actors)


def embed_rows(rows: list[dict], spec: ModelSpec, prepare: PrepareOptions,
               settings: EmbedSettings) -> Iterator[dict]:
    """rows of {"id", "path", ...} -> batches of view rows (see `stages.prepare_batch`) with
    "embedding" (B, D) float32 and "error" (B,) str.

    Needs a running Ray (see `ray_runtime.ray_session`). Batches arrive in no particular order.
    """
    if not rows:
        return
    actors = settings.actors()
    gpu = settings.device.startswith("cuda")
    n_blocks = min(len(rows), max(actors, min(len(rows) // settings.batch_size, 4096)))
    ds = ray.data.from_items(rows, override_num_blocks=n_blocks)
    ds = ds.map_batches(
        EmbedActor,
        batch_size=settings.batch_size,
        batch_format="numpy",
        fn_constructor_kwargs={"spec": spec.to_dict(), "device": settings.actor_device or settings.device,
                               "num_threads": settings.threads(actors), "prepare": prepare.to_dict()},
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=1,
        num_gpus=1 if gpu else 0,
        **ACTOR_OPTIONS,
    )
    yield from ds.iter_batches(batch_size=None, batch_format="numpy")
