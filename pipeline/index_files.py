"""The files of an index directory besides the catalog: manifest.json and the FAISS index that caches it.

    manifest.json  format, model, descriptor (preprocessing, dim), local-feature settings, index type and the
                   params asked for, calibration, versions, and "faiss": size + sha256 of index.faiss, the
                   catalog generation it reflects, its resolved params and HNSW tombstones. Written last.
    index.faiss    faiss.serialize_index of the SearchIndex, written atomically before the manifest.

A manifest whose faiss record does not match index.faiss (an interrupted save, an edited file) or names an
older catalog generation means the FAISS index is stale: the engine rebuilds it from the catalog.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from copyscope.descriptors.errors import UserError
from copyscope.matching.index import IndexParams, SearchIndex
from copyscope.pipeline.atomic import atomic_write

MANIFEST_FORMAT = 2
MANIFEST, FAISS_FILE, CATALOG = "manifest.json", "index.faiss", "catalog.sqlite"


class IndexCorruptError(UserError):
    """An index directory is incomplete or inconsistent (interrupted first save, edited manifest)."""


def file_record(path: Path) -> dict[str, Any]:
    """{size, sha256} of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return {"size": path.stat().st_size, "sha256": digest.hexdigest()}


def is_index_dir(directory: str | os.PathLike) -> bool:
    return (Path(directory) / MANIFEST).is_file()


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise IndexCorruptError(f"{path} is missing: not an index directory, or its first save did not finish; "
                                f"build one with `copyscope index REF_DIR --out {directory}`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IndexCorruptError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise IndexCorruptError(f"{path}: not a format {MANIFEST_FORMAT} index manifest; rebuild the index with "
                                "`copyscope index`")
    missing = {"model", "descriptor", "local", "index_type", "params", "calibration", "faiss"} - manifest.keys()
    if missing:
        raise IndexCorruptError(f"{path} lacks {', '.join(sorted(missing))}")
    return manifest


def write_manifest(directory: str | os.PathLike, manifest: dict[str, Any]) -> None:
    manifest = manifest | {"format": MANIFEST_FORMAT, "faiss_version": faiss.__version__,
                           "numpy_version": np.__version__}
    with atomic_write(Path(directory) / MANIFEST, "w") as f:
        f.write(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def save_faiss(directory: str | os.PathLike, index: SearchIndex, generation: int) -> dict[str, Any]:
    """Write index.faiss atomically -> its manifest record (size, sha256, generation, tombstones)."""
    path = Path(directory) / FAISS_FILE
    with atomic_write(path) as f:
        f.write(index.serialize().tobytes())
    return file_record(path) | {"generation": generation, "tombstones": sorted(index.tombstones)}


def _saved_index(directory: str | os.PathLike, manifest: dict[str, Any], **options) -> SearchIndex | None:
    """index.faiss as its manifest record describes it (read once, its sha256 checked), or None when it is
    missing or does not match (an interrupted save, an edited file)."""
    record, path = manifest["faiss"], Path(directory) / FAISS_FILE
    if not record or not path.is_file():
        return None
    data = path.read_bytes()
    if len(data) != record["size"] or hashlib.sha256(data).hexdigest() != record["sha256"]:
        return None
    return SearchIndex.deserialize(np.frombuffer(data, np.uint8), index_type=manifest["index_type"],
                                   params=IndexParams(**record.get("params", manifest["params"])), **options)


def load_faiss(directory: str | os.PathLike, manifest: dict[str, Any], generation: int,
               use_gpu: bool = False) -> SearchIndex | None:
    """The saved SearchIndex if index.faiss is whole and reflects catalog `generation`, else None (stale)."""
    record = manifest["faiss"]
    if not record or record.get("generation") != generation:
        return None
    return _saved_index(directory, manifest, tombstones=record["tombstones"], use_gpu=use_gpu)


def load_trained(directory: str | os.PathLike, manifest: dict[str, Any]) -> SearchIndex | None:
    """A stale but whole ivfpq index.faiss, emptied: its trained quantizers, to refill from the catalog."""
    index = _saved_index(directory, manifest) if manifest["index_type"] == "ivfpq" else None
    if index is not None:
        index.index.reset()
    return index
