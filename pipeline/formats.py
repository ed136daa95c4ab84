"""CSV formats of the field (DISC2021 conventions): matches, ground truth and query metadata.

- matches / predictions: header `query_id,reference_id,score`; float score, higher = more likely a copy.
- ground truth: header `query_id,reference_id`; an empty reference_id marks a query without a copy.
- query metadata: header `query_id,kind,transforms` (transforms is a JSON string, not read here).

Ids are image paths relative to their folder without extension, so they may hold any character;
the csv module quotes them as needed. Every malformed file raises `FormatError` naming the file,
the line and what is wrong. Extra columns are allowed and ignored.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from copyscope.descriptors.errors import UserError
from copyscope.pipeline.atomic import atomic_write

MATCH_FIELDS = ("query_id", "reference_id", "score")
GROUND_TRUTH_FIELDS = ("query_id", "reference_id")
QUERY_META_FIELDS = ("query_id", "kind")


class FormatError(UserError):
    """A malformed CSV file: `path`, 1-based `line` and the `reason`."""

    def __init__(self, path: str | os.PathLike, line: int, reason: str):
        self.path, self.line, self.reason = os.fspath(path), line, reason
        super().__init__(f"{self.path}, line {line}: {reason}")


@dataclass(frozen=True, eq=False)
class Matches:
    """Scored (query, reference) pairs as a struct of arrays, one entry per pair.

    query_ids, reference_ids: (N,) str; scores: (N,) float64. Iterating yields
    `(query_id, reference_id, score)` tuples, so a `Matches` can be passed to `write_matches`.
    """

    query_ids: np.ndarray
    reference_ids: np.ndarray
    scores: np.ndarray

    def __post_init__(self):
        shapes = {a.shape for a in (self.query_ids, self.reference_ids, self.scores)}
        if len(shapes) != 1 or self.scores.ndim != 1:
            raise ValueError(f"Matches arrays must be 1-D of one length, got shapes {sorted(shapes)}")

    def __len__(self) -> int:
        return len(self.scores)

    def __iter__(self) -> Iterator[tuple[str, str, float]]:
        return zip(self.query_ids.tolist(), self.reference_ids.tolist(), self.scores.tolist())


@dataclass(frozen=True, eq=False)
class GroundTruth:
    """Ground-truth rows as a struct of arrays, in file order.

    query_ids, reference_ids: (G,) str; reference_ids[i] == "" when query i has no copy.
    A query has one row per true reference (DISC2021 has at most one).
    """

    query_ids: np.ndarray
    reference_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.query_ids)

    @property
    def has_copy(self) -> np.ndarray:
        """(G,) bool: the row is a true (query, reference) pair."""
        return self.reference_ids != ""


def _str_array(values: list[str]) -> np.ndarray:
    return np.array(values, dtype=str) if values else np.empty(0, dtype="<U1")


def _format_score(score) -> str:
    """Shortest text that reads back to the same value; float32 scores keep their short form."""
    value = float(score)
    if not math.isfinite(value):
        raise ValueError(f"score must be a finite number, got {score!r}")
    return str(score) if isinstance(score, np.floating) else repr(value)


def write_matches(path: str | os.PathLike, rows: Iterable[tuple[str, str, float]]) -> int:
    """Write `query_id,reference_id,score` rows atomically, in the given order; returns the count."""
    n = 0
    with atomic_write(path, "w") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(MATCH_FIELDS)
        for query_id, reference_id, score in rows:
            w.writerow((query_id, reference_id, _format_score(score)))
            n += 1
    return n


def _rows(path: str | os.PathLike, required: tuple[str, ...]) -> Iterator[tuple[int, tuple[str, ...]]]:
    """Yield (line number, values of the `required` columns) for each non-blank data row.

    The first row must be a header holding every required column; each row must have as many
    fields as the header. Line numbers are 1-based physical lines (the last line of a record).
    """
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f, strict=True)
        try:
            header = next(reader, None)
            if header is None:
                raise FormatError(path, 1, f"empty file; expected header {','.join(required)}")
            missing = [c for c in required if c not in header]
            if missing:
                raise FormatError(path, reader.line_num, f"header {','.join(header)!r} lacks column(s) "
                                  f"{', '.join(missing)}; expected {','.join(required)}")
            index = [header.index(c) for c in required]
            for row in reader:
                if not row:
                    continue
                if len(row) != len(header):
                    raise FormatError(path, reader.line_num,
                                      f"expected {len(header)} fields ({','.join(header)}), got {len(row)}")
                yield reader.line_num, tuple(row[i] for i in index)
        except csv.Error as e:
            raise FormatError(path, reader.line_num, f"malformed CSV: {e}") from None
        except UnicodeDecodeError as e:
            raise FormatError(path, reader.line_num + 1, f"not UTF-8 text: {e.reason}") from None


def _parse_score(path, line: int, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise FormatError(path, line, f"score {text!r} is not a number") from None
    if not math.isfinite(value):
        raise FormatError(path, line, f"score {text!r} is not a finite number")
    return value


def read_matches(path: str | os.PathLike) -> Matches:
    """Read a `query_id,reference_id,score` CSV. A file with only the header gives empty arrays.

    Raises FormatError for a missing header or column, a wrong field count, an empty id, a score
    that is not a finite number, or a (query, reference) pair listed twice (naming both lines).
    """
    queries, references, scores = [], [], []
    first_line: dict[tuple[str, str], int] = {}
    for line, (query_id, reference_id, score) in _rows(path, MATCH_FIELDS):
        if not query_id or not reference_id:
            raise FormatError(path, line, f"empty {'query_id' if not query_id else 'reference_id'}")
        value = _parse_score(path, line, score)
        seen = first_line.setdefault((query_id, reference_id), line)
        if seen != line:
            raise FormatError(path, line, f"duplicate pair ({query_id!r}, {reference_id!r}), "
                              f"first on line {seen}")
        queries.append(query_id)
        references.append(reference_id)
        scores.append(value)
    return Matches(_str_array(queries), _str_array(references), np.array(scores, dtype=np.float64))


def read_ground_truth(path: str | os.PathLike) -> GroundTruth:
    """Read a `query_id,reference_id` CSV; an empty reference_id marks a query without a copy.

    A query may have several references on separate lines. Raises FormatError for a missing header
    or column, an empty query id, a line repeated, or a query listed both with and without a copy.
    """
    queries, references = [], []
    first_line: dict[tuple[str, str], int] = {}
    first_row_of_query: dict[str, tuple[int, bool]] = {}
    for line, (query_id, reference_id) in _rows(path, GROUND_TRUTH_FIELDS):
        if not query_id:
            raise FormatError(path, line, "empty query_id")
        seen = first_line.setdefault((query_id, reference_id), line)
        if seen != line:
            raise FormatError(path, line, f"duplicate row ({query_id!r}, {reference_id!r}), "
                              f"first on line {seen}")
        other, had_copy = first_row_of_query.setdefault(query_id, (line, bool(reference_id)))
        if had_copy != bool(reference_id):
            raise FormatError(path, line, f"query {query_id!r} is listed both with and without a "
                              f"copy (other row on line {other})")
        queries.append(query_id)
        references.append(reference_id)
    return GroundTruth(_str_array(queries), _str_array(references))


def read_query_meta(path: str | os.PathLike) -> dict[str, str]:
    """Read a `query_id,kind,transforms` CSV into {query_id: kind}.

    Raises FormatError for a missing header or column, an empty query id or kind, or a query listed
    twice. The transforms column is not needed here and is not parsed.
    """
    kinds: dict[str, str] = {}
    lines: dict[str, int] = {}
    for line, (query_id, kind) in _rows(path, QUERY_META_FIELDS):
        if not query_id or not kind:
            raise FormatError(path, line, f"empty {'query_id' if not query_id else 'kind'}")
        if query_id in kinds:
            raise FormatError(path, line, f"query {query_id!r} listed twice, first on line {lines[query_id]}")
        kinds[query_id], lines[query_id] = kind, line
    return kinds
