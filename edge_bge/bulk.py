"""Bulk embedding of whole corpora into Parquet parts: streaming, resumable, nothing lost.

``embed_files(bundle, inputs, out)`` reads .txt (one text per line), .jsonl (a field of each
object) and .parquet (a column) files, row by row, and writes ``out``:

    bulk.json                   the job: bundle (name, sha256 of its manifest), options, inputs
                                (path, size, mtime) and each finished part (rows, sha256)
    part-KKKKK-JJJJJ.parquet    rows J*part_rows .. (J+1)*part_rows-1 of input K (bad rows left out)
    rejects.jsonl               with skip_bad: {"file", "row", "reason"} for each bad row

Columns: ``id`` (the id field's value as a string, or the row: a text file's line number, a Parquet
file's row index), ``row``, ``embedding`` (fixed-size list of float32); with ``sparse``
``sparse_indices`` / ``sparse_values``; with ``colbert`` a list of vectors per row.

A part is written to a temporary name and renamed, then recorded in bulk.json (also replaced
atomically), so a killed job loses at most the part it was writing. Run again with the same
arguments, it skips the finished parts; with another bundle, other options or changed inputs it
refuses (``BulkError``) unless ``overwrite``. Memory holds one part's vectors and a few batches.
With ``ray`` the same parts are computed by Ray Data actors (``edge_bge.ray``).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import EdgeBGEError, InputError, ManifestError, ModelFilesError
from .manifest import MANIFEST_NAME, Kind, Manifest

__all__ = ["BulkError", "BulkResult", "Row", "embed_files", "read_rows", "PART_ROWS"]

PART_ROWS = 10_000
JOB = "bulk.json"
REJECTS = "rejects.jsonl"
FORMATS = (".txt", ".jsonl", ".parquet")


class BulkError(EdgeBGEError):
    """The job cannot start as asked: unreadable input, unusable bundle, output of another job (exit 2)."""


@dataclass
class Row:
    """One input row: its position, id and text, or why it cannot be embedded."""

    index: int  # 0-based position in the file (physical line / row): decides the part
    row: int  # what users see: a text file's line number (1-based), a Parquet row index (0-based)
    id: str | int
    text: str | None
    reason: str | None = None


@dataclass
class BulkResult:
    out: Path
    rows: int = 0  # embedded in this run
    skipped_rows: int = 0  # in parts finished by an earlier run
    rejected: int = 0
    parts_written: int = 0
    parts_skipped: int = 0
    seconds: float = 0.0
    rows_per_s: float = field(default=0.0)

    def line(self) -> str:
        done = f", {self.skipped_rows} in {self.parts_skipped} parts already done" if self.parts_skipped else ""
        bad = f", {self.rejected} rejected (see {REJECTS})" if self.rejected else ""
        return (
            f"embedded {self.rows} rows in {self.seconds:.1f} s ({self.rows_per_s:.1f} rows/s){bad}{done} -> {self.out}"
        )


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


# ---- the job ------------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _job(bundle: Path, manifest: Manifest, files: Sequence[Path], options: dict[str, Any]) -> dict[str, Any]:
    inputs = [{"path": str(p.resolve()), "size": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns} for p in files]
    return {
        "format": 1,
        "bundle": {"name": manifest.name, "sha256": _sha256(bundle / MANIFEST_NAME)},
        "options": options,
        "inputs": inputs,
    }


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    what = []
    if old.get("bundle") != new["bundle"]:
        what.append(f"the bundle ({old.get('bundle', {}).get('name')} -> {new['bundle']['name']})")
    if old.get("options") != new["options"]:
        what.append("the options")
    if old.get("inputs") != new["inputs"]:
        before = {i["path"]: i for i in old.get("inputs", [])}
        changed = [i["path"] for i in new["inputs"] if before.get(i["path"]) != i] or ["the list of inputs"]
        what.append("inputs changed: " + ", ".join(changed[:3]))
    return what


def _prepare_out(out: Path, job: dict[str, Any], overwrite: bool) -> dict[str, Any]:
    """The finished parts to keep; refuses an output that belongs to another job."""
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / JOB
    ours = [*out.glob("part-*.parquet"), *out.glob(".part-*.tmp"), out / REJECTS, out / f".{JOB}.tmp"]
    if state_path.exists():
        try:
            old = json.loads(state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise BulkError(f"{state_path} is unreadable ({e}); pass --overwrite to start again") from None
        differs = _differences(old, job)
        if differs and not overwrite:
            raise BulkError(
                f"{out} holds the output of another job ({'; '.join(differs)}); "
                "use another --out, or --overwrite to replace it"
            )
        if not differs:
            parts = {
                name: part
                for name, part in old.get("parts", {}).items()
                if (out / name).is_file() and (out / name).stat().st_size == part.get("bytes")
            }
            for stale in out.glob(".part-*.tmp"):
                stale.unlink()
            return parts
    elif any(p for p in out.iterdir()) and not overwrite:
        raise BulkError(f"{out} is not empty and holds no {JOB}: not an output of edge-bge embed; use another --out")
    for path in ours + [state_path]:
        if path.exists():
            path.unlink()
    return {}


class _Writer:
    """Parts, rejects and bulk.json in the output directory."""

    def __init__(self, out: Path, job: dict[str, Any], parts: dict[str, Any], dim: int) -> None:
        self.out, self.job, self.parts, self.dim = out, job, parts, dim
        self._save()
        # rejects of parts that were never finished are dropped: those parts run again
        rejects = out / REJECTS
        if rejects.exists():
            kept = [
                line
                for line in rejects.read_text(encoding="utf-8").splitlines()
                if line and json.loads(line).get("part") in parts
            ]
            _write_atomic(rejects, "".join(f"{line}\n" for line in kept).encode("utf-8"))

    def _save(self) -> None:
        state = {**self.job, "parts": self.parts}
        _write_atomic(self.out / JOB, json.dumps(state, indent=1, sort_keys=True).encode("utf-8"))

    def part(self, name: str, source: str, rows: Sequence[Row], outputs: dict[str, Any], bad: Sequence[Row]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        ids = [r.id for r in rows]
        id_array = (
            pa.array([str(i) for i in ids]) if any(isinstance(i, str) for i in ids) else pa.array(ids, pa.int64())
        )
        columns: dict[str, Any] = {"id": id_array, "row": pa.array([r.row for r in rows], pa.int64())}
        dense = outputs.get("embedding")
        if dense is not None:
            flat = pa.array(np.ascontiguousarray(dense, dtype=np.float32).reshape(-1))
            columns["embedding"] = pa.FixedSizeListArray.from_arrays(flat, self.dim)
        if "sparse" in outputs:
            weights = outputs["sparse"]
            columns["sparse_indices"] = pa.array([list(w.keys()) for w in weights], pa.list_(pa.int32()))
            columns["sparse_values"] = pa.array([list(w.values()) for w in weights], pa.list_(pa.float32()))
        if "colbert" in outputs:
            vector = pa.list_(pa.float32(), self.dim)
            columns["colbert"] = pa.array([v.tolist() for v in outputs["colbert"]], pa.list_(vector))
        path = self.out / name
        tmp = self.out / f".{name}.tmp"
        pq.write_table(pa.table(columns), tmp)
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        if bad:
            with (self.out / REJECTS).open("a", encoding="utf-8") as f:
                for r in bad:
                    f.write(json.dumps({"file": source, "row": r.row, "reason": r.reason, "part": name}) + "\n")
        self.parts[name] = {
            "input": source,
            "rows": len(rows),
            "rejected": len(bad),
            "bytes": path.stat().st_size,
            "sha256": _sha256(path),
        }
        self._save()


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


Embed = Callable[[list[str]], dict[str, Any]]


def _local_embedder(
    model: Any, *, sparse: bool, colbert: bool, queries: bool, pool: ThreadPoolExecutor | None
) -> Embed:
    """texts -> outputs, a chunk at a time; with a ``pool`` the next chunk is tokenized while the model runs."""
    prefix = model.manifest.query_instruction if queries else ""
    m3 = sparse or colbert
    step = model.chunk_size

    def run(encoded: Any) -> dict[str, Any]:
        if m3:
            out = model.encode_encoded(encoded, dense=True, sparse=sparse, colbert=colbert)
            return {"embedding": out.dense, "sparse": out.sparse, "colbert": out.colbert}
        return {"embedding": model.embed_encoded(encoded)}

    def embed(texts: list[str]) -> dict[str, Any]:
        if prefix:
            texts = [prefix + t for t in texts]
        chunks = [texts[i : i + step] for i in range(0, len(texts), step)]
        results: list[dict[str, Any]] = []
        if pool is None:
            results = [run(model.tokenize(c)) for c in chunks]
        else:
            ahead = pool.submit(model.tokenize, chunks[0]) if chunks else None
            for i in range(len(chunks)):
                assert ahead is not None
                encoded = ahead.result()
                ahead = pool.submit(model.tokenize, chunks[i + 1]) if i + 1 < len(chunks) else None
                results.append(run(encoded))
        merged: dict[str, Any] = {"embedding": np.concatenate([r["embedding"] for r in results])}
        if sparse:
            merged["sparse"] = [w for r in results for w in r["sparse"]]
        if colbert:
            merged["colbert"] = [v for r in results for v in r["colbert"]]
        return merged

    return embed


def _check_bundle(bundle: Path, *, sparse: bool, colbert: bool) -> Manifest:
    try:
        manifest = Manifest.load(bundle)
    except (ManifestError, ModelFilesError) as e:
        raise BulkError(str(e)) from None
    if manifest.kind not in (Kind.EMBEDDING, Kind.M3):
        raise BulkError(f"{bundle} is a {manifest.kind.value!r} bundle; embed takes 'embedding' or 'm3' bundles")
    if (sparse or colbert) and manifest.kind is not Kind.M3:
        flag = "--sparse" if sparse else "--colbert"
        raise BulkError(f"{flag} needs a bge-m3 bundle; {manifest.name} is of kind {manifest.kind.value!r}")
    return manifest


def embed_files(
    bundle: str | os.PathLike[str],
    inputs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    field: str = "text",
    id_field: str | None = None,
    sparse: bool = False,
    colbert: bool = False,
    queries: bool = False,
    skip_bad: bool = False,
    overwrite: bool = False,
    part_rows: int = PART_ROWS,
    providers: str | Sequence[Any] = "auto",
    threads: int | None = None,
    max_batch_tokens: int | None = None,
    verify: bool = True,
    overlap: bool = True,
    ray: str | bool | None = None,
    actors: int | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> BulkResult:
    """Embed every row of ``inputs`` into Parquet parts under ``out`` (see the module docstring).

    ``ray``: None/False runs here; True starts (or joins) a local Ray; a string is a cluster address.
    """
    if part_rows < 1:
        raise InputError(f"part_rows must be positive, got {part_rows}")
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise BulkError("bulk embedding writes Parquet: pip install 'edge-bge[bulk]'") from None
    bundle = Path(bundle)
    if not (bundle / MANIFEST_NAME).is_file():
        raise BulkError(f"{bundle}: not a bundle directory ({MANIFEST_NAME} not found)")
    manifest = _check_bundle(bundle, sparse=sparse, colbert=colbert)
    files = expand_inputs([str(i) for i in inputs])
    options = {"field": field, "id_field": id_field, "sparse": sparse, "colbert": colbert, "queries": queries}
    options |= {"part_rows": part_rows}
    job = _job(bundle, manifest, files, options)
    out = Path(out)
    done = _prepare_out(out, job, overwrite)
    writer = _Writer(out, job, done, manifest.dim)
    result = BulkResult(out)
    t0 = time.perf_counter()
    scans = [scan(p, part_rows) for p in files]
    total = sum(rows for rows, _ in scans)
    from .embedder import progress_bar

    bar = progress_bar(total, sys.stderr.isatty() if progress is None else progress, unit="row", smoothing=0.1)
    parts = plan_parts(files, scans, part_rows)
    todo = []
    for part in parts:
        if part.name in done:
            result.parts_skipped += 1
            result.skipped_rows += done[part.name]["rows"]
            result.rejected += done[part.name].get("rejected", 0)
            if bar is not None:
                bar.update(part.rows)
        else:
            todo.append(part)
    try:
        if ray:
            from .ray import run_parts

            run_parts(
                todo,
                writer,
                bundle=bundle,
                address=None if ray is True else str(ray),
                actors=actors,
                threads=threads,
                providers=providers,
                field=field,
                id_field=id_field,
                skip_bad=skip_bad,
                queries=queries,
                sparse=sparse,
                colbert=colbert,
                done=lambda part, good, bad: _count(result, bar, part, good, bad),
            )
        else:
            from .embedder import Embedder

            model = Embedder(
                bundle, providers=providers, threads=threads, max_batch_tokens=max_batch_tokens, verify=verify
            )
            with ThreadPoolExecutor(1, thread_name_prefix="edge-bge-tokenize") as pool:
                embed = _local_embedder(
                    model, sparse=sparse, colbert=colbert, queries=queries, pool=pool if overlap else None
                )
                for part in todo:
                    good, bad = split_rows(part, part_rows_of(part, field=field, id_field=id_field), skip_bad)
                    texts = [r.text for r in good]
                    outputs = embed(texts) if good else empty_outputs(manifest.dim, sparse, colbert)  # type: ignore[arg-type]
                    writer.part(part.name, str(part.path), good, outputs, bad)
                    _count(result, bar, part, good, bad)
    finally:
        if bar is not None:
            bar.close()
    result.seconds = time.perf_counter() - t0
    result.rows_per_s = result.rows / result.seconds if result.seconds > 0 else 0.0
    if log is not None:
        log(result.line())
    return result


def empty_outputs(dim: int, sparse: bool, colbert: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"embedding": np.empty((0, dim), np.float32)}
    if sparse:
        out["sparse"] = []
    if colbert:
        out["colbert"] = []
    return out


def _count(result: BulkResult, bar: Any, part: Part, good: Sequence[Row], bad: Sequence[Row]) -> None:
    result.rows += len(good)
    result.rejected += len(bad)
    result.parts_written += 1
    if bar is not None:
        bar.update(part.rows)
