"""Banks matched online: one CopyIndex in memory kept in step with the bank database (pipeline.bank_store).

    engine = BankEngine.open("data")                       # or open("data", "postgresql://...")
    item, created = engine.add_item(actor, "known", "c1", {}, image_bytes)   # matchable when this returns
    record = engine.match(actor, upload_bytes)             # recorded; decisions by each bank's thresholds

The database is the source of truth. DATA/index is this process's cache of it: a CopyIndex whose
references are named by item key and hold exactly the items that are enabled in an enabled bank.
Every write goes to the database first (one transaction with its audit and change rows), then the
engine applies the change log up to the write before the call returns; a poller applies what other
processes wrote. On open, the cache is reconciled with the database (missing items put back from their
stored descriptors, nothing embedded again; extra ones removed), so a process killed at any moment
restarts in step. One process owns a data folder (a lock file); several processes share a PostgreSQL
database, each with its own data folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np

from copyscope.descriptors.errors import UserError
from copyscope.matching.compact_features import compact
from copyscope.matching.local_features import LocalSpec, from_bytes, to_bytes
from copyscope.matching.reranking import RerankOptions
from copyscope.matching.verification import Verification
from copyscope.pipeline.bank_db import Database, default_url, without_password
from copyscope.pipeline.bank_store import ENGINE_SETTINGS, Actor, BankStore, Conflict, Item, NewItem, NotFound
from copyscope.pipeline.catalog import Reference
from copyscope.pipeline.decode import DecodeError, image_size
from copyscope.pipeline.engine import CopyIndex
from copyscope.pipeline.index_files import is_index_dir
from copyscope.pipeline.model_spec import ModelSpec, check_region_model, distinct_region_model
from copyscope.pipeline.runners import LocalRunner
from copyscope.pipeline.second_look import box_features
from copyscope.pipeline.verify_stage import verify_stored

log = logging.getLogger(__name__)

DEFAULT_MATCH_THRESHOLD = 0.9  # the dedup act threshold: precision >= 0.95 on held-out benchmarks
DEFAULT_REVIEW_THRESHOLD = 0.5
EVIDENCE_KEYS = ("inliers", "matches", "inlier_ratio", "query_box", "reference_box", "query_coverage",
                 "reference_coverage", "frame_inliers", "whole_image_score", "best_view_score", "mirrored", "second_look",
                 "look_box")


def decisions(rows: list[dict], items: dict[str, Item], thresholds: dict[str, tuple[float, float]]) -> list[dict]:
    """Engine explain rows of one query (MatchResult.explain) -> the service's matches, best first: rows whose
    item is in one of the banks of `thresholds` (bank -> (match, review) threshold) and that score at least
    that bank's review threshold."""
    out = []
    for row in rows:
        item = items.get(row["reference_id"])
        if item is None or item.bank not in thresholds:
            continue
        match_at, review_at = thresholds[item.bank]
        if row["score"] < review_at:
            continue
        evidence = {key: row[key] for key in EVIDENCE_KEYS if key in row}
        out.append({"bank": item.bank, "content_id": item.content_id, "score": round(row["score"], 6),
                    "reverse_score": None if row["reverse_score"] is None else round(row["reverse_score"], 6),
                    "decision": "match" if row["score"] >= match_at else "review", "metadata": item.metadata,
                    "sha256": item.sha256,
                    "evidence": evidence})
    return sorted(out, key=lambda m: -m["score"])


