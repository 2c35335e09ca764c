"""Ray Data: ``EmbedBatch`` for your own pipelines, and the Ray path of ``edge-bge embed --ray``.

    ds = ray.data.read_parquet("s3://corpus/")
    ds = ds.map_batches(
        EmbedBatch,
        fn_constructor_kwargs={"bundle": "/models/bge-small-int8", "threads": 2},
        compute=ray.data.ActorPoolStrategy(size=8),
        num_cpus=2,            # = the actor's ONNX Runtime threads: no oversubscription
        batch_size=1024,
    )

Each actor opens the bundle once. A bundle reaches the workers by a path every node can read, or
by ``ship_bundle(path)``: its files go once into Ray's object store and each node unpacks them
into a cache keyed by the manifest's sha256 (``~/.cache/edge-bge/bundles``), verified on arrival.
Ray is the extra ``edge-bge[ray]``; it is imported only here.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .bulk.output import empty_outputs
from .bulk.rows import Row, part_rows_of, split_rows
from .errors import EdgeBGEError
from .manifest import MANIFEST_NAME

__all__ = ["BundleRef", "EmbedBatch", "ship_bundle", "run_parts"]

CACHE = Path(os.environ.get("EDGE_BGE_CACHE", Path.home() / ".cache" / "edge-bge")) / "bundles"


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise EdgeBGEError("Ray is not installed: pip install 'edge-bge[ray]'") from None
    return ray


@dataclass(frozen=True)
class BundleRef:
    """A bundle in Ray's object store: its files, keyed by the sha256 of its manifest."""

    name: str
    sha256: str
    files: Any  # ObjectRef of {relative name: bytes}


def ship_bundle(path: str | os.PathLike[str]) -> BundleRef:
    """Put a bundle's files into the object store once (call on the driver, after ``ray.init``)."""
    ray = _ray()
    path = Path(path)
    files = {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}
    if MANIFEST_NAME not in files:
        raise EdgeBGEError(f"{path}: not a bundle directory ({MANIFEST_NAME} not found)")
    return BundleRef(path.name, hashlib.sha256(files[MANIFEST_NAME]).hexdigest(), ray.put(files))


def _local_copy(ref: BundleRef) -> Path:
    """This node's copy of a shipped bundle, unpacked once; the Embedder then verifies every file."""
    target = CACHE / ref.sha256
    if (target / MANIFEST_NAME).is_file():
        return target
    files = _ray().get(ref.files)
    CACHE.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{ref.sha256[:12]}-", dir=CACHE))
    for name, data in files.items():
        (staging / name).write_bytes(data)
    if hashlib.sha256((staging / MANIFEST_NAME).read_bytes()).hexdigest() != ref.sha256:
        raise EdgeBGEError(f"bundle {ref.name} arrived altered (manifest sha256 differs)")
    try:
        os.rename(staging, target)  # atomic; another actor on this node may have won the race
    except OSError:
        for p in staging.iterdir():
            p.unlink()
        staging.rmdir()
    return target


