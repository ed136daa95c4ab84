"""Start or join Ray: local by default, any cluster by address."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator

import ray


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