class BankEngine:
    """The matchable items of every enabled bank, in memory, over a data folder and a database."""

    def __init__(self, data_dir: Path, store: BankStore, index: CopyIndex, lock_file, *,
                 rerank: RerankOptions = RerankOptions()):
        self.data_dir, self.store, self.index = data_dir, store, index
        self.rerank = rerank
        self.runner = LocalRunner()
        self.applied = 0  # the last change of the log this engine reflects
        self._lock = SharedLock()  # matches share it; changes to the index take it alone
        self._lock_file = lock_file
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    @classmethod
    def open(cls, data_dir: str | os.PathLike, db_url: str | None = None, *, model: str = "sscd",
             local: LocalSpec | None = LocalSpec(), region_model: str | None = None, **options) -> BankEngine:
        """Open (or create) a data folder over `db_url` (default: DATA/copyscope.sqlite). The first open of a
        database records its model, local features and region model (None: the model; CopyIndex.create); later
        opens use those (`model` and `region_model` are then ignored)."""
        data_dir = Path(data_dir).resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        lock_file = _lock(data_dir)
        shutil.rmtree(data_dir / "tmp", ignore_errors=True)  # uploads of a process killed mid-request
        db = None
        try:
            db = Database.connect(db_url or default_url(data_dir))
            store = BankStore(db)
            spec = ModelSpec(model)
            region = distinct_region_model(spec, ModelSpec(region_model) if region_model else None)
            if region is not None:  # before the database records it
                check_region_model(spec.build(num_threads=1), region)
            wanted = {"model": spec.to_dict(), "local": local.to_dict() if local else None,
                      "region_model": region.to_dict() if region else None}
            settings = store.claim_setting(ENGINE_SETTINGS, wanted)
            index = _open_cache(data_dir / "index", settings, without_password(db.url))
            engine = cls(data_dir, store, index, lock_file, **options)
            engine.reconcile()
            return engine
        except BaseException:  # nothing half-open stays behind (a later open in this process would be "in use")
            if db is not None:
                db.close()
            lock_file.close()
            raise

    def close(self) -> None:
        self.stop_polling()
        with self._lock.writing():
            self.index.save()
            self.index.close()
            self.store.db.close()
        self._lock_file.close()

    # ---------------------------------------------------------------- in step with the database
    def reconcile(self) -> None:
        """Make the engine hold exactly the matchable items (read from their stored descriptors)."""
        with self._lock.writing():
            seq = self.store.last_change()  # changes after it are replayed by sync (puts/removes are idempotent)
            want = self.store.matchable_keys()
            have = set(self.index.names().values())
            self._put(sorted(want - have))
            self.index.remove(sorted(have - want))
            self.index.save()
            self.applied = seq
            self.sync()
            log.info("engine holds %d items (change %d)", len(self.index), self.applied)

    def sync(self) -> int:
        """Apply every change logged since the last one applied -> how many items it touched."""
        touched = 0
        with self._lock.writing():
            while True:
                seq, keys = self.store.changes_since(self.applied)
                if not keys:
                    return touched
                active = self._put(keys)
                self.index.remove([k for k in keys if k not in active])
                self.applied, touched = seq, touched + len(keys)

    def _put(self, keys: list[str]) -> set[str]:
        """Store the matchable ones among `keys` in the engine from the database -> those keys."""
        method = self.index.local.method if self.index.local else None
        refs = [Reference(key, "db", np.frombuffer(emb, np.float32), from_bytes(feat, method) if method else None)
                for key, emb, feat in self.store.matchable(keys)]
        for start in range(0, len(refs), 1000):
            self.index.add(refs[start:start + 1000])
        return {r.name for r in refs}

    def in_step(self) -> bool:
        return self.applied == self.store.last_change()

    def start_polling(self, interval: float = 0.25) -> None:
        """Apply other processes' writes within `interval` seconds (a daemon thread)."""
        def poll():
            while not self._stop.wait(interval):
                try:
                    if self.store.last_change() != self.applied:
                        self.sync()
                except Exception:  # a database hiccup: log it, keep polling; /readyz reports the lag
                    log.exception("syncing with the database failed")

        self._poller = threading.Thread(target=poll, name="copyscope-sync", daemon=True)
        self._poller.start()

    def stop_polling(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=5)

    # ---------------------------------------------------------------- writes
    def add_item(self, actor: Actor, bank: str, content_id: str, metadata: dict, image: bytes) -> tuple[Item, bool]:
        """Embed and store an image as an item of `bank` -> (item, created). The same content_id with the same
        image again is (the stored item, False); with another image, Conflict. DecodeError for a bad image."""
        digest = hashlib.sha256(image).hexdigest()
        existing = self.store.existing_item(bank, content_id, digest)
        if existing is not None:
            self.sync()  # a first add of it may have committed and not yet be applied
            return existing, False
        with _temp_file(self.data_dir, image) as path:  # embedding changes nothing: no lock
            refs, failed = next(self.index.references([(content_id, path)], self.runner, stamps={content_id: digest}))
        if failed:
            raise DecodeError(failed[0][2])
        out = self.store.add_item(actor, bank, content_id, metadata, self._new_item(refs[0], image, digest))
        self.sync()
        return out

    def import_files(self, actor: Actor, bank: str, files: list[tuple[str, str]], runner=None,
                     progress=None) -> tuple[int, list[tuple[str, str]]]:
        """Add (content_id, path) files to `bank` in batches embedded by `runner` (in process by default, Ray
        for large folders) -> (items added, (content_id, reason) of files that could not be added); a
        content_id held already by the same image is skipped, by another image is a failure."""
        runner = runner or self.runner
        added, failures = 0, []
        paths = dict(files)
        for refs, failed in self.index.references(files, runner, stamps={c: "file" for c, _ in files}):
            failures += [(name, reason) for name, _, reason in failed]
            for ref in refs:
                data = Path(paths[ref.name]).read_bytes()
                try:
                    _, created = self.store.add_item(actor, bank, ref.name, {}, self._new_item(
                        ref, data, hashlib.sha256(data).hexdigest()))
                    added += created
                except Conflict as e:
                    failures.append((ref.name, str(e)))
            self.sync()
            if progress:
                progress(len(refs) + len(failed))
        return added, failures

    def _new_item(self, ref: Reference, image: bytes, digest: str) -> NewItem:
        """What the store keeps of an embedded image: descriptor bytes and compact packed local features."""
        width, height = image_size(image)
        features = to_bytes(compact(ref.local, self.index.local)) if ref.local is not None else None
        return NewItem(digest, width, height, image, np.asarray(ref.embedding, np.float32).tobytes(), features)

    def write(self, operation, *args, **kwargs):
        """Run a store write (BankStore.update_item, delete_item, update_bank, delete_bank), then apply it."""
        with self._lock.writing():
            out = operation(*args, **kwargs)
            self.sync()
        return out

    # ---------------------------------------------------------------- match
    def match(self, actor: Actor, image: bytes, banks: list[str] | None = None, external_id: str | None = None,
              ) -> dict:
        """Match one upload against `banks` (default: every enabled bank) -> the recorded match:
        {"match_id", "created", "matches": [...best first]}. DecodeError for a bad image, NotFound for an
        unknown bank."""
        chosen = self._banks(banks)
        with self._lock.reading(), _temp_file(self.data_dir, image) as path:
            result = self.index.match([("upload", path)], self.runner, rerank=self._rerank_for(banks))
        if result.failures:
            raise DecodeError(result.failures[0].reason)
        return self._record(actor, result, chosen, {"upload": (external_id, lambda: image)})["upload"]

    def match_files(self, actor: Actor, images: list[tuple[str, str]], runner, banks: list[str] | None = None,
                    progress=None) -> tuple[list[dict], list]:
        """A backlog: (external_id, path) files matched in one batch through `runner` (e.g. on Ray), each
        recorded like an online match -> (records, failures)."""
        chosen = self._banks(banks)
        with self._lock.reading():
            result = self.index.match(images, runner, rerank=self._rerank_for(banks), progress=progress)
        uploads = {name: (name, lambda path=path: Path(path).read_bytes()) for name, path in images}
        records = self._record(actor, result, chosen, uploads, batch="backlog")
        return [records[name] for name in result.queries], result.failures

    def _record(self, actor: Actor, result, chosen: list, uploads: dict, batch: str | None = None) -> dict[str, dict]:
        """Decide and record each query of an engine result -> {query: record}. uploads: query -> (external_id,
        a function giving its bytes, read only when something matched and the upload is kept for review)."""
        thresholds = {b.name: (b.match_threshold, b.review_threshold) for b in chosen}
        items = self.store.items_by_key(list(dict.fromkeys(result.reference)))
        rows: dict[str, list[dict]] = {}
        for row in result.explain:
            rows.setdefault(row["query_id"], []).append(row)
        records = {}
        for name in result.queries:
            matches = decisions(rows.get(name, []), items, thresholds)
            external_id, read = uploads[name]
            data = read() if matches else None
            kept = (hashlib.sha256(data).hexdigest(), data) if matches else None
            records[name] = self.store.record_match(actor, external_id, [b.name for b in chosen], matches, kept,
                                                    batch=batch)
        return records

    def verification(self, query: bytes, reference: bytes, look_box: list[float] | None = None) -> Verification:
        """An upload against a bank image, verified as a match verified them: the upload's features extracted
        as for a match (with look_box, the evidence's box of a second look: that box of it looked at closer),
        the bank image's as an add stores them (for drawing the pair on the review page)."""
        with _temp_file(self.data_dir, query) as q_path, _temp_file(self.data_dir, reference) as r_path:
            q = self.index.embed_queries([("q", q_path)], self.runner, regions=0, local=True,
                                         full_size=True).local.get("q")
            if q is not None and look_box is not None:
                q = box_features({"q": q_path}, {"q": np.asarray(look_box)}, {"q": q.image_size}, self.index.local,
                                 self.index.prepare_options().max_pixels).get("q", q)
            refs, _ = next(self.index.references([("r", r_path)], self.runner, stamps={"r": "drawing"}))
        if q is None or not refs:
            raise DecodeError("a stored image no longer decodes")
        spec = self.index.local
        stored = from_bytes(to_bytes(compact(refs[0].local, spec)), spec.method)
        return verify_stored(q, stored, spec, self.rerank.geometry)

    def _rerank_for(self, banks: list[str] | None) -> RerankOptions:
        """Some banks only: no query is decided on its whole image, since the hit that would decide it may
        lie in a bank not asked for (the engine searches every enabled bank, then results are filtered)."""
        return self.rerank if banks is None else dataclasses.replace(self.rerank, settle=None)

    def _banks(self, names: list[str] | None):
        banks = {b.name: b for b in self.store.banks()}
        if names is None:
            return [b for b in banks.values() if b.enabled]
        unknown = [n for n in names if n not in banks]
        if unknown:
            raise NotFound(f"no bank {unknown[0]!r}")
        return [banks[n] for n in dict.fromkeys(names) if banks[n].enabled]

    def items_held(self) -> int:
        return len(self.index)


