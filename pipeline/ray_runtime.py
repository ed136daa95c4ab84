"""Start or join Ray: local by default, any cluster by address; and the choice between Ray and in process.

Actors are declared with max_restarts=0 (ACTOR_OPTIONS): a failed actor fails the job, which a re-run resumes
(jobs commit as they go)."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator

import ray

ACTOR_OPTIONS = {"max_restarts": 0}


@contextlib.contextmanager
def ray_session(address: str | None = None, *, num_cpus: int | None = None) -> Iterator[None]:
    """Use the running Ray, or join `address` / $RAY_ADDRESS, or start a local one; shut down what we started.

    num_cpus: logical CPUs of a local instance (default: the machine's cores).
    """
    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private local instance needs no token
    ray.init(address=address, num_cpus=None if address else num_cpus, include_dashboard=False,
             logging_level=logging.WARNING, log_to_driver=False)
    try:
        quiet_ray_data()
        yield
    finally:
        ray.shutdown()


def quiet_ray_data() -> None:
    """Our own progress bar reports progress; Ray Data's bars and INFO lines would only repeat it."""
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "Progress bars disabled" notice


# Below this many images a job runs in process: starting Ray and its actor pool costs ~5 s here,
# more than two Ray workers save on a couple of hundred images.
MIN_RAY_IMAGES = 200


@contextlib.contextmanager
def choose_runner(n_images: int, settings, address: str | None = None, use_ray: bool | None = None):
    """A LocalRunner for small work, else a RayRunner inside a Ray session (always with an address or
    use_ray=True; never with use_ray=False), whose actors are killed when the block exits, also on error."""
    from copyscope.pipeline.runners import LocalRunner, RayRunner

    address = address or os.environ.get("RAY_ADDRESS") or None
    if use_ray is None:
        use_ray = address is not None or ray.is_initialized() or n_images >= MIN_RAY_IMAGES
    if not use_ray:
        yield LocalRunner(settings)
        return
    with ray_session(address), contextlib.closing(RayRunner(settings)) as runner:
        yield runner
