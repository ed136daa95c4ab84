"""`copyscope serve` as real processes: durable across kill -9, consistent across processes sharing PostgreSQL.

Each test starts servers with tests/serve_process.py; the `servers` fixture kills every one of them at the
end, passed or failed.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import itertools
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field

import httpx
import pytest
from PIL import Image
from skimage import data

from copyscope.jobs.serve_process import command
from tests.serve_process import Servers, create_key, environment

BASES = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")
PROBES = ("astronaut", "coffee")
SEEDS = 3  # items added before the load
BANK = "known"
LOAD_SECONDS = 1  # at least, and until some of each request were acknowledged
PROPAGATION_LIMIT = 2.0  # seconds for a write through one server to show through another


# ---------------------------------------------------------------- images
@functools.cache
def photo(name: str) -> Image.Image:
    image = Image.fromarray(getattr(data, name)()).convert("RGB")
    image.thumbnail((288, 288))
    return image


def jpeg(image: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def variant(i: int) -> bytes:
    """The i-th distinct item image: a base photo cut by a few pixels more or less, re-encoded."""
    image = photo(BASES[i % len(BASES)])
    k = i // len(BASES)
    w, h = image.size
    left, top, cut = 4 * (k % 5), 3 * (k % 5), 4 * (k // 5)
    return jpeg(image.crop((left, top, w - cut, h - cut)), 92 - k % 7)


def edited_copy(name: str) -> bytes:
    """What an uploader makes of a base photo: a centre crop, smaller, re-encoded harder."""
    image = photo(name)
    w, h = image.size
    crop = image.crop((w // 10, h // 10, w - w // 10, h - h // 10)).resize((w * 2 // 3, h * 2 // 3))
    return jpeg(crop, 60)


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


# ---------------------------------------------------------------- calls
def add(client: httpx.Client, content_id: str, image: bytes) -> httpx.Response:
    return client.post(f"/v1/banks/{BANK}/items", data={"content_id": content_id},
                       files={"image": (f"{content_id}.jpg", image, "image/jpeg")})


def match(client: httpx.Client, image: bytes, external_id: str | None = None) -> httpx.Response:
    return client.post("/v1/match", data={"external_id": external_id} if external_id else {},
                       files={"image": ("upload.jpg", image, "image/jpeg")})


def probe(client: httpx.Client) -> dict[str, list[tuple]]:
    """The server's answers to the probe uploads: per probe, (bank, content_id, decision, inliers, score,
    reverse_score) of each match."""
    out = {}
    for name in PROBES:
        response = match(client, edited_copy(name), f"probe-{name}")
        assert response.status_code == 200, response.text
        out[name] = sorted((m["bank"], m["content_id"], m["decision"], m["evidence"]["inliers"], m["score"],
                            m["reverse_score"]) for m in response.json()["matches"])
    return out


def assert_same_answers(got: dict, expected: dict) -> None:
    """The same matches for every probe, their scores within 1e-6."""
    for name in PROBES:
        assert [m[:4] for m in got[name]] == [m[:4] for m in expected[name]], name
        for g, e in zip(got[name], expected[name]):
            assert g[4:] == pytest.approx(e[4:], abs=1e-6), (name, g, e)


def matched(client: httpx.Client, image: bytes) -> set[str]:
    response = match(client, image)
    assert response.status_code == 200, response.text
    return {m["content_id"] for m in response.json()["matches"]}


def applied(client: httpx.Client) -> int:
    """The last change of the database's change log that the server's engine applied."""
    return client.get("/readyz").json()["change"]


def held(client: httpx.Client) -> int:
    """How many items the server's engine holds in memory."""
    return client.get("/readyz").json()["items"]


def stored(client: httpx.Client) -> int:
    """How many items the database holds in the server's banks."""
    return sum(b["items"] for b in client.get("/v1/banks").json()["banks"] if b["enabled"])


def elapsed_until(condition, since: float, limit: float = 15) -> float:
    """Poll `condition()` until true -> seconds from `since` (a time.monotonic()) to the poll that saw it."""
    while not condition():
        assert time.monotonic() - since < limit, f"not true after {limit} s"
        time.sleep(0.02)
    return time.monotonic() - since


# ---------------------------------------------------------------- fixtures
@pytest.fixture
def servers(tmp_path):
    started = Servers(tmp_path)
    yield started
    started.kill_all()


