"""`copyscope serve` as a real subprocess for tests: start it, wait until ready, kill -9 it or stop it.

    with ServeProcess(tmp_path / "data", db_url, log=tmp_path / "serve.log") as server:
        httpx.get(f"{server.url}/readyz")
        server.kill()                       # SIGKILL: a crash
        server.start()                      # the same --data/--db on the same port

`Servers` tracks every process a test starts so a fixture can kill them all, even on failure.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from copyscope.pipeline.bank_db import Database, default_url
from copyscope.pipeline.bank_store import Actor, BankStore


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(*args: str) -> list[str]:
    """A copyscope command line run by this interpreter."""
    return [sys.executable, "-m", "copyscope.jobs.cli", *args]


def environment() -> dict[str, str]:
    return os.environ | {"RAY_AUTH_MODE": "disabled"}


def create_key(data: str | os.PathLike, db_url: str | None, role: str = "admin", name: str = "root") -> str:
    """A new API key in the database the server of `data` / `db_url` uses -> its secret."""
    db = Database.connect(db_url or default_url(data))
    try:
        return BankStore(db).create_key(Actor("cli", "admin"), name, role)
    finally:
        db.close()


class ServeProcess:
    """One `copyscope serve --data DATA [--db URL]` process on a fixed loopback port."""

    def __init__(self, data: str | os.PathLike, db_url: str | None = None, *, log: str | os.PathLike):
        self.data, self.db_url, self.log = Path(data), db_url, Path(log)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def argv(self) -> list[str]:
        db = ["--db", self.db_url] if self.db_url else []
        return command("serve", "--data", str(self.data), *db, "--port", str(self.port), "--log-level", "warning")

    def start(self, timeout: float = 90) -> ServeProcess:
        """Start the server and wait until /readyz answers 200 (its engine in step with the database)."""
        assert self.process is None or self.process.poll() is not None, "already running"
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(self.argv(), stdout=out, stderr=subprocess.STDOUT, env=environment())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"copyscope serve exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"copyscope serve not ready after {timeout} s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL (a crash at whatever it was doing) and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM (a clean shutdown: in-flight requests finish, the cache is saved) -> the exit code."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise
        return self.process.returncode

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def client(self, key: str, timeout: float = 60) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout)

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()


class Servers:
    """Every ServeProcess of a test, killed by `kill_all` (a fixture's finalizer)."""

    def __init__(self, folder: Path):
        self.folder, self.started = folder, []

    def __call__(self, data: str | os.PathLike, db_url: str | None = None) -> ServeProcess:
        """A new (not yet started) server over `data` / `db_url`, logging to FOLDER/serve-N.log."""
        server = ServeProcess(data, db_url, log=self.folder / f"serve-{len(self.started)}.log")
        self.started.append(server)
        return server

    def kill_all(self) -> None:
        for server in self.started:
            server.kill()
