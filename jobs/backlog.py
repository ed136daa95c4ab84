"""Batch work on a service's banks without HTTP (pipeline.bank_engine), on Ray for large folders:

- `match QUERY_DIR --data DIR`: a backlog of uploads matched against the banks, each upload recorded as
  `POST /v1/match` records it;
- `banks import FOLDER --data DIR --bank NAME`: a folder added to a bank, content_id = image id."""

from __future__ import annotations

import csv
import os
import time

from tqdm import tqdm

from copyscope.pipeline.atomic import atomic_write
from copyscope.pipeline.bank_engine import DEFAULT_MATCH_THRESHOLD, DEFAULT_REVIEW_THRESHOLD, BankEngine
from copyscope.pipeline.bank_store import Actor
from copyscope.pipeline.embedding import EmbedSettings
from copyscope.pipeline.failures import Failure, write_failures_csv
from copyscope.pipeline.files import list_images, relative_path
from copyscope.pipeline.ray_runtime import choose_runner
from copyscope.jobs.match import failures_path

BACKLOG_ACTOR = Actor("backlog", "admin")
IMPORT_ACTOR = Actor("import", "admin")


def import_folder(folder: str | os.PathLike, data_dir: str | os.PathLike, db_url: str | None, bank: str, *,
                  model: str = "sscd", region_model: str | None = None, settings: EmbedSettings = EmbedSettings(),
                  ray_address: str | None = None, use_ray: bool | None = None, progress: bool = True) -> dict:
    """Add every image of `folder` to `bank` (created with the default thresholds when missing) -> a summary.
    model, region_model: those of a new database (BankEngine.open)."""
    start = time.perf_counter()
    listing = list_images(folder)
    engine = BankEngine.open(data_dir, db_url, model=model, region_model=region_model)
    bar = tqdm(total=len(listing.entries), desc=f"import into {bank}", unit="img", disable=not progress)
    try:
        if bank not in {b.name for b in engine.store.banks()}:
            engine.store.create_bank(IMPORT_ACTOR, bank, "", DEFAULT_MATCH_THRESHOLD, DEFAULT_REVIEW_THRESHOLD)
        with choose_runner(len(listing.entries), settings, ray_address, use_ray) as runner:
            added, failed = engine.import_files(IMPORT_ACTOR, bank, listing.entries, runner, progress=bar.update)
    finally:
        bar.close()
        engine.close()
    for failure in listing.failures:
        failed.append((failure.path, failure.reason))
    return {"bank": bank, "files": len(listing.entries) + len(listing.failures), "added": added,
            "failed": len(failed), "failures": [f"{name}: {reason}" for name, reason in failed[:20]],
            "seconds": round(time.perf_counter() - start, 3)}


def match_backlog(query_dir: str | os.PathLike, data_dir: str | os.PathLike, db_url: str | None = None, *,
                  banks: list[str] | None = None, out_csv: str | os.PathLike | None = None,
                  settings: EmbedSettings = EmbedSettings(), ray_address: str | None = None,
                  use_ray: bool | None = None, progress: bool = True) -> dict:
    """Match every image of `query_dir` (external_id: its image id) -> a summary; with `out_csv`, one row per
    decision: external_id,match_id,bank,content_id,score,reverse_score,decision (and OUT.failures.csv)."""
    start = time.perf_counter()
    listing = list_images(query_dir)
    engine = BankEngine.open(data_dir, db_url)
    bar = tqdm(total=len(listing.entries), desc="match uploads", unit="img", disable=not progress)
    try:
        with choose_runner(len(listing.entries), settings, ray_address, use_ray) as runner:
            records, failed = engine.match_files(BACKLOG_ACTOR, listing.entries, runner, banks,
                                                 progress=lambda stage, n: bar.update(n) if stage == "embed" else None)
    finally:
        bar.close()
        engine.close()
    failures = [Failure(relative_path(query_dir, f.path), f.reason) for f in listing.failures + failed]
    if out_csv is not None:
        with atomic_write(out_csv, "w") as f:
            w = csv.writer(f)
            w.writerow(["external_id", "match_id", "bank", "content_id", "score", "reverse_score", "decision"])
            for r in records:
                for m in r["matches"]:
                    w.writerow([r["external_id"], r["match_id"], m["bank"], m["content_id"], m["score"],
                                m["reverse_score"], m["decision"]])
        write_failures_csv(failures_path(out_csv), failures)
    return {"uploads": len(records) + len(failures), "recorded": len(records), "failed": len(failures),
            "match": sum(r["decision"] == "match" for r in records),
            "review": sum(r["decision"] == "review" for r in records),
            "seconds": round(time.perf_counter() - start, 3)}