# ---------------------------------------------------------------- kill -9 under load
@dataclass
class Ledger:
    """What the clients sent and what the server acknowledged (a 2xx response), shared by the load threads."""

    sent: dict[str, str] = field(default_factory=dict)      # content_id -> sha256 of every add sent
    added: dict[str, str] = field(default_factory=dict)     # acknowledged adds
    deletable: list[str] = field(default_factory=list)      # acknowledged adds the deleter may take
    deleted: set[str] = field(default_factory=set)          # acknowledged deletes
    matches: dict[str, dict] = field(default_factory=dict)  # match_id -> the acknowledged record
    in_flight: dict[str, str | None] = field(default_factory=dict)  # role -> content_id of its request
    problems: list[str] = field(default_factory=list)       # unexpected responses or exceptions
    lock: threading.Lock = field(default_factory=threading.Lock)
    counter: itertools.count = field(default_factory=lambda: itertools.count(100))  # variant() of the load


def load(client: httpx.Client, ledger: Ledger, stop: threading.Event, role: str) -> None:
    """One client thread: `role` is keep (adds), temp (adds the deleter deletes), delete or match."""
    while not stop.is_set():
        with ledger.lock:
            n = next(ledger.counter)
            if role == "delete":
                content_id = ledger.deletable.pop(0) if ledger.deletable else None
            else:
                content_id = f"{role}-{n}" if role != "match" else None
                image = edited_copy(PROBES[n % len(PROBES)]) if role == "match" else variant(n)
                if content_id:
                    ledger.sent[content_id] = sha256(image)
            if role != "delete" or content_id:
                ledger.in_flight[role] = content_id
        if role == "delete" and content_id is None:
            time.sleep(0.02)
            continue
        try:
            if role == "delete":
                response = client.delete(f"/v1/banks/{BANK}/items/{content_id}")
            elif role == "match":
                response = match(client, image, f"load-{n}")
            else:
                response = add(client, content_id, image)
        except httpx.TransportError:
            continue  # the server is gone: this request is not acknowledged
        except Exception as e:
            ledger.problems.append(f"{role} {content_id}: {e!r}")
            return
        finally:
            with ledger.lock:
                ledger.in_flight.pop(role, None)
        with ledger.lock:
            if not response.is_success:
                ledger.problems.append(f"{role} {content_id}: {response.status_code} {response.text}")
            elif role == "delete":
                ledger.deleted.add(content_id)
            elif role == "match":
                ledger.matches[response.json()["match_id"]] = response.json()
            elif response.status_code != 201 or response.json()["sha256"] != ledger.sent[content_id]:
                ledger.problems.append(f"add {content_id}: {response.status_code} {response.text}")
            else:
                ledger.added[content_id] = ledger.sent[content_id]
                if role == "temp":
                    ledger.deletable.append(content_id)


def run_load_and_kill(server, key: str, ledger: Ledger) -> dict[str, str | None]:
    """Four client threads against `server` for LOAD_SECONDS and until each kind of request was acknowledged,
    then kill -9 while an add is in flight -> what was in flight at the kill."""
    stop = threading.Event()
    clients = {role: server.client(key) for role in ("keep", "temp", "delete", "match")}
    threads = [threading.Thread(target=load, args=(client, ledger, stop, role)) for role, client in clients.items()]
    for t in threads:
        t.start()
    try:
        time.sleep(LOAD_SECONDS)
        elapsed_until(lambda: len(ledger.added) >= SEEDS + 3 and ledger.deleted and ledger.matches,
                      time.monotonic(), limit=60)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with ledger.lock:
                if {"keep", "temp"} & ledger.in_flight.keys():
                    in_flight = dict(ledger.in_flight)
                    server.kill()
                    break
            time.sleep(0.005)
        else:
            pytest.fail("no add in flight for 10 s")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
        for client in clients.values():
            client.close()
    return in_flight


def assert_acknowledged_state(client: httpx.Client, ledger: Ledger, in_flight: dict[str, str | None]) -> None:
    """Every acknowledged add, delete and match is in the restarted server, with its audit row."""
    for content_id, digest in ledger.added.items():
        response = client.get(f"/v1/banks/{BANK}/items/{content_id}")
        if content_id in ledger.deleted:
            assert response.status_code == 404, (content_id, response.text)
        elif content_id == in_flight.get("delete"):  # its delete got no answer: it may have committed
            assert response.status_code in (200, 404), (content_id, response.text)
        else:
            assert response.status_code == 200, (content_id, response.text, in_flight)
            assert response.json()["sha256"] == digest
    for role, content_id in in_flight.items():  # not acknowledged: there or not, but never another image
        if role in ("keep", "temp"):
            response = client.get(f"/v1/banks/{BANK}/items/{content_id}")
            assert response.status_code in (200, 404)
            if response.status_code == 200:
                assert response.json()["sha256"] == ledger.sent[content_id]
    for match_id, record in ledger.matches.items():
        response = client.get(f"/v1/matches/{match_id}")
        assert response.status_code == 200, (match_id, response.text)
        got = response.json()
        assert {k: got[k] for k in record} == record
    entries = client.get("/v1/audit", params={"limit": 1000}).json()["entries"]
    audited = {(e["action"], e["target"]) for e in entries}
    assert {("bank.create", BANK)} | {("item.add", f"{BANK}/{c}") for c in ledger.added} <= audited
    assert {("item.delete", f"{BANK}/{c}") for c in ledger.deleted} <= audited
    assert held(client) == stored(client)  # the engine holds exactly what the database holds


