"""The files of an index directory besides the catalog: manifest.json and the FAISS index that caches it.

    manifest.json  format, model, descriptor (preprocessing, dim), local-feature settings, index type and the
                   params asked for, calibration, versions, and "faiss": size + sha256 of index.faiss, the
                   catalog generation it reflects, its resolved params and HNSW tombstones. Written last.
    index.faiss    faiss.serialize_index of the SearchIndex, written atomically before the manifest.
    whitening.npz  the SearchIndex's whitening (matching.whitening), when it has one: its vectors are stored
                   whitened by it, so the faiss record names it (size + sha256) and the two load together.

A manifest whose faiss record does not match index.faiss (an interrupted save, an edited file) or names an
older catalog generation means the FAISS index is stale: the engine rebuilds it from the catalog.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from copyscope.descriptors.errors import UserError
from copyscope.matching.index import IndexParams, SearchIndex
from copyscope.matching.whitening import Whitening
from copyscope.pipeline.atomic import atomic_write

RAW_FORMAT, WHITENED_FORMAT = 2, 3  # 3: an index that whitens (older copyscope refuses it, not search it raw)
READ_FORMATS = (RAW_FORMAT, WHITENED_FORMAT)
MANIFEST, FAISS_FILE, CATALOG, WHITENING_FILE = "manifest.json", "index.faiss", "catalog.sqlite", "whitening.npz"


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
    if not isinstance(manifest, dict) or manifest.get("format") not in READ_FORMATS:
        raise IndexCorruptError(f"{path}: not a format {' or '.join(map(str, READ_FORMATS))} index manifest; "
                                "rebuild the index with `copyscope index`")
    missing = {"model", "descriptor", "local", "index_type", "params", "calibration", "faiss"} - manifest.keys()
    if missing:
        raise IndexCorruptError(f"{path} lacks {', '.join(sorted(missing))}")
    return manifest


def write_manifest(directory: str | os.PathLike, manifest: dict[str, Any]) -> None:
    manifest = manifest | {"format": WHITENED_FORMAT if manifest.get("whitening") else RAW_FORMAT,
                           "faiss_version": faiss.__version__,
                           "numpy_version": np.__version__}
    with atomic_write(Path(directory) / MANIFEST, "w") as f:
        f.write(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def save_faiss(directory: str | os.PathLike, index: SearchIndex, generation: int) -> dict[str, Any]:
    """Write index.faiss (and whitening.npz) atomically -> its manifest record (size, sha256, generation,
    tombstones, and the whitening file's size and sha256)."""
    path = Path(directory) / FAISS_FILE
    with atomic_write(path) as f:
        f.write(index.serialize().tobytes())
    record = file_record(path) | {"generation": generation, "tombstones": sorted(index.tombstones)}
    if index.whitening is not None:
        with atomic_write(Path(directory) / WHITENING_FILE) as f:
            np.savez(f, **index.whitening.to_arrays())
        record["whitening"] = file_record(Path(directory) / WHITENING_FILE)
    return record


def _whole(path: Path, record: dict[str, Any]) -> bytes | None:
    """The file's bytes when it matches its {size, sha256} record, else None."""
    if not path.is_file():
        return None
    data = path.read_bytes()
    return data if len(data) == record["size"] and hashlib.sha256(data).hexdigest() == record["sha256"] else None


def _saved_index(directory: str | os.PathLike, manifest: dict[str, Any], **options) -> SearchIndex | None:
    """index.faiss as its manifest record describes it (read once, its sha256 checked), or None when it is
    missing or does not match (an interrupted save, an edited file)."""
    record = manifest["faiss"]
    data = _whole(Path(directory) / FAISS_FILE, record) if record else None
    if data is None:
        return None
    whitening = load_whitening(directory, manifest)
    if (record.get("whitening") or manifest.get("whitening")) and whitening is None:
        return None  # vectors stored whitened by a lost whitening, or raw in an index that whitens
    return SearchIndex.deserialize(np.frombuffer(data, np.uint8), index_type=manifest["index_type"],
                                   params=IndexParams(**record.get("params", manifest["params"])),
                                   whitening=whitening, **options)


def load_faiss(directory: str | os.PathLike, manifest: dict[str, Any], generation: int,
               use_gpu: bool = False) -> SearchIndex | None:
    """The saved SearchIndex if index.faiss is whole and reflects catalog `generation`, else None (stale)."""
    record = manifest["faiss"]
    if not record or record.get("generation") != generation:
        return None
    return _saved_index(directory, manifest, tombstones=record["tombstones"], use_gpu=use_gpu)


def load_whitening(directory: str | os.PathLike, manifest: dict[str, Any]) -> Whitening | None:
    """The whitening saved with index.faiss (also when the index is stale), None when none is whole."""
    record = manifest["faiss"]
    arrays = _whole(Path(directory) / WHITENING_FILE, record["whitening"]) if record and record.get("whitening") \
        else None
    if arrays is None:
        return None
    with np.load(io.BytesIO(arrays)) as z:
        return Whitening.from_arrays(z)


def load_trained(directory: str | os.PathLike, manifest: dict[str, Any]) -> SearchIndex | None:
    """A stale but whole ivfpq index.faiss, emptied: its trained quantizers, to refill from the catalog."""
    index = _saved_index(directory, manifest) if manifest["index_type"] == "ivfpq" else None
    if index is not None:
        index.index.reset()
    return index
