"""`copyscope serve` as a real subprocess for tests (copyscope.jobs.serve_process): start it, wait until ready,
kill -9 it or stop it.

    with ServeProcess(tmp_path / "data", db_url, log=tmp_path / "serve.log") as server:
        httpx.get(f"{server.url}/readyz")
        server.kill()                       # SIGKILL: a crash
        server.start()                      # the same --data/--db on the same port

`Servers` tracks every process a test starts so a fixture can kill them all, even on failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from copyscope.jobs.serve_process import ServeProcess
from copyscope.pipeline.bank_db import Database, default_url
from copyscope.pipeline.bank_store import Actor, BankStore


def environment() -> dict[str, str]:
    return os.environ | {"RAY_AUTH_MODE": "disabled"}


def create_key(data: str | os.PathLike, db_url: str | None, role: str = "admin", name: str = "root") -> str:
    """A new API key in the database the server of `data` / `db_url` uses -> its secret."""
    db = Database.connect(db_url or default_url(data))
    try:
        return BankStore(db).create_key(Actor("cli", "admin"), name, role)
    finally:
        db.close()


class ServerUnderTest(ServeProcess):
    """A ServeProcess with an authenticated client."""

    def client(self, key: str, timeout: float = 60) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout)


class Servers:
    """Every ServeProcess of a test, killed by `kill_all` (a fixture's finalizer)."""

    def __init__(self, folder: Path):
        self.folder, self.started = folder, []

    def __call__(self, data: str | os.PathLike, db_url: str | None = None) -> ServerUnderTest:
        """A new (not yet started) server over `data` / `db_url`, logging to FOLDER/serve-N.log."""
        server = ServerUnderTest(data, db_url, log=self.folder / f"serve-{len(self.started)}.log", env=environment())
        self.started.append(server)
        return server

    def kill_all(self) -> None:
        for server in self.started:
            server.kill()
