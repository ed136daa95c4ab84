"""Precomputed embeddings in Parquet: columns `id` (string) and `embedding` (list of float32, one model's dimension).

PATH is one .parquet file or a folder of them (read in name order). Every problem is a UserError that names
the file and the row: a missing column, a wrong dimension, a value that is not finite, an id given twice.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from copyscope.descriptors.errors import UserError


def parquet_files(path: str | os.PathLike) -> list[Path]:
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.parquet") if p.is_file())
        if not files:
            raise UserError(f"no .parquet files under {path}")
        return files
    if not path.is_file():
        raise UserError(f"no file or folder {path}: give a Parquet file (columns id, embedding) or a folder of them")
    return [path]


def read_embeddings(path: str | os.PathLike, dim: int) -> tuple[list[str], np.ndarray]:
    """PATH -> ids (N,) and (N, dim) float32 embeddings, L2-normalised (inner product = cosine)."""
    ids: list[str] = []
    parts = []
    seen: dict[str, tuple[Path, int]] = {}
    for file in parquet_files(path):
        try:
            table = pq.read_table(file)
        except (pa.ArrowInvalid, OSError) as e:
            raise UserError(f"{file}: not a readable Parquet file ({e})") from e
        missing = {"id", "embedding"} - set(table.column_names)
        if missing:
            raise UserError(f"{file}: missing column(s) {', '.join(sorted(missing))}; found {table.column_names}")
        names = table.column("id").to_pylist()
        column = table.column("embedding").combine_chunks()
        if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)
                or pa.types.is_fixed_size_list(column.type)):
            raise UserError(f"{file}: column embedding must be a list of floats, got {column.type}")
        lengths = column.value_lengths().to_numpy(zero_copy_only=False) if len(column) else np.zeros(0)
        for row, (name, length) in enumerate(zip(names, lengths)):
            if not isinstance(name, str) or not name or "\n" in name:
                raise UserError(f"{file} row {row}: id must be a non-empty string without line breaks, got {name!r}")
            if length != dim:
                raise UserError(f"{file} row {row} ({name!r}): embedding has {length} values, the model's "
                                f"dimension is {dim}")
            if name in seen:
                raise UserError(f"{file} row {row}: id {name!r} already given in {seen[name][0]} row {seen[name][1]}")
            seen[name] = (file, row)
        values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(names), dim)
        bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
        if len(bad):
            raise UserError(f"{file} row {bad[0]} ({names[bad[0]]!r}): embedding has a value that is not finite")
        norms = np.linalg.norm(values, axis=1)
        zero = np.flatnonzero(norms == 0)
        if len(zero):
            raise UserError(f"{file} row {zero[0]} ({names[zero[0]]!r}): embedding is all zeros")
        ids += names
        parts.append(values / norms[:, None])
    vectors = np.concatenate(parts) if parts else np.empty((0, dim), np.float32)
    return ids, np.ascontiguousarray(vectors, np.float32)


def embedding_stamp(vector: np.ndarray) -> str:
    """A stamp for a precomputed embedding (what says it changed on a re-run): a digest of its bytes."""
    return "embedding:" + hashlib.sha256(np.ascontiguousarray(vector, np.float32).tobytes()).hexdigest()[:32]
