"""The service's database: embedded SQLite (default) or PostgreSQL (psycopg 3), one small interface.

    db = Database.connect("sqlite:///data/copyscope.sqlite")    # or "postgresql://user@host:5432/name"
    with db.transaction() as tx:                                # commit on exit, roll back on an exception
        tx.execute("INSERT INTO banks (name) VALUES (?)", ("known",))
        row = tx.one("SELECT id FROM banks WHERE name = ?", ("known",))

SQL is written once with `?` placeholders and the types below (`{pk}`, `{blob}`); each dialect fills them.
The schema is created and migrated on connect by plain versioned SQL (MIGRATIONS, recorded in
schema_version): a version is applied in one transaction, so a killed migration leaves the old schema.
Every write transaction that logs a change takes the change lock first (`tx.lock_changes()`): change rows
then commit in sequence order, so a reader that saw change N has seen every change before it.
Durability: SQLite in WAL mode with synchronous=FULL, PostgreSQL as configured (fsync on by default);
a commit that returned survives a kill -9 of the process. A PostgreSQL connection found lost (the server
restarted) fails its transaction; every thread then opens a new connection.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterator, Sequence
from urllib.parse import urlparse

import psycopg

from copyscope.descriptors.errors import UserError

DIALECT_TYPES = {
    "sqlite": {"pk": "INTEGER PRIMARY KEY AUTOINCREMENT", "blob": "BLOB"},
    "postgresql": {"pk": "BIGSERIAL PRIMARY KEY", "blob": "BYTEA"},
}
CHANGE_LOCK = 8321  # the PostgreSQL advisory lock id that orders change rows
MIGRATION_LOCK = 8322  # ... and the one that serialises migrations

MIGRATIONS: list[tuple[int, str]] = [
    (1, """
CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE banks (
    id {pk}, name TEXT NOT NULL UNIQUE, description TEXT NOT NULL DEFAULT '',
    enabled INTEGER NOT NULL DEFAULT 1, match_threshold REAL NOT NULL, review_threshold REAL NOT NULL,
    created TEXT NOT NULL, updated TEXT NOT NULL);
CREATE TABLE items (
    id {pk}, item_key TEXT NOT NULL UNIQUE, bank_id BIGINT NOT NULL REFERENCES banks (id),
    content_id TEXT NOT NULL, sha256 TEXT NOT NULL, metadata TEXT NOT NULL, enabled INTEGER NOT NULL,
    width INTEGER NOT NULL, height INTEGER NOT NULL, embedding {blob} NOT NULL, features {blob},
    created TEXT NOT NULL, updated TEXT NOT NULL, UNIQUE (bank_id, content_id));
CREATE TABLE images (sha256 TEXT PRIMARY KEY, data {blob} NOT NULL);
CREATE TABLE changes (seq {pk}, item_key TEXT NOT NULL, at TEXT NOT NULL);
CREATE TABLE api_keys (
    id {pk}, name TEXT NOT NULL UNIQUE, role TEXT NOT NULL, key_hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL, created TEXT NOT NULL, revoked TEXT);
CREATE TABLE match_records (
    match_id TEXT PRIMARY KEY, key_name TEXT NOT NULL, created TEXT NOT NULL, external_id TEXT,
    banks TEXT NOT NULL, image_sha256 TEXT, decision TEXT, result TEXT NOT NULL);
CREATE INDEX match_records_created ON match_records (created);
CREATE TABLE reviews (
    id {pk}, match_id TEXT NOT NULL REFERENCES match_records (match_id), bank TEXT NOT NULL,
    content_id TEXT NOT NULL, verdict TEXT NOT NULL, note TEXT NOT NULL, key_name TEXT NOT NULL,
    created TEXT NOT NULL);
CREATE INDEX reviews_match ON reviews (match_id);
CREATE TABLE audit (
    id {pk}, at TEXT NOT NULL, key_name TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL,
    detail TEXT NOT NULL);
"""),
]


class DatabaseUnavailable(UserError):
    """The database cannot be reached now (down, restarting, the connection lost): try again later."""


class Transaction:
    """One open transaction: execute / one / all with `?` placeholders."""

    def __init__(self, cursor, dialect: str):
        self.cursor, self.dialect = cursor, dialect

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement -> rows affected."""
        self.cursor.execute(self._sql(sql), tuple(params))
        return self.cursor.rowcount

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        self.cursor.execute(self._sql(sql), tuple(params))
        return self.cursor.fetchone()

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        self.cursor.execute(self._sql(sql), tuple(params))
        return list(self.cursor.fetchall())

    def insert(self, sql: str, params: Sequence[Any] = ()) -> int:
        """An INSERT into a table with an `{pk}` id -> the new id."""
        if self.dialect == "postgresql":
            return int(self.one(sql + " RETURNING id", params)[0])
        self.execute(sql, params)
        return int(self.cursor.lastrowid)

    def lock_changes(self) -> None:
        """Order this transaction after every earlier writer that took the lock: its change rows commit in
        sequence order (see the module docstring), and a check-then-insert cannot race another."""
        if self.dialect == "postgresql":
            self.cursor.execute("SELECT pg_advisory_xact_lock(%s)", (CHANGE_LOCK,))
        # SQLite: the transaction began IMMEDIATE, so it already holds the write lock

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.dialect == "postgresql" else sql