@pytest.mark.parametrize("backend, cache", [("sqlite", "stale"), ("postgresql", "deleted")])
def test_kill_9_under_load_loses_no_acknowledged_write(servers, tmp_path, request, backend, cache):
    """Acknowledged writes survive kill -9; restarts answer as before, with the cache kept, stale or deleted."""
    db_url = request.getfixturevalue("postgres_url") if backend == "postgresql" else None  # else DATA's SQLite
    data = tmp_path / "data"
    key = create_key(data, db_url)
    server = servers(data, db_url).start()
    with server.client(key) as client:
        assert client.post("/v1/banks", json={"name": BANK, "review_threshold": 0.3}).status_code == 201
        for i in range(SEEDS):
            assert add(client, f"seed-{i}", variant(i)).status_code == 201
    ledger = Ledger(added={f"seed-{i}": sha256(variant(i)) for i in range(SEEDS)})

    in_flight = run_load_and_kill(server, key, ledger)
    assert not ledger.problems, ledger.problems
    assert in_flight and len(ledger.added) > SEEDS and ledger.deleted and ledger.matches, ledger
    stale = tmp_path / "stale-index"
    shutil.copytree(data / "index", stale)  # the cache as the kill left it

    with server.start().client(key) as client:
        assert not list((data / "tmp").glob("upload-*"))  # the killed process's uploads are not kept
        assert_acknowledged_state(client, ledger, in_flight)
        for role, content_id in in_flight.items():  # a client retries what got no answer: that is safe
            if role == "delete":
                assert client.delete(f"/v1/banks/{BANK}/items/{content_id}").status_code in (200, 404)
            elif role != "match":
                retry = add(client, content_id, variant(int(content_id.split("-")[1])))
                assert retry.status_code in (200, 201) and retry.json()["sha256"] == ledger.sent[content_id]
        assert add(client, "after-kill", variant(99)).status_code == 201  # the stale copy is now behind
        kept = next(c for c in ledger.added if c.startswith("keep-") and c not in ledger.deleted)
        assert client.delete(f"/v1/banks/{BANK}/items/{kept}").status_code == 200
        before = probe(client)
    assert all(before[name] for name in PROBES), before
    assert server.stop() == 0  # SIGTERM: requests drained, the engine closed

    with server.start().client(key) as client:  # a clean restart
        assert_same_answers(probe(client), before)
    assert server.stop() == 0
    shutil.rmtree(data / "index")
    if cache == "stale":
        shutil.copytree(stale, data / "index")
    with server.start().client(key) as client:  # the cache rebuilt from the database
        assert_same_answers(probe(client), before)
        assert held(client) == stored(client)


