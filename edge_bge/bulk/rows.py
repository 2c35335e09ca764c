"""Reading bulk inputs: rows of .txt, .jsonl and .parquet files, and the parts they are cut into."""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BulkError, InputError

__all__ = ["FORMATS", "PART_ROWS", "REJECTS", "Part", "Row", "expand_inputs", "plan_parts", "read_rows", "scan"]

PART_ROWS = 10_000
REJECTS = "rejects.jsonl"
FORMATS = (".txt", ".jsonl", ".parquet")


@dataclass
class Row:
    """One input row: its position, id and text, or why it cannot be embedded."""

    index: int  # 0-based position in the file (physical line / row): decides the part
    row: int  # what users see: a text file's line number (1-based), a Parquet row index (0-based)
    id: str | int
    text: str | None
    reason: str | None = None


# ---- reading ---------------------------------------------------------------------------------------
def _text_value(value: Any, what: str) -> tuple[str | None, str | None]:
    if value is None:
        return None, f"no {what}"
    if not isinstance(value, str):
        return None, f"{what} is {type(value).__name__}, expected a string"
    if not value.strip():
        return None, f"{what} is empty"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None, f"{what} is not valid Unicode"
    return value, None


def _id_value(record: Any, id_field: str | None, row: int) -> tuple[str | int, str | None]:
    if id_field is None:
        return row, None
    value = record.get(id_field) if isinstance(record, dict) else None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return row, f"id field {id_field!r} is {'missing' if value is None else type(value).__name__}"
    return str(value), None


def read_rows(
    path: str | os.PathLike[str],
    *,
    field: str = "text",
    id_field: str | None = None,
    start: int = 0,
    offset: int = 0,
    limit: int | None = None,
) -> Iterator[Row]:
    """The rows of one input file, streamed; blank lines of text files are not rows.

    ``start``/``offset``/``limit``: begin at physical row ``start`` (at byte ``offset`` of a text
    file) and stop after ``limit`` physical rows: one part, read on its own."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        yield from _parquet_rows(path, field, id_field, start, limit)
        return
    end = None if limit is None else start + limit
    with path.open("rb") as f:
        f.seek(offset)
        for index, raw in enumerate(f, start):
            if end is not None and index >= end:
                return
            line = raw.rstrip(b"\r\n")
            if not line.strip():
                continue
            try:
                decoded = line.decode("utf-8")
            except UnicodeDecodeError as e:
                yield Row(index, index + 1, index + 1, None, f"not UTF-8 (byte {e.start})")
                continue
            if suffix == ".txt":
                text, reason = _text_value(decoded, "the line")
                yield Row(index, index + 1, index + 1, text, reason)
                continue
            try:
                record = json.loads(decoded)
            except json.JSONDecodeError as e:
                yield Row(index, index + 1, index + 1, None, f"not valid JSON ({e.msg})")
                continue
            if not isinstance(record, dict):
                yield Row(index, index + 1, index + 1, None, "not a JSON object")
                continue
            ident, bad_id = _id_value(record, id_field, index + 1)
            text, reason = _text_value(record.get(field), f"field {field!r}")
            yield Row(index, index + 1, ident, text, reason or bad_id)


def _parquet_rows(path: Path, field: str, id_field: str | None, start: int, limit: int | None) -> Iterator[Row]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    names = set(pf.schema_arrow.names)
    if field not in names:
        raise BulkError(f"{path}: no column {field!r} (columns: {', '.join(sorted(names))})")
    if id_field is not None and id_field not in names:
        raise BulkError(f"{path}: no column {id_field!r} for ids")
    end = None if limit is None else start + limit
    index = 0
    columns = [field] if id_field is None else [field, id_field]
    for batch in pf.iter_batches(columns=columns, batch_size=4096):
        if index + batch.num_rows <= start:
            index += batch.num_rows
            continue
        texts = batch.column(0).to_pylist()
        ids = batch.column(1).to_pylist() if id_field is not None else [None] * len(texts)
        for text, ident in zip(texts, ids, strict=True):
            if end is not None and index >= end:
                return
            if index >= start:
                value, reason = _text_value(text, f"column {field!r}")
                key, bad_id = _id_value({id_field: ident} if id_field else None, id_field, index)
                yield Row(index, index, key, value, reason or bad_id)
            index += 1


def scan(path: Path, part_rows: int) -> tuple[int, list[int]]:
    """Physical rows of a file, and the byte offset where each part starts (0 for Parquet: by row)."""
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        rows = int(pq.ParquetFile(path).metadata.num_rows)
        return rows, [0] * ((rows + part_rows - 1) // part_rows)
    offsets: list[int] = []
    rows = position = 0
    with path.open("rb") as f:
        for raw in f:
            if rows % part_rows == 0:
                offsets.append(position)
            rows += 1
            position += len(raw)
    return rows, offsets


def expand_inputs(patterns: Sequence[str]) -> list[Path]:
    """Files named or matched by glob patterns, in the order given (each pattern's matches sorted)."""
    files: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise BulkError(f"--input {pattern}: no file matches")
        for match in matches:
            path = Path(match)
            if path.suffix.lower() not in FORMATS:
                raise BulkError(f"--input {match}: expected .txt, .jsonl or .parquet")
            if not path.is_file() or not os.access(path, os.R_OK):
                raise BulkError(f"--input {match}: not a readable file")
            if path.resolve() not in (f.resolve() for f in files):
                files.append(path)
    return files


def _part_name(k: int, j: int) -> str:
    return f"part-{k:05d}-{j:05d}.parquet"


@dataclass(frozen=True)
class Part:
    """Physical rows ``start`` .. ``start + rows - 1`` of input ``path`` (beginning at byte ``offset``)."""

    name: str
    path: Path
    start: int
    offset: int
    rows: int


def plan_parts(files: Sequence[Path], scans: Sequence[tuple[int, list[int]]], part_rows: int) -> list[Part]:
    parts = []
    for k, (path, (rows, offsets)) in enumerate(zip(files, scans, strict=True)):
        for j, offset in enumerate(offsets):
            start = j * part_rows
            parts.append(Part(_part_name(k, j), path, start, offset, min(part_rows, rows - start)))
    return parts


def part_rows_of(part: Part, *, field: str, id_field: str | None) -> list[Row]:
    return list(
        read_rows(part.path, field=field, id_field=id_field, start=part.start, offset=part.offset, limit=part.rows)
    )


def split_rows(part: Part, rows: list[Row], skip_bad: bool) -> tuple[list[Row], list[Row]]:
    """Good and bad rows; a bad row stops the job unless ``skip_bad``."""
    bad = [r for r in rows if r.reason is not None]
    if bad and not skip_bad:
        first = bad[0]
        raise InputError(f"{part.path}:{first.row}: {first.reason} (--skip-bad sets such rows aside in {REJECTS})")
    return ([r for r in rows if r.reason is None] if bad else rows), bad
