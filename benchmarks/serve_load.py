"""Latency and throughput of `copyscope serve` under concurrent clients: mixed adds and matches against a bank.

    RAY_AUTH_MODE=disabled .venv/bin/python benchmarks/serve_load.py ../shared/photos --work /tmp/serve_load \
        --items 10000 --clients 4 --seconds 60 [--add-share 0.3] [--port 0] [--db URL]

Build (once; a re-run reuses WORK, which holds one bank size): the photos are split in three (seeded):
10 % targets, 10 % held out, the rest fillers. --items edited images (1-2 of the project's edits each:
crops, rescales, JPEG re-encoding, flips, rotations, colour jitter, greyscale, padding, text and emoji
overlays), one of each target and several of each filler, go to WORK/bank_images and are imported with
`copyscope banks import` into bank "load", a chunk at a time (an interrupted import resumes). WORK/queries
holds edits of the target items (copies) and of held-out photos (non-copies). Before each run,
WORK/add_images gets fresh edits of fillers, new content_ids that no earlier run added.

Run: `copyscope serve` in a subprocess on loopback (its log in WORK/server.log), a curator key, a warm-up,
then a baseline of one client matching sequentially, then --clients threads for --seconds, each request an
add (POST /v1/banks/load/items, probability --add-share) or a match (POST /v1/match). Prints per route the
count, req/s, p50 / p95 / p99 latency and errors (non-2xx or exceptions), the bank size before and after,
how many copy / non-copy queries got decision "match", and one JSON line. The server serialises engine
work, so latency under N clients is about N times the baseline.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import subprocess
import threading
import time
from multiprocessing import Pool
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np

from copyscope.jobs.serve_process import ServeProcess, command
from copyscope.pipeline.augment import apply_chain, sample_chain
from copyscope.pipeline.augment.stage import encode_jpeg
from copyscope.pipeline.decode import decode_image

BANK = "load"
EDIT_KINDS = ("crop", "rescale", "jpeg", "flip", "rotate", "color_jitter", "grayscale", "pad", "text", "emoji")
# Shares of the photos: targets have one bank item each (the copy queries are edits of it); held-out photos
# are never in the bank (the non-copy queries); fillers make up the rest of the bank, several items each.
# A copy of a photo with 3 or more items in the bank scores ~0: its inliers to them all count as a shared
# frame (matching.shared_frames.BURST_IMAGES).
TARGETS, HELD_OUT = 0.1, 0.1
COPY_QUERIES, OTHER_QUERIES = 200, 50
CHUNK = 2000  # images per `banks import` process
ADDS_PER_SECOND = 15  # the add pool holds this many images per second of --seconds
BASELINE_MATCHES, WARM_UP = 20, 3
ENV = dict(os.environ, RAY_AUTH_MODE="disabled")


# ---------------------------------------------------------------- images
@functools.lru_cache(maxsize=4)
def _decoded(path: str) -> np.ndarray:
    return decode_image(path)


def _write(job: tuple[str, str, tuple[int, ...]]) -> None:
    """job: (out path, source image, rng seed): 1-2 edits of the source, written as JPEG."""
    out, source, seed = job
    image = _decoded(source)
    chain = sample_chain(np.random.default_rng(seed), *image.shape[:2], n_edits=(1, 2), kinds=EDIT_KINDS)
    Path(out).write_bytes(encode_jpeg(apply_chain(image, chain), quality=90))


def write_all(jobs: list[tuple[str, str, tuple[int, ...]]], what: str) -> None:
    """Write the jobs whose file is missing, on every core."""
    todo = [j for j in jobs if not os.path.exists(j[0])]
    if not todo:
        return
    for folder in {os.path.dirname(j[0]) for j in todo}:
        os.makedirs(folder, exist_ok=True)
    start = time.perf_counter()
    with Pool(os.cpu_count()) as pool:
        for _ in pool.imap(_write, todo, chunksize=16):
            pass
    print(f"wrote {len(todo)} {what} in {time.perf_counter() - start:.0f} s", flush=True)


def split_photos(photos: Path, seed: int) -> tuple[list[str], list[str], list[str]]:
    """-> (targets, fillers, held out): a seeded split, TARGETS and HELD_OUT of the photos, fillers the rest."""
    names = sorted(str(p) for p in photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    order = [names[i] for i in np.random.default_rng([seed, 9]).permutation(len(names))]
    t, h = round(len(names) * TARGETS), round(len(names) * HELD_OUT)
    return order[:t], order[t + h:], order[t:t + h]


def bank_jobs(work: Path, targets: list[str], fillers: list[str], items: int, seed: int) -> list[tuple]:
    """Items 0..T-1: one edit of each target photo; the rest: edits of the fillers (consecutive items share a
    photo). Item i goes in chunk i // CHUNK."""
    rest = items - len(targets)
    sources = targets + [fillers[j * len(fillers) // rest] for j in range(rest)]
    return [(str(work / "bank_images" / f"{i // CHUNK:02d}" / f"b{i:06d}.jpg"), source, (seed, 0, i))
            for i, source in enumerate(sources)]


def query_jobs(work: Path, targets: list[tuple], held_out: list[str], seed: int) -> list[tuple]:
    """Edits of the target items (copies) and of held-out photos (non-copies)."""
    copies = [(str(work / "queries" / f"copy-{k:04d}.jpg"), targets[k % len(targets)][0], (seed, 1, k))
              for k in range(COPY_QUERIES)]
    others = [(str(work / "queries" / f"other-{k:04d}.jpg"), held_out[k % len(held_out)], (seed, 2, k))
              for k in range(OTHER_QUERIES)]
    return copies + others


def add_jobs(work: Path, fillers: list[str], first: int, n: int, seed: int) -> list[tuple]:
    """Add image k (content_id a{k}): an edit of a filler photo unlike any bank item's."""
    return [(str(work / "add_images" / f"a{k:06d}.jpg"), fillers[k % len(fillers)], (seed, 3, k))
            for k in range(first, first + n)]


# ---------------------------------------------------------------- the bank
def cli(*args: str, db: str | None, capture: bool = True) -> subprocess.CompletedProcess:
    cmd = command(*args, *(["--db", db] if db else []))
    done = subprocess.run(cmd, check=False, stdout=subprocess.PIPE, stderr=subprocess.PIPE if capture else None,
                          text=True, env=ENV)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}): {(done.stderr or '')[-3000:]}")
    return done


