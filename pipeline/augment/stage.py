"""Apply recorded edit chains to photos, one row at a time or as a Ray Data stage.

A row is {"id": str, "source": photo key, "chain": JSON list of [name, params]}; the result adds
"jpeg" (encoded bytes) and "error" ("" or the reason the row failed). Photos, the sources and the
"other" photos that edits name, come from a `PhotoPool`, so a replay sees the same pixels.
"""

from __future__ import annotations

import functools
import io
import json
import os
from typing import Iterable, Mapping

import numpy as np
from PIL import Image

from copyscope.pipeline.augment.chain import apply_chain
from copyscope.pipeline.augment.registry import EditContext
from copyscope.pipeline.decode import DecodeError, decode_image


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """(H, W, 3) uint8 RGB -> JPEG bytes (baseline, 4:2:0), the same bytes for the same pixels."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


class PhotoPool:
    """Photos by key, decoded and (with `reencode`) passed once through JPEG at that quality, the
    way a benchmark writes them, so an edit of a photo equals the same edit of its written file.
    Keys in `as_written` name files a benchmark wrote itself: decoded as they are, never re-encoded."""

    def __init__(self, paths: Mapping[str, str | os.PathLike], reencode: int | None = None, cache: int = 128,
                 as_written: Iterable[str] = ()):
        self.paths, self.reencode, self.as_written = dict(paths), reencode, frozenset(as_written)
        self._cached = functools.lru_cache(maxsize=cache)(self.load)

    def load(self, key: str) -> np.ndarray:
        """(H, W, 3) uint8 RGB; raises KeyError for an unknown key, DecodeError for a bad file."""
        if key not in self.paths:
            raise KeyError(f"photo {key!r} is not in the pool")
        image = decode_image(self.paths[key])
        if self.reencode is None or key in self.as_written:
            return image
        return decode_image(encode_jpeg(image, self.reencode))

    def context(self) -> EditContext:
        """An EditContext lending the pool's photos to edits (cached: other photos repeat)."""
        return EditContext(self._cached)


def render(pool: PhotoPool, ctx: EditContext, source: str, chain: str, quality: int) -> tuple[bytes, str]:
    """(JPEG bytes, "") of `source` edited by `chain` (JSON), or (b"", reason) if a photo fails."""
    try:
        image = apply_chain(pool.load(source), json.loads(chain), ctx)
    except DecodeError as e:
        return b"", e.reason
    return encode_jpeg(image, quality), ""


class ApplyChains:
    """Ray Data callable class: the pool is built once per actor.

    batch {"id", "source", "chain"} -> {"id", "jpeg" (object array of bytes), "error" (str)}.
    """

    def __init__(self, paths: Mapping[str, str], reencode: int | None = None, quality: int = 90,
                 as_written: Iterable[str] = ()):
        self.pool, self.quality = PhotoPool(paths, reencode, as_written=as_written), quality
        self.ctx = self.pool.context()

    def __call__(self, batch: dict) -> dict:
        results = [render(self.pool, self.ctx, s, c, self.quality) for s, c in zip(batch["source"], batch["chain"])]
        jpeg = np.empty(len(results), dtype=object)
        jpeg[:] = [r[0] for r in results]
        return {"id": np.asarray(batch["id"], dtype=object), "jpeg": jpeg,
                "error": np.asarray([r[1] for r in results], dtype=object)}


def apply_chains_local(rows: Iterable[dict], paths: Mapping[str, str], reencode: int | None = None,
                       quality: int = 90, as_written: Iterable[str] = ()) -> Iterable[dict]:
    """The same work as the Ray stage in this process, one row at a time (yields results in order)."""
    pool = PhotoPool(paths, reencode, as_written=as_written)
    ctx = pool.context()
    for row in rows:
        jpeg, error = render(pool, ctx, row["source"], row["chain"], quality)
        yield {"id": row["id"], "jpeg": jpeg, "error": error}


def apply_chains_ray(rows: list[dict], paths: Mapping[str, str], reencode: int | None = None,
                     quality: int = 90, actors: int = 2, batch_size: int = 8,
                     as_written: Iterable[str] = ()) -> Iterable[dict]:
    """The Ray Data stage over a running Ray: an actor pool of `actors`, each holding a PhotoPool.
    Yields result rows as they arrive (any order)."""
    import ray

    ds = ray.data.from_items(rows).map_batches(
        ApplyChains, fn_constructor_kwargs={"paths": dict(paths), "reencode": reencode, "quality": quality,
                                            "as_written": sorted(as_written)},
        batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=0.5)
    for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy"):
        for i in range(len(batch["id"])):
            yield {k: batch[k][i] for k in ("id", "jpeg", "error")}
