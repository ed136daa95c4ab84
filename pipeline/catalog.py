"""The references of an index directory, in one SQLite file: the source of truth that the FAISS index caches.

    refs(id INTEGER PRIMARY KEY AUTOINCREMENT,  stable int64 id, never reused after a remove
         name TEXT UNIQUE,                      the image id (path relative to the folder, no extension)
         stamp TEXT,                            "size:mtime_ns" of the file it was computed from
         embedding BLOB,                        (D,) float32 descriptor
         features BLOB,                         packed local features (matching.local_features.to_bytes) or NULL
         pixel_hash TEXT)                       digest of the decoded pixels ("" when not asked for)
    failures(name TEXT PRIMARY KEY, stamp, reason)  files that could not be read, with the stamp they had
    meta(key TEXT PRIMARY KEY, value)               "generation": bumped by every committed change

The feature store is the `features` column: a reference's local features are one B-tree lookup by
id, never a shard to unpack; SQLite gives atomic batches (a killed job keeps every committed batch),
in-place deletes, any number of concurrent readers (the verification workers) and needs no server.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from copyscope.matching.local_features import LocalFeatures, from_bytes, to_bytes

_SCHEMA = """
CREATE TABLE IF NOT EXISTS refs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    stamp TEXT NOT NULL,
    embedding BLOB NOT NULL,
    features BLOB,
    pixel_hash TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS failures (name TEXT PRIMARY KEY, stamp TEXT NOT NULL, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('generation', '0');
"""


@dataclass(frozen=True, eq=False)
class Reference:
    """One reference to store: name, file stamp, (D,) float32 embedding, local features or None, pixel digest."""

    name: str
    stamp: str
    embedding: np.ndarray
    local: LocalFeatures | None = None
    pixel_hash: str = ""


@dataclass(frozen=True)
class Change:
    """What one write did: ids (written or removed), replaced (ids whose old vector left FAISS),
    generation (the catalog's after the write; +1 per write that changed anything)."""

    ids: list[int]
    replaced: list[int]
    generation: int


class Catalog:
    """An index directory's references in SQLite. `readonly` opens for the verification workers."""

    def __init__(self, path: str | os.PathLike, *, readonly: bool = False, method: str | None = None):
        self.path, self.method = Path(path), method
        if readonly:
            uri = self.path.resolve().as_uri() + "?mode=ro"  # as_uri quotes '#', '?' and '%' in the path
            self.db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        else:
            self.db = sqlite3.connect(self.path, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a killed process loses no commit
            self.db.executescript(_SCHEMA)
            self.db.commit()

    def close(self) -> None:
        self.db.close()

    @property
    def generation(self) -> int:
        return int(self.db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM refs").fetchone()[0]

    def stamps(self) -> dict[str, str]:
        """name -> stamp of every stored reference."""
        return dict(self.db.execute("SELECT name, stamp FROM refs"))

    def failure_stamps(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT name, stamp FROM failures"))

    def failures(self) -> list[tuple[str, str]]:
        """(name, reason) of every recorded failure, by name."""
        return list(self.db.execute("SELECT name, reason FROM failures ORDER BY name"))

    def ids_of(self, names: Iterable[str]) -> dict[str, int]:
        """name -> id of the given names that are stored."""
        out = {}
        for name in names:
            row = self.db.execute("SELECT id FROM refs WHERE name = ?", (name,)).fetchone()
            if row:
                out[name] = row[0]
        return out

    def names(self) -> dict[int, str]:
        """id -> name of every reference."""
        return dict(self.db.execute("SELECT id, name FROM refs"))

    def put(self, refs: Sequence[Reference]) -> Change:
        """Insert or replace references by name in one transaction -> their ids (a replaced name keeps its id)."""
        ids, replaced = [], []
        with self.db:
            for r in refs:
                emb = np.ascontiguousarray(r.embedding, np.float32).tobytes()
                blob = to_bytes(r.local) if r.local is not None else None
                row = self.db.execute("SELECT id FROM refs WHERE name = ?", (r.name,)).fetchone()
                if row:
                    self.db.execute("UPDATE refs SET stamp = ?, embedding = ?, features = ?, pixel_hash = ? "
                                    "WHERE id = ?", (r.stamp, emb, blob, r.pixel_hash, row[0]))
                    ids.append(row[0])
                    replaced.append(row[0])
                else:
                    cur = self.db.execute("INSERT INTO refs (name, stamp, embedding, features, pixel_hash) "
                                          "VALUES (?, ?, ?, ?, ?)", (r.name, r.stamp, emb, blob, r.pixel_hash))
                    ids.append(cur.lastrowid)
                self.db.execute("DELETE FROM failures WHERE name = ?", (r.name,))
            return Change(ids, replaced, self._bump(bool(refs)))

    def put_failures(self, failures: Sequence[tuple[str, str, str]]) -> Change:
        """Record (name, stamp, reason) failures in one transaction; a stored reference of that name is
        removed (its file no longer reads) -> the ids removed."""
        removed = []
        with self.db:
            for name, stamp, reason in failures:
                row = self.db.execute("SELECT id FROM refs WHERE name = ?", (name,)).fetchone()
                if row:
                    self.db.execute("DELETE FROM refs WHERE id = ?", row)
                    removed.append(row[0])
                self.db.execute("INSERT OR REPLACE INTO failures VALUES (?, ?, ?)", (name, stamp, reason))
            return Change(removed, removed, self._bump(bool(failures)))

    def delete(self, names: Iterable[str]) -> Change:
        """Remove references (and failure records) by name in one transaction -> the ids removed."""
        removed, changed = [], 0
        with self.db:
            for name in names:
                row = self.db.execute("SELECT id FROM refs WHERE name = ?", (name,)).fetchone()
                if row:
                    self.db.execute("DELETE FROM refs WHERE id = ?", row)
                    removed.append(row[0])
                changed += self.db.execute("DELETE FROM failures WHERE name = ?", (name,)).rowcount
            return Change(removed, removed, self._bump(bool(removed) or changed > 0))

    def embeddings(self, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(N,) int64 ids by id, (N, D) float32 embeddings of every reference."""
        rows = self.db.execute("SELECT id, embedding FROM refs ORDER BY id").fetchall()
        ids = np.array([r[0] for r in rows], np.int64)
        vectors = np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), dim)
        return ids, vectors.copy()

    def embeddings_of(self, ids: Iterable[int]) -> dict[int, np.ndarray]:
        """id -> (D,) float32 embedding of the given ids that are stored."""
        out = {}
        for ref_id in dict.fromkeys(int(i) for i in ids):
            row = self.db.execute("SELECT embedding FROM refs WHERE id = ?", (ref_id,)).fetchone()
            if row:
                out[ref_id] = np.frombuffer(row[0], np.float32)
        return out

    def features(self, ref_id: int) -> LocalFeatures:
        """Local features of one reference by id (KeyError if unknown, ValueError if none were stored)."""
        row = self.db.execute("SELECT features FROM refs WHERE id = ?", (int(ref_id),)).fetchone()
        if row is None:
            raise KeyError(f"no reference with id {ref_id}")
        if row[0] is None:
            raise ValueError(f"reference {ref_id} has no stored local features")
        return from_bytes(row[0], self.method or "")

    def pixel_hashes(self) -> dict[int, str]:
        return dict(self.db.execute("SELECT id, pixel_hash FROM refs"))

    def feature_bytes(self) -> tuple[int, int, int]:
        """(references with features, mean bytes, max bytes) of the stored local features."""
        n, mean, top = self.db.execute("SELECT COUNT(features), AVG(LENGTH(features)), MAX(LENGTH(features)) "
                                       "FROM refs").fetchone()
        return int(n), int(mean or 0), int(top or 0)

    def _bump(self, changed: bool) -> int:
        """Inside a write transaction: the generation after it (bumped when something changed)."""
        if changed:
            self.db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
        return int(self.db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])
