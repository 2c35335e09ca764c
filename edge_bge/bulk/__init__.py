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

rows.py reads the inputs and cuts them into parts; output.py owns the output folder.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BulkError, InputError, ManifestError, ModelFilesError
from ..kinds import kinds_with, spec
from ..manifest import MANIFEST_NAME, Manifest
from .output import JOB, Writer, empty_outputs, job_of, prepare_out
from .rows import PART_ROWS, REJECTS, Part, Row, expand_inputs, part_rows_of, plan_parts, read_rows, scan, split_rows

__all__ = ["BulkError", "BulkResult", "JOB", "PART_ROWS", "REJECTS", "Row", "embed_files", "read_rows"]


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
    if "embed" not in spec(manifest.kind).ops:
        able = " or ".join(repr(k.value) for k in kinds_with(op="embed"))
        raise BulkError(f"{bundle} is a {manifest.kind.value!r} bundle; embed takes {able} bundles")
    if (sparse or colbert) and not spec(manifest.kind).multi_output:
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
    job = job_of(bundle, manifest, files, options)
    out = Path(out)
    done = prepare_out(out, job, overwrite)
    writer = Writer(out, job, done, manifest.dim)
    result = BulkResult(out)
    t0 = time.perf_counter()
    scans = [scan(p, part_rows) for p in files]
    total = sum(rows for rows, _ in scans)
    from ..model import progress_bar

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
            from ..ray import run_parts

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
            from ..embedder import Embedder

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


def _count(result: BulkResult, bar: Any, part: Part, good: Sequence[Row], bad: Sequence[Row]) -> None:
    result.rows += len(good)
    result.rejected += len(bad)
    result.parts_written += 1
    if bar is not None:
        bar.update(part.rows)
