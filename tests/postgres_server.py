"""A throwaway PostgreSQL server for tests: its own data dir, loopback port and socket dir.

It never touches the system cluster (no ``pg_ctlcluster``); everything lives in one temp dir
that is removed on ``stop()``. As root (as the tests run here and in CI) the server binaries
run as the ``postgres`` OS user via ``runuser``, since ``initdb`` refuses to run as root.
"""

from __future__ import annotations

import atexit
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from urllib.parse import quote

NOT_FOUND = "PostgreSQL server binaries not found: `make install` installs Debian's postgresql"


def find_bindir() -> str:
    """The newest /usr/lib/postgresql/*/bin, else ``pg_config --bindir``, else initdb on PATH."""

    def version(path: str) -> tuple[int, ...]:
        name = os.path.basename(os.path.dirname(os.path.dirname(path)))
        return tuple(int(n) for n in re.findall(r"\d+", name))

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    if found:
        return os.path.dirname(found[-1])
    if shutil.which("pg_config"):
        try:
            bindir = subprocess.run(
                ["pg_config", "--bindir"], capture_output=True, text=True, check=True, timeout=30
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            bindir = ""
        if bindir and os.access(os.path.join(bindir, "initdb"), os.X_OK):
            return bindir
    initdb = shutil.which("initdb")
    if initdb:
        return os.path.dirname(initdb)
    raise RuntimeError(NOT_FOUND)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, which an unreaping PID 1 may leave, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def _children(pid: int) -> list[int]:
    kids = []
    for entry in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(entry) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            kids.append(int(entry.split("/")[2]))
    return kids


class PostgresServer:
    """One private PostgreSQL server; ``with PostgresServer() as pg: pg.new_database()``."""

    def __init__(self) -> None:
        self.bindir: str | None = None
        self.base: str | None = None
        self.port: int | None = None
        self._as_root = os.geteuid() == 0

    # paths -----------------------------------------------------------------------------
    @property
    def datadir(self) -> str:
        return os.path.join(self.base, "data")

    @property
    def sockdir(self) -> str:
        return os.path.join(self.base, "sock")

    @property
    def logfile(self) -> str:
        return os.path.join(self.base, "server.log")

    @property
    def url(self) -> str:
        """Connection URL of the ``postgres`` database."""
        return self._url("postgres")

    def _url(self, dbname: str) -> str:
        if self.port is None:
            raise RuntimeError("PostgresServer is not started")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{quote(dbname, safe='')}"

    # running the binaries ----------------------------------------------------------------
    def _run(self, tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [os.path.join(self.bindir, tool), *args]
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.setdefault("LC_ALL", "C")
        return subprocess.run(
            cmd, cwd=self.base, env=env, capture_output=True, text=True, timeout=timeout
        )

    def _check(self, result: subprocess.CompletedProcess, what: str) -> None:
        if result.returncode != 0:
            log = ""
            if self.base and os.path.exists(self.logfile):
                with open(self.logfile, errors="replace") as f:
                    log = f.read()[-4000:]
            raise RuntimeError(
                f"{what} failed ({result.returncode}):\n{result.stdout}{result.stderr}\n{log}"
            )

    def _pg_ctl_start(self) -> subprocess.CompletedProcess:
        opts = (
            f"-p {self.port} -k {self.sockdir} -c listen_addresses=127.0.0.1"
            " -c max_connections=200 -c fsync=off"
        )
        return self._run("pg_ctl", "-w", "-t", "60", "-D", self.datadir, "-l", self.logfile,
                         "-o", opts, "start")

    # lifecycle ------------------------------------------------------------------------
    def start(self) -> "PostgresServer":
        """initdb into a fresh temp dir and start the server on a free loopback port."""
        self.bindir = find_bindir()
        self.base = tempfile.mkdtemp(prefix="copyscope-pg-")
        atexit.register(self.stop)
        try:
            os.mkdir(self.sockdir, 0o700)
            if self._as_root:
                for path in (self.base, self.sockdir):
                    shutil.chown(path, "postgres", "postgres")
            self._check(
                self._run("initdb", "-A", "trust", "-U", "postgres", "-E", "UTF8",
                          "--locale=C", "--no-sync", "-D", self.datadir),
                "initdb",
            )
            for attempt in range(3):  # another process may take the free port first
                self.port = _free_port()
                result = self._pg_ctl_start()
                if result.returncode == 0 or attempt == 2:
                    break
            self._check(result, "pg_ctl start")
        except BaseException:
            self.stop()
            raise
        return self

    def _postmaster_pid(self) -> int | None:
        try:
            with open(os.path.join(self.datadir, "postmaster.pid")) as f:
                return int(f.readline())
        except (OSError, ValueError):
            return None

    def kill(self, timeout: float = 30) -> None:
        """SIGKILL the postmaster (a crash); waits until it and its children are gone."""
        pid = self._postmaster_pid()
        if pid is None or not _alive(pid):
            return
        kids = _children(pid)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        for p in [pid, *kids]:  # backends exit by themselves on postmaster death
            while _alive(p) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(p):
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        while any(_alive(p) for p in [pid, *kids]) and time.monotonic() < deadline + 5:
            time.sleep(0.05)
        # Orphans go to PID 1; one that is slow to reap leaves a zombie postmaster, which
        # postgres' stale-lock check takes for a live one: wait a little, then drop the locks.
        reaped = time.monotonic() + 5
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < reaped:
            time.sleep(0.05)
        if not os.path.exists(f"/proc/{pid}"):
            return
        for lock in (os.path.join(self.datadir, "postmaster.pid"),
                     os.path.join(self.sockdir, f".s.PGSQL.{self.port}.lock")):
            try:
                os.unlink(lock)
            except FileNotFoundError:
                pass

    def restart(self) -> None:
        """Start the server again on the same dir and port (after ``kill()`` it recovers)."""
        self._check(self._pg_ctl_start(), "pg_ctl start")

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove the temp dir; safe to call twice."""
        atexit.unregister(self.stop)
        if self.base is None:
            return
        try:
            pid = self._postmaster_pid()
            if pid is not None and _alive(pid):
                result = self._run("pg_ctl", "stop", "-m", "fast", "-w", "-t", "60",
                                   "-D", self.datadir)
                if result.returncode != 0 and _alive(pid):
                    self.kill()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None
            self.port = None

    def __enter__(self) -> "PostgresServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # databases ------------------------------------------------------------------------
    def new_database(self, name: str | None = None) -> str:
        """CREATE DATABASE (a fresh, empty one; a unique name by default) and return its URL."""
        import psycopg
        from psycopg import sql

        name = name or f"test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True, connect_timeout=30) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self._url(name)
