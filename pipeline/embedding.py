"""How the embed stage runs: EmbedSettings, which the job fills in (device, model replicas, threads, batch size)
and the runners (pipeline.runners) follow.

Each replica (a stages.Embedder, in process or in one of a RayRunner's actors) runs `prepare_batch`
(decode, resize, regions, local features) and the model on its batch: decoded pixels never cross the object
store, and each actor keeps one core busy from JPEG bytes to descriptor, which on this kind of machine beats
one process running the model on every core (see benchmarks/throughput.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import ray


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