def bank_items(data: Path, db: str | None) -> int:
    banks = json.loads(cli("banks", "list", "--data", str(data), db=db).stdout)["banks"]
    return next((b["items"] for b in banks if b["name"] == BANK), 0)


def import_bank(work: Path, items: int, db: str | None) -> None:
    """Import the chunks of WORK/bank_images the bank does not hold yet (chunks go in order, so the
    bank size says which are done; a partly imported chunk is imported again, its items skipped)."""
    held = bank_items(work / "data", db)
    if held >= items:
        print(f"bank {BANK!r} holds {held} items: import skipped", flush=True)
        return
    chunks = sorted((work / "bank_images").iterdir())
    start = time.perf_counter()
    for c in range(held // CHUNK, len(chunks)):
        t = time.perf_counter()
        summary = json.loads(cli("banks", "import", str(chunks[c]), "--data", str(work / "data"), "--bank", BANK,
                                 db=db, capture=False).stdout.strip().splitlines()[-1])
        if summary["failed"]:
            raise SystemExit(f"import of {chunks[c]} failed for {summary['failed']} files: {summary['failures']}")
        print(f"imported chunk {c + 1}/{len(chunks)}: {summary['added']} added of {summary['files']} in "
              f"{time.perf_counter() - t:.0f} s", flush=True)
    added, seconds = bank_items(work / "data", db) - held, time.perf_counter() - start
    print(f"import: {added} items in {seconds:.0f} s ({added / seconds:.1f} items/s)", flush=True)


# ---------------------------------------------------------------- the server
@contextlib.contextmanager
def serving(data: Path, db: str | None, port: int, log: Path) -> Iterator[ServeProcess]:
    """`copyscope serve` in a subprocess (its log in `log`) once /readyz says so; SIGTERM (then kill) on exit."""
    log.unlink(missing_ok=True)
    server = ServeProcess(data, db, log=log, port=port, env=ENV)
    start = time.perf_counter()
    try:
        server.start(timeout=600)
    except RuntimeError as e:
        raise SystemExit(str(e)) from e
    print(f"server ready on port {server.port} in {time.perf_counter() - start:.0f} s", flush=True)
    try:
        yield server
    finally:
        try:
            server.stop()
        except subprocess.TimeoutExpired:
            print("the server did not stop in 60 s after SIGTERM: killed", flush=True)


# ---------------------------------------------------------------- load
class Load:
    """Requests of every client: (route, latency s, status or 0 for an exception, note) and the match decisions."""

    def __init__(self, url: str, key: str, queries: list[tuple[str, bytes]], adds: list[tuple[str, bytes]]):
        self.url, self.headers = url, {"Authorization": f"Bearer {key}"}
        self.queries, self.adds = queries, iter(adds)
        self.pool_size, self.pool_empty = len(adds), False
        self.lock = threading.Lock()
        self.requests: list[tuple[str, float, int, str]] = []
        self.decisions: list[tuple[str, str]] = []  # (query kind, decision)

    def next_add(self) -> tuple[str, bytes] | None:
        with self.lock:
            item = next(self.adds, None)
            self.pool_empty = self.pool_empty or item is None
            return item

    def request(self, client: httpx.Client, route: str, name: str, data: bytes, form: dict) -> None:
        start = time.perf_counter()
        try:
            r = client.post(route, files={"image": (f"{name}.jpg", data, "image/jpeg")}, data=form)
            status, note = r.status_code, "" if r.is_success else r.text[:300]
        except httpx.HTTPError as e:
            r, status, note = None, 0, f"{type(e).__name__}: {e}"
        seconds = time.perf_counter() - start
        with self.lock:
            self.requests.append(("add" if route.endswith("/items") else "match", seconds, status, note))
            if r is not None and r.status_code == 200 and route == "/v1/match":
                self.decisions.append((name.split("-")[0], r.json()["decision"]))

    def match(self, client: httpx.Client, rng: np.random.Generator) -> None:
        name, data = self.queries[int(rng.integers(len(self.queries)))]
        self.request(client, "/v1/match", name, data, {})

    def client(self, seed: int, deadline: float, add_share: float) -> None:
        rng = np.random.default_rng(seed)
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=120) as client:
            while time.perf_counter() < deadline:
                item = self.next_add() if rng.random() < add_share else None
                if item is None:
                    self.match(client, rng)
                else:
                    self.request(client, f"/v1/banks/{BANK}/items", item[0], item[1], {"content_id": item[0]})

    def run(self, clients: int, seconds: float, add_share: float) -> float:
        """--clients threads until the deadline -> the wall seconds until the last request ended."""
        start = time.perf_counter()
        threads = [threading.Thread(target=self.client, args=(k, start + seconds, add_share))
                   for k in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - start


def stats(rows: list[tuple[str, float, int, str]], seconds: float) -> dict:
    p = np.percentile(np.array([r[1] for r in rows]) * 1000, [50, 95, 99])
    return {"count": len(rows), "per_s": round(len(rows) / seconds, 2), "p50_ms": round(float(p[0]), 1),
            "p95_ms": round(float(p[1]), 1), "p99_ms": round(float(p[2]), 1),
            "errors": sum(not 200 <= r[2] < 300 for r in rows)}


def bank_size(client: httpx.Client) -> int:
    return client.get(f"/v1/banks/{BANK}").raise_for_status().json()["items"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("photos")
    p.add_argument("--work", required=True, help="scratch folder (outside the repository), one per --items")
    p.add_argument("--items", type=int, default=10_000, help="bank size")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--add-share", type=float, default=0.3, help="probability that a request is an add")
    p.add_argument("--port", type=int, default=0, help="0: a free port")
    p.add_argument("--db", default=None, help="database URL (default WORK/data/copyscope.sqlite)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    work, data = Path(args.work), Path(args.work) / "data"
    work.mkdir(parents=True, exist_ok=True)
    recorded = {"items": args.items, "seed": args.seed, "photos": str(Path(args.photos).resolve())}
    if (work / "build.json").exists() and json.loads((work / "build.json").read_text()) != recorded:
        raise SystemExit(f"{work} was built with {(work / 'build.json').read_text()}: give another --work")
    (work / "build.json").write_text(json.dumps(recorded))

    build_start = time.perf_counter()
    targets, fillers, held_out = split_photos(Path(args.photos), args.seed)
    if args.items <= len(targets):
        raise SystemExit(f"--items must exceed the {len(targets)} target photos")
    bank = bank_jobs(work, targets, fillers, args.items, args.seed)
    write_all(bank, "bank images")
    write_all(query_jobs(work, bank[:len(targets)], held_out, args.seed), "queries")
    import_bank(work, args.items, args.db)
    held = bank_items(data, args.db)
    pool = add_jobs(work, fillers, held - args.items, max(100, math.ceil(args.seconds * ADDS_PER_SECOND)),
                    args.seed)
    write_all(pool, "add images")
    print(f"build: {time.perf_counter() - build_start:.0f} s", flush=True)

    key = cli("keys", "create", "--data", str(data), "--role", "curator", "--name", f"load-{time.time_ns()}",
              db=args.db).stdout.strip()
    queries = [(q.stem, q.read_bytes()) for q in sorted((work / "queries").iterdir())]
    adds = [(Path(path).stem, Path(path).read_bytes()) for path, _, _ in pool]
    with serving(data, args.db, args.port, work / "server.log") as server:
        load = Load(server.url, key, queries, adds)
        with httpx.Client(base_url=server.url, headers=load.headers, timeout=120) as client:
            before = bank_size(client)
            rng = np.random.default_rng([args.seed, 4])
            for _ in range(WARM_UP):
                load.match(client, rng)
            load.requests.clear()
            start = time.perf_counter()
            for _ in range(BASELINE_MATCHES):
                load.match(client, rng)
            baseline = stats(load.requests, time.perf_counter() - start)
            load.requests.clear()
            seconds = load.run(args.clients, args.seconds, args.add_share)
            after = bank_size(client)

    routes = {route: stats(rows, seconds) for route in ("match", "add")
              if (rows := [r for r in load.requests if r[0] == route])}
    routes["total"] = stats(load.requests, seconds)
    found = {kind: (sum(d == "match" for k, d in load.decisions if k == kind),
                    sum(k == kind for k, _ in load.decisions)) for kind in ("copy", "other")}
    print(f"\nbank {BANK!r}: {before} items before, {after} after | {args.clients} clients for {seconds:.1f} s, "
          f"add share {args.add_share} | {os.cpu_count()} cores")
    print(f"{'route':<36}{'count':>7}{'req/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for name, s in [*routes.items(), ("match, 1 client sequential (baseline)", baseline)]:
        print(f"{name:<36}{s['count']:>7}{s['per_s']:>8.2f}{s['p50_ms']:>9.0f}{s['p95_ms']:>9.0f}"
              f"{s['p99_ms']:>9.0f}{s['errors']:>8}")
    print(f"decision 'match': {found['copy'][0]}/{found['copy'][1]} copy queries, "
          f"{found['other'][0]}/{found['other'][1]} non-copy queries")
    if load.pool_empty:
        print(f"the add pool ({load.pool_size} images) ran out: later adds were matches")
    errors = [r for r in load.requests if not 200 <= r[2] < 300]
    for route, _, status, note in errors[:5]:
        print(f"error: {route} {status} {note}")
    if errors:
        print(f"server log: {work / 'server.log'}")
    print(json.dumps({"items_before": before, "items_after": after, "clients": args.clients,
                      "seconds": round(seconds, 2), "add_share": args.add_share, **routes, "baseline_match": baseline,
                      "copies_matched": found["copy"], "non_copies_matched": found["other"],
                      "add_pool_ran_out": load.pool_empty}))


if __name__ == "__main__":
    main()
