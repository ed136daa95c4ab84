"""The service's storage (pipeline.bank_db, pipeline.bank_store) on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from copyscope.pipeline.bank_db import MIGRATIONS, Database
from copyscope.pipeline.bank_store import Actor, BankStore, Conflict, NewItem, NotFound

CURATOR = Actor("alice", "curator")


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    db = Database.connect(url)
    yield BankStore(db)
    db.close()


def new_item(seed: int) -> NewItem:
    rng = np.random.default_rng(seed)
    return NewItem(f"{seed:064x}", 64, 48, bytes([seed % 256]) * 10, rng.random(4, np.float32).tobytes(),
                   b"features")


def test_migrations_recorded_once(store):
    assert store.db.migrate() == MIGRATIONS[-1][0]
    assert Database.connect(store.db.url).migrate() == MIGRATIONS[-1][0]  # a second server starting: no-op
    with store.db.transaction() as tx:
        assert tx.one("SELECT COUNT(*) FROM schema_version")[0] == len(MIGRATIONS)


def test_bank_lifecycle_with_audit_and_changes(store):
    bank = store.create_bank(CURATOR, "known", "d", 0.9, 0.5)
    assert (bank.name, bank.enabled, bank.match_threshold) == ("known", True, 0.9)
    with pytest.raises(Conflict):
        store.create_bank(CURATOR, "known", "", 0.9, 0.5)
    item, created = store.add_item(CURATOR, "known", "c1", {"k": [1, 2]}, new_item(1))
    assert created and item.metadata == {"k": [1, 2]} and item.enabled
    again, created = store.add_item(CURATOR, "known", "c1", {}, new_item(1))
    assert not created and again.item_key == item.item_key
    with pytest.raises(Conflict):
        store.add_item(CURATOR, "known", "c1", {}, new_item(2))
    store.add_item(CURATOR, "known", "c2", {}, new_item(2))
    assert store.matchable_keys() == {item.item_key, store.item("known", "c2").item_key}

    store.update_bank(CURATOR, "known", {"enabled": False})
    assert store.matchable_keys() == set()
    seq, keys = store.changes_since(0)
    assert seq == store.last_change() and len(keys) == 2  # two adds, then the bank's two items again
    store.update_bank(CURATOR, "known", {"enabled": True, "match_threshold": 0.8})
    assert store.bank("known").match_threshold == 0.8

    store.update_item(CURATOR, "known", "c1", False)
    assert store.matchable_keys() == {store.item("known", "c2").item_key}
    rows = dict((k, (e, f)) for k, e, f in store.matchable([item.item_key, store.item("known", "c2").item_key]))
    assert list(rows) == [store.item("known", "c2").item_key]
    assert np.frombuffer(rows[store.item("known", "c2").item_key][0], np.float32).shape == (4,)

    assert store.image(new_item(1).sha256) == new_item(1).image
    store.delete_item(CURATOR, "known", "c1")
    with pytest.raises(NotFound):
        store.item("known", "c1")
    with pytest.raises(NotFound):  # a deleted item's pixels are not retained
        store.image(new_item(1).sha256)
    assert store.delete_bank(CURATOR, "known") == 1
    with pytest.raises(NotFound):
        store.bank("known")
    actions = [e["action"] for e in store.audit_log()][::-1]
    assert actions == ["bank.create", "item.add", "item.add", "bank.update", "bank.update", "item.update",
                       "item.delete", "bank.delete"]
    assert all(e["key"] == "alice" for e in store.audit_log())


def test_keys_hashed_and_revocable(store):
    secret = store.create_key(Actor("cli", "admin"), "m1", "matcher")
    assert secret.startswith("cs_") and store.authenticate(secret) == Actor("m1", "matcher")
    with store.db.transaction() as tx:
        assert secret not in str(tx.all("SELECT * FROM api_keys"))  # only its sha256
    assert store.authenticate(secret + "x") is None
    store.revoke_key(Actor("cli", "admin"), "m1")
    assert store.authenticate(secret) is None
    assert store.keys()[0]["revoked"] is not None
    with pytest.raises(Conflict):
        store.create_key(Actor("cli", "admin"), "m1", "admin")
    with pytest.raises(NotFound):
        store.revoke_key(Actor("cli", "admin"), "nobody")


def test_match_records_and_reviews(store):
    store.create_bank(CURATOR, "known", "", 0.9, 0.5)
    result = [{"bank": "known", "content_id": "c1", "score": 0.95, "decision": "match"}]
    record = store.record_match(Actor("m1", "matcher"), "upload-7", ["known"], result, ("ab" * 32, b"img"))
    assert record["decision"] == "match"
    store.record_match(Actor("m1", "matcher"), None, ["known"], [], None)  # recorded, no decision
    assert [r["match_id"] for r in store.recent_matches(10)] == [record["match_id"]]
    store.add_review(CURATOR, record["match_id"], "known", "c1", "confirmed", "same photo")
    stored = store.match_record(record["match_id"])
    assert stored["reviews"][0]["verdict"] == "confirmed" and stored["image_sha256"] == "ab" * 32
    assert store.recent_matches(10, unreviewed=True) == []
    assert store.image("ab" * 32) == b"img"
    with pytest.raises(NotFound):
        store.match_record("nope")


def test_change_rows_are_in_commit_order_under_concurrent_writers(store):
    """A reader that saw change N has seen every earlier one: seq order = commit order (the change lock)."""
    store.create_bank(CURATOR, "known", "", 0.9, 0.5)
    errors = []

    def writer(offset: int):
        try:
            for i in range(10):
                store.add_item(CURATOR, "known", f"c{offset}-{i}", {}, new_item(offset * 100 + i))
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    seen, last = set(), 0
    while any(t.is_alive() for t in threads) or last < store.last_change():
        last, keys = store.changes_since(last)
        seen.update(keys)
    for t in threads:
        t.join()
    assert not errors
    assert seen == store.matchable_keys() and len(seen) == 40


def test_racing_check_then_insert_writers_get_conflict_not_an_error(store):
    outcomes, start = [], threading.Barrier(4)

    def create():
        start.wait()
        try:
            store.create_bank(CURATOR, "same", "", 0.9, 0.5)
            outcomes.append("created")
        except Conflict:
            outcomes.append("conflict")
        except Exception as e:  # surfaced below
            outcomes.append(repr(e))

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["conflict"] * 3 + ["created"]


def test_connections_of_ended_threads_are_closed(store):
    for _ in range(5):  # a server's worker pool retires idle threads and starts new ones
        t = threading.Thread(target=store.banks)
        t.start()
        t.join()
    store.banks()
    assert len(store.db._all) <= 2  # this thread's, and at most the last ended thread's until the next open


def test_thresholds_are_checked_inside_the_write(store):
    from copyscope.pipeline.bank_store import InvalidChange

    store.create_bank(CURATOR, "known", "", 0.9, 0.5)
    store.update_bank(CURATOR, "known", {"match_threshold": 0.6})  # fine alone
    with pytest.raises(InvalidChange):  # fine alone too, but not after the first: nothing written
        store.update_bank(CURATOR, "known", {"review_threshold": 0.8})
    bank = store.bank("known")
    assert (bank.match_threshold, bank.review_threshold) == (0.6, 0.5)
    assert [e["action"] for e in store.audit_log()] == ["bank.update", "bank.create"]
