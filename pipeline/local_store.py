"""Reference local features stored in an index's shards, fetched by image id with a shard cache."""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np

from copyscope.matching.local_features import LocalFeatures
from copyscope.pipeline.shards import ShardStore


class ReferenceFeatures:
    """Local features of an index's references. Holds at most `cache_shards` shards in memory."""

    def __init__(self, index_dir: str | os.PathLike, fingerprint: dict, cache_shards: int = 4):
        if not fingerprint.get("local"):
            raise ValueError(f"index {index_dir} stores no local features: re-index it with local features "
                             "to verify matches, or match with --rerank none")
        self.store = ShardStore(Path(index_dir) / "shards", fingerprint)
        self.method = fingerprint["local"]["method"]
        self.location: dict[str, tuple[int, int]] = {}
        for path in sorted(self.store.folder.glob("shard-*.npz")):
            shard = int(path.stem.split("-")[1])
            with np.load(path, allow_pickle=False) as z:
                for row, iid in enumerate(z["ids"]):
                    self.location[str(iid)] = (shard, row)
        self.cache: OrderedDict[int, list[LocalFeatures]] = OrderedDict()
        self.cache_shards = cache_shards

    def __getitem__(self, image_id: str) -> LocalFeatures:
        shard, row = self.location[image_id]
        if shard not in self.cache:
            self.cache[shard] = self.store.read_local(shard)[1]
            if len(self.cache) > self.cache_shards:
                self.cache.popitem(last=False)
        self.cache.move_to_end(shard)
        return self.cache[shard][row]
