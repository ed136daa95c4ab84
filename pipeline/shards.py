"""Descriptor shards: the resumable unit of an indexing job.

The sorted image listing is cut into shards of `shard_size` images. Each finished shard is one
`.npz` written atomically, holding its ids, file stamps (size, mtime), descriptors, failure
reasons and, when asked for, packed local features (keys `local_*`, read only when needed) and
digests of the decoded pixels (key `pixel_hash`), plus
the fingerprint of the model and settings that made it. On a restart, a shard whose file loads and
whose ids, stamps and fingerprint equal the plan's is reused; any other is recomputed.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from copyscope.matching.local_features import LocalFeatures, pack_many, unpack_many
from copyscope.pipeline.atomic import atomic_write

_LOCAL = "local_"


@dataclass(frozen=True)
class PlannedShard:
    index: int
    ids: list[str]
    paths: list[str]
    stamps: list[str]


@dataclass(frozen=True)
class Shard:
    """ids (n,), embeddings (n, D) float32 with zero rows where errors[i] is not "", and local
    features of each image (empty ones for failures) or an empty list when none were asked for;
    pixel_hashes: `stages.pixel_digest` of each image ("" for failures) or an empty list."""

    ids: list[str]
    stamps: list[str]
    embeddings: np.ndarray
    errors: list[str]
    local: list[LocalFeatures] = field(default_factory=list)
    pixel_hashes: list[str] = field(default_factory=list)


def file_stamp(path: str) -> str:
    """"size:mtime_ns" of a file, or "missing" when it cannot be stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    return f"{st.st_size}:{st.st_mtime_ns}"


def plan_shards(entries: list[tuple[str, str]], shard_size: int) -> list[PlannedShard]:
    """Cut (id, path) entries, sorted by id, into shards of `shard_size`."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    entries = sorted(entries)
    shards = []
    for k, start in enumerate(range(0, len(entries), shard_size)):
        chunk = entries[start : start + shard_size]
        shards.append(PlannedShard(k, [i for i, _ in chunk], [p for _, p in chunk],
                                   [file_stamp(p) for _, p in chunk]))
    return shards


class ShardStore:
    """A folder of shard files for one model fingerprint."""

    def __init__(self, folder: str | os.PathLike, fingerprint: dict):
        self.folder = Path(folder)
        self.fingerprint = json.dumps(fingerprint, sort_keys=True)

    def path(self, index: int) -> Path:
        return self.folder / f"shard-{index:06d}.npz"

    def is_complete(self, planned: PlannedShard) -> bool:
        shard = self._read(planned.index)
        return shard is not None and shard.ids == planned.ids and shard.stamps == planned.stamps

    def read(self, index: int) -> Shard:
        shard = self._read(index)
        if shard is None:
            raise FileNotFoundError(f"shard {self.path(index)} is missing, incomplete or from another model")
        return shard

    def write(self, index: int, shard: Shard) -> None:
        extra = {_LOCAL + k: v for k, v in pack_many(shard.local).items()} if shard.local else {}
        if shard.pixel_hashes:
            extra["pixel_hash"] = np.asarray(shard.pixel_hashes, dtype=str)
        with atomic_write(self.path(index)) as f:
            np.savez(f, ids=np.asarray(shard.ids, dtype=str), stamps=np.asarray(shard.stamps, dtype=str),
                     embeddings=shard.embeddings.astype(np.float32),
                     errors=np.asarray(shard.errors, dtype=str), fingerprint=np.asarray(self.fingerprint),
                     **extra)

    def read_local(self, index: int) -> tuple[list[str], list[LocalFeatures]]:
        """(ids, local features) of a shard written with local features."""
        with np.load(self.path(index), allow_pickle=False) as z:
            if _LOCAL + "offsets" not in z.files:
                raise ValueError(f"{self.path(index)} holds no local features")
            return [str(s) for s in z["ids"]], unpack_many({k[len(_LOCAL):]: z[k] for k in z.files
                                                            if k.startswith(_LOCAL)})

    def read_pixel_hashes(self, index: int) -> list[str]:
        """Pixel digests of a shard written with them, one per id ("" for failures)."""
        with np.load(self.path(index), allow_pickle=False) as z:
            if "pixel_hash" not in z.files:
                raise ValueError(f"{self.path(index)} holds no pixel hashes")
            return [str(s) for s in z["pixel_hash"]]

    def _read(self, index: int) -> Shard | None:
        """The shard if its file is whole and made by this fingerprint, else None (recompute it)."""
        try:
            with np.load(self.path(index), allow_pickle=False) as z:
                if str(z["fingerprint"]) != self.fingerprint:
                    return None
                ids = [str(s) for s in z["ids"]]
                shard = Shard(ids, [str(s) for s in z["stamps"]], z["embeddings"], [str(s) for s in z["errors"]])
        except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError):
            return None
        n = len(shard.ids)
        return shard if len(shard.stamps) == len(shard.errors) == shard.embeddings.shape[0] == n else None
