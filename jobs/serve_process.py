"""`copyscope serve` in a subprocess on loopback: start it, wait until /readyz says its engine is in step with the
database, stop it (SIGTERM) or kill it (SIGKILL: a crash). For scripts that drive a real server (the load
benchmark, the multi-process tests); the standard library only, so that it needs no client package.

    with ServeProcess(data_dir, db_url, log="serve.log") as server:   # killed on exit
        requests_to(server.url)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy


def free_port() -> int:
    """A loopback port no one listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(*args: str) -> list[str]:
    """A copyscope command line run by this interpreter."""
    return [sys.executable, "-m", "copyscope.jobs.cli", *args]


class ServeProcess:
    """One `copyscope serve --data DATA [--db URL]` process on a loopback port (0: a free one), its output
    appended to `log`; env: the process's environment (default: this one's)."""

    def __init__(self, data: str | os.PathLike, db_url: str | None = None, *, log: str | os.PathLike,
                 port: int = 0, env: dict[str, str] | None = None):
        self.data, self.db_url, self.log, self.env = Path(data), db_url, Path(log), env
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def argv(self) -> list[str]:
        db = ["--db", self.db_url] if self.db_url else []
        return command("serve", "--data", str(self.data), *db, "--port", str(self.port), "--log-level", "warning")

    def start(self, timeout: float = 90) -> ServeProcess:
        """Start the server and wait until /readyz answers 200 (RuntimeError, with the log's end, if it exits or
        is not ready in `timeout` seconds)."""
        assert self.process is None or self.process.poll() is not None, "already running"
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(self.argv(), stdout=out, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"copyscope serve exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with _DIRECT.open(f"{self.url}/readyz", timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except OSError:  # not listening yet, or 503 while the engine catches up (urllib's HTTPError)
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
        """SIGTERM (a clean shutdown: in-flight requests finish, the cache is saved) -> the exit code; killed if
        it has not stopped in `timeout` seconds (subprocess.TimeoutExpired)."""
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

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()