class EmbedBatch:
    """A Ray Data callable class: adds embeddings of a text column to each batch.

    Takes and returns pandas DataFrames, pyarrow Tables or dicts of numpy arrays (Ray's batch
    formats). Columns added: ``output`` (float32 [dim] per row); with ``sparse`` ``sparse_indices`` /
    ``sparse_values``; with ``colbert`` ``colbert`` (a list of vectors). Rows whose ``skip_column``
    is set are not embedded (zero vectors), for callers that carry rejected rows along.
    """

    def __init__(
        self,
        bundle: str | os.PathLike[str] | BundleRef,
        *,
        column: str = "text",
        output: str = "embedding",
        queries: bool = False,
        sparse: bool = False,
        colbert: bool = False,
        threads: int | None = None,
        providers: str | Sequence[Any] = "auto",
        skip_column: str | None = None,
    ) -> None:
        from .embedder import Embedder

        path = _local_copy(bundle) if isinstance(bundle, BundleRef) else Path(bundle)
        self.model = Embedder(path, threads=threads, providers=providers)
        self.column, self.output, self.skip_column = column, output, skip_column
        self.prefix = self.model.manifest.query_instruction if queries else ""
        self.sparse, self.colbert = sparse, colbert

    def _outputs(self, texts: list[Any], skip: list[bool]) -> dict[str, Any]:
        keep = [i for i, s in enumerate(skip) if not s]
        chosen = [self.prefix + texts[i] for i in keep]
        dim = self.model.dim
        dense = np.zeros((len(texts), dim), np.float32)
        out: dict[str, Any] = {}
        if self.sparse or self.colbert:
            m3 = self.model.encode(chosen, dense=True, sparse=self.sparse, colbert=self.colbert)
            dense[keep] = m3.dense
            if self.sparse:
                weights: list[dict[int, float]] = [{} for _ in texts]
                for i, w in zip(keep, m3.sparse or [], strict=True):
                    weights[i] = w
                out["sparse_indices"] = [np.array(list(w.keys()), np.int32) for w in weights]
                out["sparse_values"] = [np.array(list(w.values()), np.float32) for w in weights]
            if self.colbert:
                vectors = [np.zeros((0, dim), np.float32) for _ in texts]
                for i, v in zip(keep, m3.colbert or [], strict=True):
                    vectors[i] = v
                out["colbert"] = vectors
        elif chosen:
            dense[keep] = self.model.embed(chosen)
        out[self.output] = dense
        return out

    def __call__(self, batch: Any) -> Any:
        kind = type(batch).__module__.split(".")[0]
        if kind == "pyarrow":
            texts = batch.column(self.column).to_pylist()
            skip = self._skips(batch.column(self.skip_column).to_pylist() if self.skip_column else None, len(texts))
            import pyarrow as pa

            for name, values in self._outputs(texts, skip).items():
                column = pa.array(list(values)) if name != self.output else _fixed(values)
                batch = batch.append_column(name, column)
            return batch
        if kind == "pandas":
            texts = batch[self.column].tolist()
            skip = self._skips(batch[self.skip_column].tolist() if self.skip_column else None, len(texts))
            batch = batch.copy()
            for name, values in self._outputs(texts, skip).items():
                batch[name] = list(values)
            return batch
        texts = list(batch[self.column])
        skip = self._skips(list(batch[self.skip_column]) if self.skip_column else None, len(texts))
        out = dict(batch)
        for name, values in self._outputs(texts, skip).items():
            out[name] = values if name == self.output else np.array(values, dtype=object)
        return out

    @staticmethod
    def _skips(values: list[Any] | None, n: int) -> list[bool]:
        if values is None:
            return [False] * n
        return [v is not None and v == v and v != "" for v in values]  # None, NaN and "" mean "embed it"


def _fixed(vectors: np.ndarray) -> Any:
    import pyarrow as pa

    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])


# Rows per actor call. Larger calls amortise Ray's per-batch cost (MiniLM int8, 1 actor x 2 threads, 8000
# rows on 2 cores: 223 rows/s at 256, 244 at 1024, 249 at 4096); ColBERT outputs are up to max_length x dim
# floats per row, so their calls stay small to bound an actor's memory.
BATCH_ROWS = 1024
COLBERT_BATCH_ROWS = 32