def _open_cache(index_dir: Path, settings: dict, db_name: str) -> CopyIndex:
    """The data folder's index over the database's items, made with the models and local features it records
    (a database made before region models records none: its model embeds the regions). Raw descriptors, not
    whitened: a cache rebuilt from the database must answer exactly as the one it replaces, and a collection
    whitening depends on the size the bank had when it was fitted (matching.whitening)."""
    region = settings.get("region_model")
    if not is_index_dir(index_dir):
        local = LocalSpec(**settings["local"]) if settings["local"] else None
        return CopyIndex.create(index_dir, ModelSpec.from_dict(settings["model"]), local=local,
                                region_model=ModelSpec.from_dict(region) if region else None, whitening=False)
    index = CopyIndex.open(index_dir)
    if any(index.manifest.get(k) != settings.get(k) for k in ("model", "local", "region_model")):
        index.close()
        raise UserError(f"{index_dir} was built for another model, region model or local features than the database "
                        f"{db_name} records ({settings}); it is only a cache: delete it, or use another --data")
    return index


class SharedLock:
    """Many readers or one writer; the writer may take it again (a write that syncs), and waiting writers
    go before new readers."""

    def __init__(self):
        self._cond = threading.Condition()
        self._readers = self._waiting = self._depth = 0
        self._writer: int | None = None

    @contextlib.contextmanager
    def reading(self):
        with self._cond:
            while self._writer is not None or self._waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def writing(self):
        me = threading.get_ident()
        with self._cond:
            if self._writer != me:
                self._waiting += 1
                while self._writer is not None or self._readers:
                    self._cond.wait()
                self._waiting -= 1
                self._writer = me
            self._depth += 1
        try:
            yield
        finally:
            with self._cond:
                self._depth -= 1
                if not self._depth:
                    self._writer = None
                    self._cond.notify_all()


@contextlib.contextmanager
def _temp_file(data_dir: Path, data: bytes):
    """The bytes in a private temp file under DATA/tmp (removed after, or by the next open after a kill)."""
    folder = data_dir / "tmp"
    folder.mkdir(exist_ok=True)
    fd, path = tempfile.mkstemp(dir=folder, prefix="upload-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _lock(data_dir: Path):
    """An exclusive lock on DATA/serve.lock for this process's life (released by the OS on any exit)."""
    f = open(data_dir / "serve.lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise UserError(f"{data_dir} is in use by another copyscope process: give each server its own --data "
                        "(they may share one --db)") from None
    return f
