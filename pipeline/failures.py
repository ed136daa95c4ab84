"""Failure records: an input that could not be processed, with the reason. Never silent."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from typing import Iterable

from copyscope.pipeline.atomic import atomic_write

FAILURE_FIELDS = ("path", "reason")


@dataclass(frozen=True)
class Failure:
    path: str
    reason: str


def write_failures_csv(path: str | os.PathLike, failures: Iterable[Failure]) -> int:
    """Write `path,reason` rows (sorted by path) atomically; returns how many were written."""
    rows = sorted(failures, key=lambda f: (f.path, f.reason))
    with atomic_write(path, "w") as f:
        w = csv.writer(f)
        w.writerow(FAILURE_FIELDS)
        w.writerows((r.path, r.reason) for r in rows)
    return len(rows)


def read_failures_csv(path: str | os.PathLike) -> list[Failure]:
    with open(path, newline="", encoding="utf-8") as f:
        return [Failure(r["path"], r["reason"]) for r in csv.DictReader(f)]
