"""The output folder of a bulk job: bulk.json (the job and its finished parts), Parquet parts written
atomically, and rejects.jsonl."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BulkError
from ..manifest import MANIFEST_NAME, Manifest
from .rows import REJECTS, Row

__all__ = ["JOB", "Writer", "empty_outputs", "job_of", "prepare_out"]

JOB = "bulk.json"


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


def job_of(bundle: Path, manifest: Manifest, files: Sequence[Path], options: dict[str, Any]) -> dict[str, Any]:
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


def prepare_out(out: Path, job: dict[str, Any], overwrite: bool) -> dict[str, Any]:
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


class Writer:
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


def empty_outputs(dim: int, sparse: bool, colbert: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"embedding": np.empty((0, dim), np.float32)}
    if sparse:
        out["sparse"] = []
    if colbert:
        out["colbert"] = []
    return out
