"""Banks of known images in the service database (pipeline.bank_db): the source of truth of `copyscope serve`.

Tables: banks; items (one known image: the client's content_id, the image's sha256, its descriptor and
packed local features, so an engine is rebuilt from here without embedding anything again); images
(bytes by sha256, for the review page); changes (one row per item whose matchability may have changed,
in commit order); api_keys (sha256 of each key, never the key); match_records and reviews (every match
call and every human verdict); audit (every write: who, when, what).

Every write runs in one transaction together with its audit row and its change rows, so what a client
was told is done is done, with its audit trail, or not at all.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterator

from copyscope.descriptors.errors import UserError
from copyscope.pipeline.bank_db import Database, Transaction

ROLES = ("matcher", "curator", "admin")
KEY_PREFIX = "cs_"
ENGINE_SETTINGS = "engine"  # settings row: the model and local features every item was embedded with


class NotFound(UserError):
    """A bank, item, match record or key that does not exist."""


class Conflict(UserError):
    """A write that contradicts what is stored (a name taken, a content_id held by another image)."""


class InvalidChange(UserError):
    """A write that would leave stored values inconsistent (a review threshold above the match threshold)."""


def now() -> str:
    """UTC time, ISO 8601 with milliseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Actor:
    """Who makes a request: the key's name and role ("cli" for commands run on the server)."""

    name: str
    role: str


@dataclass(frozen=True)
class Bank:
    id: int
    name: str
    description: str
    enabled: bool
    match_threshold: float
    review_threshold: float
    created: str
    updated: str

    def to_json(self, items: int | None = None) -> dict:
        out = {"name": self.name, "description": self.description, "enabled": self.enabled,
               "match_threshold": self.match_threshold, "review_threshold": self.review_threshold,
               "created": self.created, "updated": self.updated}
        return out if items is None else out | {"items": items}


@dataclass(frozen=True)
class Item:
    """One known image: item_key names it in the engine; embedding (D,) float32 bytes, features packed."""

    item_key: str
    bank: str
    content_id: str
    sha256: str
    metadata: dict
    enabled: bool
    width: int
    height: int
    created: str
    updated: str

    def to_json(self) -> dict:
        return {"bank": self.bank, "content_id": self.content_id, "sha256": self.sha256,
                "metadata": self.metadata, "enabled": self.enabled, "width": self.width, "height": self.height,
                "created": self.created, "updated": self.updated}


@dataclass(frozen=True)
class NewItem:
    """What an add stores: the image's digest, size and bytes, and what the engine computed from it."""

    sha256: str
    width: int
    height: int
    image: bytes
    embedding: bytes
    features: bytes | None


_BANK_COLUMNS = "id, name, description, enabled, match_threshold, review_threshold, created, updated"
_ITEM_COLUMNS = ("i.item_key, b.name, i.content_id, i.sha256, i.metadata, i.enabled, i.width, i.height, "
                 "i.created, i.updated")


def _bank(row: tuple) -> Bank:
    return Bank(int(row[0]), row[1], row[2], bool(row[3]), float(row[4]), float(row[5]), row[6], row[7])


def _item(row: tuple) -> Item:
    return Item(row[0], row[1], row[2], row[3], json.loads(row[4]), bool(row[5]), int(row[6]), int(row[7]),
                row[8], row[9])