# ---- the bulk job's Ray path ---------------------------------------------------------------------------
def run_parts(
    parts: Sequence[Any],
    writer: Any,
    *,
    bundle: Path,
    address: str | None,
    actors: int | None,
    threads: int | None,
    providers: str | Sequence[Any],
    field: str,
    id_field: str | None,
    skip_bad: bool,
    queries: bool,
    sparse: bool,
    colbert: bool,
    done: Callable[[Any, list[Any], list[Any]], None],
) -> None:
    """Ray Data reads each part's rows (a task per part), actors embed them, and this process writes
    each part as its rows come back, in order: the same parts and bulk.json as the local path."""
    ray = _ray()

    if not parts:
        return
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    threads = threads or 1
    size = actors or max(1, int(ray.cluster_resources().get("CPU", 1)) // threads)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # parts come back whole and in order
    context.enable_progress_bars = False
    by_name = {p.name: p for p in parts}

    def read(item: dict[str, Any]) -> list[dict[str, Any]]:
        part = by_name[item["name"]]
        rows = part_rows_of(part, field=field, id_field=id_field)
        return [
            {
                "part": part.name,
                "row": r.row,
                "id": str(r.id),
                "id_is_row": isinstance(r.id, int),  # text files: the line number, kept an integer
                "text": r.text or "",
                "reason": r.reason or "",
            }
            for r in rows
        ]

    ds = ray.data.from_items([{"name": p.name} for p in parts], override_num_blocks=len(parts))
    # reading is light: it must not wait for CPUs that the actors hold
    ds = ds.flat_map(read, num_cpus=0).map_batches(
        EmbedBatch,
        fn_constructor_kwargs={
            "bundle": ship_bundle(bundle),
            "threads": threads,
            "providers": providers,
            "queries": queries,
            "sparse": sparse,
            "colbert": colbert,
            "skip_column": "reason",
        },
        compute=ray.data.ActorPoolStrategy(size=size),
        num_cpus=threads,
        # never more than a part: a call spanning parts would hold back the parts it finishes
        batch_size=min(COLBERT_BATCH_ROWS if colbert else BATCH_ROWS, max(1, *(p.rows for p in parts))),
        batch_format="pyarrow",
    )
    options = {"skip_bad": skip_bad, "sparse": sparse, "colbert": colbert}
    current: str | None = None
    collected: list[Any] = []
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        for name, table in _by_part(batch):
            if name != current and current is not None:
                _write(by_name[current], collected, writer, options, done)
                collected = []
            current = name
            collected.append(table)
    if current is not None:
        _write(by_name[current], collected, writer, options, done)
    written = set(writer.parts)
    for part in parts:  # parts without any row (only blank lines) never came back
        if part.name not in written:
            _write(part, [], writer, options, done)


def _by_part(batch: Any) -> list[tuple[str, Any]]:
    names = batch.column("part").to_pylist()
    out, start = [], 0
    for i in range(1, len(names) + 1):
        if i == len(names) or names[i] != names[start]:
            out.append((names[start], batch.slice(start, i - start)))
            start = i
    return out


def _write(
    part: Any,
    tables: list[Any],
    writer: Any,
    options: dict[str, Any],
    done: Callable[..., None],
) -> None:
    import pyarrow as pa

    table = pa.concat_tables(tables) if tables else None
    sparse, colbert = options["sparse"], options["colbert"]
    rows, outputs_at = [], []
    if table is not None:
        ids, is_row, row_numbers, reasons = (table.column(c).to_pylist() for c in ("id", "id_is_row", "row", "reason"))
        for i, (ident, numbered, row, reason) in enumerate(zip(ids, is_row, row_numbers, reasons, strict=True)):
            rows.append(Row(0, row, row if numbered else ident, None, reason or None))
            outputs_at.append(i)
    good, bad = split_rows(part, rows, options["skip_bad"])
    keep = [i for i, r in zip(outputs_at, rows, strict=True) if r.reason is None]
    dim = writer.dim
    outputs = empty_outputs(dim, sparse, colbert)
    if table is not None:
        dense = table.column("embedding").combine_chunks()
        flat = dense.values.to_numpy(zero_copy_only=False).reshape(-1, dim)
        outputs["embedding"] = flat[keep]
        if sparse:
            idx, val = table.column("sparse_indices").to_pylist(), table.column("sparse_values").to_pylist()
            outputs["sparse"] = [dict(zip(idx[i], val[i], strict=True)) for i in keep]
        if colbert:
            vectors = table.column("colbert").to_pylist()
            outputs["colbert"] = [np.asarray(vectors[i], np.float32).reshape(-1, dim) for i in keep]
    writer.part(part.name, str(part.path), good, outputs, bad)
    done(part, good, bad)