class Database:
    """A connection per thread to one database; `transaction()` is the only way to run SQL."""

    def __init__(self, url: str, dialect: str, target: str):
        self.url, self.dialect, self._target = url, dialect, target
        self._local = threading.local()
        self._all: dict[int, object] = {}  # thread id -> its connection
        self._guard = threading.Lock()
        self._epoch = 0  # bumped when a connection is found lost: every thread then opens a new one

    @classmethod
    def connect(cls, url: str) -> Database:
        """sqlite:///PATH (a file, created with its folder) or postgresql://... -> a migrated Database."""
        parsed = urlparse(url)
        if parsed.scheme == "sqlite":
            path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else parsed.path
            if not path:
                raise UserError(f"bad database URL {url!r}: give sqlite:///PATH/TO/FILE.sqlite")
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            db = cls(url, "sqlite", path)
        elif parsed.scheme in ("postgresql", "postgres"):
            db = cls(url, "postgresql", url)
        else:
            raise UserError(f"unsupported database URL {url!r}: use sqlite:///PATH or postgresql://...")
        db.migrate()
        return db

    def _connection(self):
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.epoch != self._epoch:
            epoch, fresh = self._epoch, self._open()
            with self._guard:
                # this thread's lost connection, and those of threads that ended (a server's worker pool
                # retires idle threads): closed, not kept
                alive = {t.ident for t in threading.enumerate()}
                stale = [i for i in self._all if i not in alive] + ([threading.get_ident()] if conn else [])
                for ident in stale:
                    with contextlib.suppress(Exception):
                        self._all.pop(ident).close()
                self._all[threading.get_ident()] = fresh
            conn, self._local.conn, self._local.epoch = fresh, fresh, epoch
        return conn

    def _open(self):
        if self.dialect == "sqlite":
            conn = sqlite3.connect(self._target, isolation_level=None, check_same_thread=False, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            return conn
        try:
            return psycopg.connect(self._target, connect_timeout=10)
        except psycopg.OperationalError as e:
            raise DatabaseUnavailable(f"cannot connect to {without_password(self.url)}: {str(e).strip()}") from e

    @contextlib.contextmanager
    def transaction(self, write: bool = True) -> Iterator[Transaction]:
        """A transaction on this thread's connection: committed on exit, rolled back on an exception.
        write=False (`read()`): SQLite lets it run beside other readers and a writer (WAL)."""
        conn = self._connection()
        if self.dialect == "sqlite":
            cur = conn.cursor()
            cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield Transaction(cur, "sqlite")
            except BaseException:
                conn.rollback()
                raise
            conn.commit()
            return
        try:
            with conn.transaction(), conn.cursor() as cur:
                yield Transaction(cur, "postgresql")
        except Exception as e:
            if conn.closed:  # lost: this transaction fails, the next ones (on any thread) get a new connection
                self._epoch += 1
            if isinstance(e, psycopg.OperationalError):
                raise DatabaseUnavailable(f"lost the connection to {without_password(self.url)}: "
                                          f"{str(e).strip()}") from e
            raise

    def read(self):
        """A read-only transaction (see `transaction`)."""
        return self.transaction(write=False)

    def migrate(self) -> int:
        """Apply every migration above the recorded version, each in one transaction -> the version now."""
        with self.transaction() as tx:
            if self.dialect == "postgresql":  # two servers starting at once on a new database
                tx.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
            tx.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = tx.one("SELECT MAX(version) FROM schema_version")
            version = int(row[0]) if row and row[0] is not None else 0
            for number, sql in MIGRATIONS:
                if number <= version:
                    continue
                for statement in sql.format(**DIALECT_TYPES[self.dialect]).split(";"):
                    if statement.strip():
                        tx.execute(statement)
                tx.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))
                version = number
        return version

    def close(self) -> None:
        with self._guard:
            for conn in self._all.values():
                with contextlib.suppress(Exception):
                    conn.close()
            self._all.clear()
        self._local = threading.local()


def default_url(data_dir: str | os.PathLike) -> str:
    """The embedded database of a data folder."""
    return f"sqlite:///{Path(data_dir).resolve() / 'copyscope.sqlite'}"


def without_password(url: str) -> str:
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@")
    return url
