import os

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole test session (starting one costs seconds and ~0.7 GB)."""
    import ray

    from copyscope.pipeline.ray_runtime import quiet_ray_data

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    quiet_ray_data()
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def postgres_server():
    """One private PostgreSQL server for the session; fails (never skips) without the binaries."""
    from tests.postgres_server import PostgresServer

    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server):
    """URL of a fresh, empty database on the session's server (one per test)."""
    return postgres_server.new_database()