# ---------------------------------------------------------------- several processes, one PostgreSQL
def test_two_servers_on_one_postgresql_stay_consistent(servers, tmp_path, postgres_url, capsys):
    """A write acknowledged by one server is in the other's engine within 2 s (its change log applied), and a
    match started there from then on answers accordingly."""
    key = create_key(tmp_path / "a", postgres_url)
    a, b = servers(tmp_path / "a", postgres_url), servers(tmp_path / "b", postgres_url)
    a.start(), b.start()
    delays = {}

    def propagated(what: str, writer: httpx.Client, reader: httpx.Client) -> None:
        """Wait until `reader` applied every change `writer` had applied when its write returned."""
        acked, change = time.monotonic(), applied(writer)
        delays[what] = elapsed_until(lambda: applied(reader) >= change, acked)

    with a.client(key) as ca, b.client(key) as cb:
        assert ca.post("/v1/banks", json={"name": BANK}).status_code == 201
        for name in ("astronaut", "coffee"):
            assert add(ca, name, jpeg(photo(name), 90)).status_code == 201
            propagated(f"add {name} A->B", ca, cb)
            assert name in matched(cb, edited_copy(name))
        assert ca.delete(f"/v1/banks/{BANK}/items/coffee").status_code == 200
        propagated("delete A->B", ca, cb)
        assert held(cb) == 1 and "coffee" not in matched(cb, edited_copy("coffee"))
        assert cb.patch(f"/v1/banks/{BANK}", json={"enabled": False}).status_code == 200
        propagated("disable bank B->A", cb, ca)
        assert held(ca) == 0 and not matched(ca, edited_copy("astronaut"))
        assert cb.patch(f"/v1/banks/{BANK}", json={"enabled": True}).status_code == 200  # put back from the DB
        propagated("enable bank B->A", cb, ca)
        assert held(ca) == 1 and "astronaut" in matched(ca, edited_copy("astronaut"))
    with capsys.disabled():
        print("\ncross-process propagation (s): " + ", ".join(f"{k} {v:.2f}" for k, v in delays.items()))
    assert max(delays.values()) <= PROPAGATION_LIMIT, delays

    again = subprocess.run(servers(tmp_path / "a", postgres_url).argv(), capture_output=True, text=True,
                           timeout=60, env=environment())  # a second server on A's data folder
    assert again.returncode != 0 and "in use" in again.stderr, again.stderr


def test_backlog_through_the_cli_is_read_through_a_server(servers, tmp_path, postgres_url):
    """`copyscope match --data` with its own data folder on a running server's database: its records are the
    server's to read."""
    key = create_key(tmp_path / "data", postgres_url)
    queries = tmp_path / "queries"
    queries.mkdir()
    for name in ("astronaut", "chelsea"):
        (queries / f"copy-{name}.jpg").write_bytes(edited_copy(name))
    (queries / "unrelated.jpg").write_bytes(jpeg(Image.fromarray(data.camera()).convert("RGB"), 90))
    with servers(tmp_path / "data", postgres_url).start().client(key) as client:
        assert client.post("/v1/banks", json={"name": BANK}).status_code == 201
        for name in ("astronaut", "chelsea", "rocket"):
            assert add(client, name, jpeg(photo(name), 90)).status_code == 201

        out = tmp_path / "backlog.csv"
        run = subprocess.run(command("match", str(queries), "--data", str(tmp_path / "backlog-data"), "--db",
                                     postgres_url, "--out", str(out), "--quiet"),
                             capture_output=True, text=True, timeout=180, env=environment())
        assert run.returncode == 0, run.stderr
        rows = list(csv.DictReader(out.open()))
        assert {(r["external_id"], r["content_id"]) for r in rows} >= {("copy-astronaut", "astronaut"),
                                                                        ("copy-chelsea", "chelsea")}, rows
        assert "unrelated" not in {r["external_id"] for r in rows}
        for row in rows:
            record = client.get(f"/v1/matches/{row['match_id']}").json()
            assert record["external_id"] == row["external_id"] and record["key"] == "backlog"
            hit = next(m for m in record["matches"] if m["content_id"] == row["content_id"])
            assert hit["score"] == pytest.approx(float(row["score"])) and hit["decision"] == row["decision"]
        listed = {r["match_id"] for r in client.get("/v1/matches", params={"limit": 200}).json()["matches"]}
        assert {r["match_id"] for r in rows} <= listed


def test_a_server_outlives_a_postgresql_crash(servers, tmp_path, postgres_server, postgres_url):
    """PostgreSQL killed under a running server and restarted: the server is not ready while it is down, then
    answers again on new connections (no request fails) with nothing lost."""
    key = create_key(tmp_path / "data", postgres_url)
    with servers(tmp_path / "data", postgres_url).start().client(key) as client:
        assert client.post("/v1/banks", json={"name": BANK}).status_code == 201
        assert add(client, "astronaut", jpeg(photo("astronaut"), 90)).status_code == 201
        postgres_server.kill()
        down = client.get("/readyz")
        assert down.status_code == 503 and down.json()["error"]["code"] == "unavailable"
        refused = client.get(f"/v1/banks/{BANK}")  # the key cannot be checked: the service, not the client, failed
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        time.sleep(1)  # down long enough for the server's poller (every 0.25 s) to find its connection lost
        postgres_server.restart()
        assert add(client, "coffee", jpeg(photo("coffee"), 90)).status_code == 201
        assert client.get(f"/v1/banks/{BANK}/items/astronaut").status_code == 200
        assert "astronaut" in matched(client, edited_copy("astronaut"))
        assert client.get("/readyz").status_code == 200 and held(client) == 2