def _held(bank: str, content_id: str, sha256: str) -> Conflict:
    return Conflict(f"content_id {content_id!r} of bank {bank!r} holds another image (sha256 {sha256[:12]}...): "
                    "delete it first to replace it")


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class BankStore:
    """Typed reads and writes of the service tables over one Database."""

    def __init__(self, db: Database):
        self.db = db

    # ---------------------------------------------------------------- settings
    def claim_setting(self, key: str, value: Any) -> Any:
        """Store `value` under `key` unless a value is there already -> the stored value."""
        with self.db.transaction() as tx:
            tx.lock_changes()  # check-then-insert: one writer at a time
            row = tx.one("SELECT value FROM settings WHERE key = ?", (key,))
            if row:
                return json.loads(row[0])
            tx.execute("INSERT INTO settings (key, value) VALUES (?, ?)", (key, json.dumps(value, sort_keys=True)))
        return value

    # ---------------------------------------------------------------- audit
    @staticmethod
    def _audit(tx: Transaction, actor: Actor, action: str, target: str, detail: dict | None = None) -> None:
        tx.execute("INSERT INTO audit (at, key_name, action, target, detail) VALUES (?, ?, ?, ?, ?)",
                   (now(), actor.name, action, target, json.dumps(detail or {}, sort_keys=True)))

    def audit_log(self, limit: int = 100, before: int | None = None) -> list[dict]:
        """Newest first: {"id", "at", "key", "action", "target", "detail"}."""
        with self.db.read() as tx:
            rows = tx.all("SELECT id, at, key_name, action, target, detail FROM audit WHERE id < ? "
                          "ORDER BY id DESC LIMIT ?", (before if before is not None else 2 ** 62, limit))
        return [{"id": r[0], "at": r[1], "key": r[2], "action": r[3], "target": r[4], "detail": json.loads(r[5])}
                for r in rows]

    # ---------------------------------------------------------------- banks
    def create_bank(self, actor: Actor, name: str, description: str, match_threshold: float,
                    review_threshold: float) -> Bank:
        stamp = now()
        with self.db.transaction() as tx:
            tx.lock_changes()  # check-then-insert: one writer at a time
            if tx.one("SELECT 1 FROM banks WHERE name = ?", (name,)):
                raise Conflict(f"bank {name!r} exists")
            tx.insert("INSERT INTO banks (name, description, enabled, match_threshold, review_threshold, created, "
                      "updated) VALUES (?, ?, 1, ?, ?, ?, ?)",
                      (name, description, match_threshold, review_threshold, stamp, stamp))
            self._audit(tx, actor, "bank.create", name, {"match_threshold": match_threshold,
                                                         "review_threshold": review_threshold})
            return self._bank(tx, name)

    def banks(self) -> list[Bank]:
        with self.db.read() as tx:
            return [_bank(r) for r in tx.all(f"SELECT {_BANK_COLUMNS} FROM banks ORDER BY name")]

    def bank(self, name: str) -> Bank:
        with self.db.read() as tx:
            return self._bank(tx, name)

    @staticmethod
    def _bank(tx: Transaction, name: str) -> Bank:
        row = tx.one(f"SELECT {_BANK_COLUMNS} FROM banks WHERE name = ?", (name,))
        if row is None:
            raise NotFound(f"no bank {name!r}")
        return _bank(row)

    def update_bank(self, actor: Actor, name: str, changes: dict) -> Bank:
        """changes: any of description, enabled, match_threshold, review_threshold; InvalidChange (nothing
        written) when the review threshold would exceed the match threshold, checked in the transaction."""
        with self.db.transaction() as tx:
            tx.lock_changes()
            bank = self._bank(tx, name)
            for column, value in changes.items():
                if column not in _BANK_COLUMNS.split(", ")[2:6]:
                    raise ValueError(f"not a bank setting: {column!r}")
                tx.execute(f"UPDATE banks SET {column} = ? WHERE id = ?",
                           (int(value) if column == "enabled" else value, bank.id))
            tx.execute("UPDATE banks SET updated = ? WHERE id = ?", (now(), bank.id))
            updated = self._bank(tx, name)
            if updated.review_threshold > updated.match_threshold:
                raise InvalidChange("review_threshold must not exceed match_threshold")
            if "enabled" in changes and bool(changes["enabled"]) != bank.enabled:
                self._log_bank_items(tx, bank.id)
            self._audit(tx, actor, "bank.update", name, changes)
            return updated

    def delete_bank(self, actor: Actor, name: str) -> int:
        """Remove a bank and its items -> how many items went with it."""
        with self.db.transaction() as tx:
            tx.lock_changes()
            bank = self._bank(tx, name)
            n = self._log_bank_items(tx, bank.id)
            digests = [r[0] for r in tx.all("SELECT DISTINCT sha256 FROM items WHERE bank_id = ?", (bank.id,))]
            tx.execute("DELETE FROM items WHERE bank_id = ?", (bank.id,))
            tx.execute("DELETE FROM banks WHERE id = ?", (bank.id,))
            self._drop_images(tx, digests)
            self._audit(tx, actor, "bank.delete", name, {"items": n})
            return n

    @staticmethod
    def _log_bank_items(tx: Transaction, bank_id: int) -> int:
        keys = [r[0] for r in tx.all("SELECT item_key FROM items WHERE bank_id = ?", (bank_id,))]
        stamp = now()
        for key in keys:
            tx.execute("INSERT INTO changes (item_key, at) VALUES (?, ?)", (key, stamp))
        return len(keys)

    def items_per_bank(self) -> dict[str, int]:
        with self.db.read() as tx:
            rows = tx.all("SELECT b.name, COUNT(i.id) FROM banks b LEFT JOIN items i ON i.bank_id = b.id "
                          "GROUP BY b.name")
        return {r[0]: int(r[1]) for r in rows}

    # ---------------------------------------------------------------- items
    def item(self, bank: str, content_id: str) -> Item:
        with self.db.read() as tx:
            self._bank(tx, bank)
            return self._item(tx, bank, content_id)

    @staticmethod
    def _item(tx: Transaction, bank: str, content_id: str) -> Item:
        row = tx.one(f"SELECT {_ITEM_COLUMNS} FROM items i JOIN banks b ON b.id = i.bank_id "
                     "WHERE b.name = ? AND i.content_id = ?", (bank, content_id))
        if row is None:
            raise NotFound(f"no item {content_id!r} in bank {bank!r}")
        return _item(row)

    def items_by_key(self, keys: list[str], batch: int = 500) -> dict[str, Item]:
        out = {}
        for start in range(0, len(keys), batch):
            part = keys[start:start + batch]
            with self.db.read() as tx:
                rows = tx.all(f"SELECT {_ITEM_COLUMNS} FROM items i JOIN banks b ON b.id = i.bank_id "
                              f"WHERE i.item_key IN ({', '.join('?' * len(part))})", part)
            out.update((r[0], _item(r)) for r in rows)
        return out

    def existing_item(self, bank: str, content_id: str, sha256: str) -> Item | None:
        """The stored item of this content_id when it holds this image; Conflict when it holds another."""
        with self.db.read() as tx:
            self._bank(tx, bank)
            try:
                item = self._item(tx, bank, content_id)
            except NotFound:
                return None
        if item.sha256 != sha256:
            raise _held(bank, content_id, item.sha256)
        return item

    def add_item(self, actor: Actor, bank: str, content_id: str, metadata: dict, new: NewItem) -> tuple[Item, bool]:
        """Store an item -> (the item, True) or, when this content_id holds this image already, (it, False)."""
        stamp = now()
        with self.db.transaction() as tx:
            tx.lock_changes()
            b = self._bank(tx, bank)
            row = tx.one("SELECT sha256 FROM items WHERE bank_id = ? AND content_id = ?", (b.id, content_id))
            if row is not None:
                if row[0] != new.sha256:
                    raise _held(bank, content_id, row[0])
                return self._item(tx, bank, content_id), False
            key = uuid.uuid4().hex
            tx.execute("INSERT INTO images (sha256, data) VALUES (?, ?) ON CONFLICT (sha256) DO NOTHING",
                       (new.sha256, new.image))
            tx.insert("INSERT INTO items (item_key, bank_id, content_id, sha256, metadata, enabled, width, height, "
                      "embedding, features, created, updated) VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?)",
                      (key, b.id, content_id, new.sha256, json.dumps(metadata, sort_keys=True), new.width,
                       new.height, new.embedding, new.features, stamp, stamp))
            tx.execute("INSERT INTO changes (item_key, at) VALUES (?, ?)", (key, stamp))
            self._audit(tx, actor, "item.add", f"{bank}/{content_id}", {"sha256": new.sha256})
            return self._item(tx, bank, content_id), True

    def update_item(self, actor: Actor, bank: str, content_id: str, enabled: bool) -> Item:
        with self.db.transaction() as tx:
            tx.lock_changes()
            self._bank(tx, bank)
            item = self._item(tx, bank, content_id)
            tx.execute("UPDATE items SET enabled = ?, updated = ? WHERE item_key = ?",
                       (int(enabled), now(), item.item_key))
            if enabled != item.enabled:
                tx.execute("INSERT INTO changes (item_key, at) VALUES (?, ?)", (item.item_key, now()))
            self._audit(tx, actor, "item.update", f"{bank}/{content_id}", {"enabled": enabled})
            return self._item(tx, bank, content_id)

    def delete_item(self, actor: Actor, bank: str, content_id: str) -> None:
        with self.db.transaction() as tx:
            tx.lock_changes()
            self._bank(tx, bank)
            item = self._item(tx, bank, content_id)
            tx.execute("DELETE FROM items WHERE item_key = ?", (item.item_key,))
            tx.execute("INSERT INTO changes (item_key, at) VALUES (?, ?)", (item.item_key, now()))
            self._drop_images(tx, [item.sha256])
            self._audit(tx, actor, "item.delete", f"{bank}/{content_id}", {"sha256": item.sha256})

    @staticmethod
    def _drop_images(tx: Transaction, digests: list[str]) -> None:
        """Delete the stored images of deleted items, unless another item or an upload kept for review holds
        the same image: a deleted item's pixels are not retained."""
        for digest in digests:
            tx.execute("DELETE FROM images WHERE sha256 = ? AND NOT EXISTS (SELECT 1 FROM items WHERE sha256 = ?) "
                       "AND NOT EXISTS (SELECT 1 FROM match_records WHERE image_sha256 = ?)",
                       (digest, digest, digest))

    def image(self, sha256: str) -> bytes:
        with self.db.read() as tx:
            row = tx.one("SELECT data FROM images WHERE sha256 = ?", (sha256,))
        if row is None:
            raise NotFound(f"no stored image {sha256[:12]}...")
        return bytes(row[0])

    # ---------------------------------------------------------------- what the engine holds
    def last_change(self) -> int:
        with self.db.read() as tx:
            row = tx.one("SELECT MAX(seq) FROM changes")
        return int(row[0]) if row and row[0] is not None else 0

    def changes_since(self, seq: int, limit: int = 10_000) -> tuple[int, list[str]]:
        """Changes after `seq` -> (the last seq read, the item keys they touch, each once)."""
        with self.db.read() as tx:
            rows = tx.all("SELECT seq, item_key FROM changes WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit))
        if not rows:
            return seq, []
        return int(rows[-1][0]), list(dict.fromkeys(r[1] for r in rows))

    def matchable_keys(self) -> set[str]:
        """Keys of the items that are enabled in an enabled bank."""
        with self.db.read() as tx:
            return {r[0] for r in tx.all("SELECT i.item_key FROM items i JOIN banks b ON b.id = i.bank_id "
                                         "WHERE i.enabled = 1 AND b.enabled = 1")}

    def matchable(self, keys: list[str], batch: int = 500) -> Iterator[tuple[str, bytes, bytes | None]]:
        """(item_key, embedding, features) of those of `keys` that are enabled in an enabled bank."""
        sql = ("SELECT i.item_key, i.embedding, i.features FROM items i JOIN banks b ON b.id = i.bank_id "
               "WHERE i.enabled = 1 AND b.enabled = 1 AND i.item_key IN ")
        for start in range(0, len(keys), batch):
            part = keys[start:start + batch]
            with self.db.read() as tx:
                rows = tx.all(sql + f"({', '.join('?' * len(part))})", part)
            yield from ((r[0], bytes(r[1]), None if r[2] is None else bytes(r[2])) for r in rows)

    # ---------------------------------------------------------------- keys
    def create_key(self, actor: Actor, name: str, role: str) -> str:
        """A new key -> its secret (shown once; only its sha256 is stored)."""
        if role not in ROLES:
            raise UserError(f"unknown role {role!r}; known: {', '.join(ROLES)}")
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        with self.db.transaction() as tx:
            tx.lock_changes()  # check-then-insert: one writer at a time
            if tx.one("SELECT 1 FROM api_keys WHERE name = ?", (name,)):
                raise Conflict(f"a key named {name!r} exists (revoked or not): choose another name")
            tx.insert("INSERT INTO api_keys (name, role, key_hash, prefix, created) VALUES (?, ?, ?, ?, ?)",
                      (name, role, hash_key(secret), secret[:8], now()))
            self._audit(tx, actor, "key.create", name, {"role": role})
        return secret

    def keys(self) -> list[dict]:
        with self.db.read() as tx:
            rows = tx.all("SELECT name, role, prefix, created, revoked FROM api_keys ORDER BY id")
        return [{"name": r[0], "role": r[1], "prefix": r[2], "created": r[3], "revoked": r[4]} for r in rows]

    def revoke_key(self, actor: Actor, name: str) -> None:
        with self.db.transaction() as tx:
            if tx.execute("UPDATE api_keys SET revoked = ? WHERE name = ? AND revoked IS NULL", (now(), name)) == 0:
                if not tx.one("SELECT 1 FROM api_keys WHERE name = ?", (name,)):
                    raise NotFound(f"no key named {name!r}")
                return
            self._audit(tx, actor, "key.revoke", name)

    def authenticate(self, secret: str) -> Actor | None:
        """The actor of a valid, unrevoked key; None otherwise."""
        with self.db.read() as tx:
            row = tx.one("SELECT name, role FROM api_keys WHERE key_hash = ? AND revoked IS NULL",
                         (hash_key(secret),))
        return Actor(row[0], row[1]) if row else None

    # ---------------------------------------------------------------- match records and reviews
    def record_match(self, actor: Actor, external_id: str | None, banks: list[str], result: list[dict],
                     image: tuple[str, bytes] | None, batch: str | None = None) -> dict:
        """Record one match call -> the record. image: (sha256, bytes) kept for review when anything matched."""
        match_id = uuid.uuid4().hex
        decision = next((r["decision"] for r in result if r["decision"] == "match"),
                        "review" if result else None)
        record = {"match_id": match_id, "created": now(), "key": actor.name, "external_id": external_id,
                  "banks": banks, "decision": decision, "matches": result}
        with self.db.transaction() as tx:
            if image:  # the same upload twice at once: one row
                tx.execute("INSERT INTO images (sha256, data) VALUES (?, ?) ON CONFLICT (sha256) DO NOTHING", image)
            tx.execute("INSERT INTO match_records (match_id, key_name, created, external_id, banks, image_sha256, "
                       "decision, result) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (match_id, actor.name, record["created"], external_id, json.dumps(banks),
                        image[0] if image else None, decision, json.dumps(result)))
            if batch is not None:
                self._audit(tx, actor, "match.batch", batch, {"match_id": match_id, "external_id": external_id})
        return record

    def match_record(self, match_id: str) -> dict:
        """A match record with its reviews and the sha256 of its kept image (None when none was kept)."""
        with self.db.read() as tx:
            row = tx.one("SELECT match_id, created, key_name, external_id, banks, decision, result, image_sha256 "
                         "FROM match_records WHERE match_id = ?", (match_id,))
            if row is None:
                raise NotFound(f"no match {match_id!r}")
            reviews = tx.all("SELECT bank, content_id, verdict, note, key_name, created FROM reviews "
                             "WHERE match_id = ? ORDER BY id", (match_id,))
        return {"match_id": row[0], "created": row[1], "key": row[2], "external_id": row[3],
                "banks": json.loads(row[4]), "decision": row[5], "matches": json.loads(row[6]),
                "image_sha256": row[7],
                "reviews": [{"bank": r[0], "content_id": r[1], "verdict": r[2], "note": r[3], "key": r[4],
                             "created": r[5]} for r in reviews]}

    def recent_matches(self, limit: int, decision: str | None = None, unreviewed: bool = False,
                       key: str | None = None) -> list[dict]:
        """Newest first: records with a decision (optionally one decision, only unreviewed, only one key's)."""
        sql, params = "SELECT match_id FROM match_records m WHERE decision IS NOT NULL", []
        if decision:
            sql, params = sql + " AND decision = ?", params + [decision]
        if key:
            sql, params = sql + " AND key_name = ?", params + [key]
        if unreviewed:
            sql += " AND NOT EXISTS (SELECT 1 FROM reviews r WHERE r.match_id = m.match_id)"
        with self.db.read() as tx:
            ids = [r[0] for r in tx.all(sql + " ORDER BY created DESC, match_id LIMIT ?", params + [limit])]
        return [self.match_record(i) for i in ids]

    def add_review(self, actor: Actor, match_id: str, bank: str, content_id: str, verdict: str, note: str) -> dict:
        with self.db.transaction() as tx:
            tx.insert("INSERT INTO reviews (match_id, bank, content_id, verdict, note, key_name, created) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?)", (match_id, bank, content_id, verdict, note, actor.name, now()))
            self._audit(tx, actor, "review.add", match_id, {"bank": bank, "content_id": content_id,
                                                             "verdict": verdict})
        return self.match_record(match_id)
