"""Dedup actions: a plan written first (atomically), then executed row by row, idempotently.

Each row acts on one non-keeper. Re-running a plan after an interruption finishes it: a row already
carried out is recognised (moved: source gone and target present; hardlinked: same inode as the
keeper; deleted: gone) and counted as such. A file whose size or mtime changed since planning is
never touched; neither is a keeper that changed. A "review" row (a copy reached through a link below
the act threshold) is listed for a person to look at and never acted on.
"""

from __future__ import annotations

import csv
import errno
import filecmp
import os
import shutil
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from copyscope.descriptors.errors import UserError
from copyscope.pipeline.atomic import atomic_write
from copyscope.pipeline.files import file_stamp

ACTIONS = ("report", "move", "hardlink", "delete")
REVIEW = "review"  # the action of a plan row that no action may touch
REFERENCE_PREFIX = "index:"


@dataclass(frozen=True)
class PlanRow:
    """action (one of ACTIONS, or REVIEW: not acted on) on `path` (relative to the folder), a copy of
    `keeper` (relative, or REFERENCE_PREFIX + id);
    target: where a move puts it (absolute); stamp / keeper_stamp: "size:mtime_ns" when planned."""

    action: str
    path: str
    keeper: str
    target: str
    bytes: int
    stamp: str
    keeper_stamp: str


def write_plan(path: str | os.PathLike, rows: list[PlanRow]) -> None:
    with atomic_write(path, "w") as f:
        w = csv.writer(f)
        w.writerow([fl.name for fl in fields(PlanRow)])
        w.writerows(astuple(r) for r in rows)


def read_plan(path: str | os.PathLike) -> list[PlanRow]:
    with open(path, newline="", encoding="utf-8") as f:
        return [PlanRow(**(r | {"bytes": int(r["bytes"])})) for r in csv.DictReader(f)]


def execute_plan(root: str | os.PathLike, rows: list[PlanRow], *, yes: bool = False,
                 on_row: Callable[[int], None] | None = None, progress: bool = False) -> list[str]:
    """Carry out every row under `root` -> (R,) outcomes: "done", "already done", "review: not acted on"
    or "skipped: <why>" / "failed: <why>". delete needs yes=True. on_row(i) runs after row i (a crash
    hook for tests)."""
    if any(r.action == "delete" for r in rows) and not yes:
        raise UserError("delete removes files for good: pass --yes to confirm")
    outcomes = []
    for i, row in enumerate(tqdm(rows, desc="act", unit="file", disable=not progress)):
        try:
            outcomes.append(_execute(Path(root), row))
        except OSError as e:
            outcomes.append(f"failed: {e.strerror or e}")
        if on_row:
            on_row(i)
    return outcomes


def _execute(root: Path, row: PlanRow) -> str:
    path = root / row.path
    if row.action == "report":
        return "skipped: report only"
    if row.action == REVIEW:
        return "review: not acted on"
    if row.action == "move":
        return _move(path, Path(row.target), row.stamp)
    if row.action == "delete":
        if not os.path.lexists(path):
            return "already done"
        return _unchanged(path, row.stamp) or _unlink(path)
    if row.action == "hardlink":
        if row.keeper.startswith(REFERENCE_PREFIX):
            return "skipped: keeper is in the reference index"
        return _hardlink(path, root / row.keeper, row.stamp, row.keeper_stamp)
    raise ValueError(f"unknown action {row.action!r} in plan; known: {', '.join(ACTIONS + (REVIEW,))}")


def _unchanged(path: Path, stamp: str) -> str:
    """"" when `path` still has its planned stamp, else the reason to skip it."""
    return "" if file_stamp(str(path)) == stamp else "skipped: changed since planning"


def _unlink(path: Path) -> str:
    path.unlink()
    return "done"


def _move(src: Path, dst: Path, stamp: str) -> str:
    if not src.exists():
        return "already done" if dst.exists() else "skipped: missing"
    if reason := _unchanged(src, stamp):
        return reason
    if dst.exists():  # an earlier run copied it across devices and stopped before removing the source
        return _unlink(src) if filecmp.cmp(src, dst, shallow=False) else "skipped: target exists"
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(src, dst)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        with atomic_write(dst) as f, open(src, "rb") as s:
            shutil.copyfileobj(s, f)
        shutil.copystat(src, dst)
        src.unlink()
    return "done"


def _hardlink(path: Path, keeper: Path, stamp: str, keeper_stamp: str) -> str:
    if not keeper.exists():
        return "skipped: keeper missing"
    if not path.exists():
        return "skipped: missing"
    if os.path.samefile(path, keeper):
        return "already done"
    if reason := _unchanged(path, stamp):
        return reason
    if file_stamp(str(keeper)) != keeper_stamp:
        return "skipped: keeper changed since planning"
    tmp = path.with_name(f".{path.name}.dedup-link")
    tmp.unlink(missing_ok=True)
    os.link(keeper, tmp)
    try:
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    return "done"
