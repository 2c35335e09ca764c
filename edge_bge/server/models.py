"""The bundles a server holds: loading them, what each kind can do, running an operation, warm-up."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from ..embedder import Embedder
from ..errors import InputError
from ..manifest import Kind, Manifest
from ..reranker import Reranker
from .batcher import Batcher
from .errors import ApiError
from .errors import Kind as E

__all__ = ["Served", "Registry", "load_model", "OPS"]

# What each bundle kind can do. "embed": dense vectors; "sparse": bge-m3 lexical weights;
# "score": reranker logits for (query, passage) pairs.
OPS: dict[Kind, tuple[str, ...]] = {
    Kind.EMBEDDING: ("embed",),
    Kind.M3: ("embed", "sparse"),
    Kind.RERANKER: ("score",),
}
_NEEDS = {"embed": "an 'embedding' or 'm3'", "sparse": "an 'm3' (bge-m3)", "score": "a 'reranker'"}


def load_model(
    path: str | os.PathLike[str],
    *,
    providers: str | Sequence[Any] = "auto",
    threads: int | None = None,
    max_batch_tokens: int | None = None,
) -> Any:
    """An Embedder (embedding, m3) or Reranker (reranker) for a bundle directory."""
    manifest = Manifest.load(path)
    options: dict[str, Any] = {"providers": providers, "threads": threads, "max_batch_tokens": max_batch_tokens}
    if manifest.kind is Kind.RERANKER:
        return Reranker(path, **options)
    return Embedder(path, **options)


class Served:
    """One loaded bundle under a name, with its batcher once the server starts."""

    def __init__(self, model: Any, *, name: str | None = None) -> None:
        self.model = model
        self.manifest: Manifest = model.manifest
        self.name = name or self.manifest.name
        self.kind = self.manifest.kind
        self.ops = OPS[self.kind]
        self.batcher: Batcher | None = None
        self._full: Tokenizer | None = None  # untruncated, for truncate=false checks
        self._lock = threading.Lock()

    def run(self, op: str, items: list[Any]) -> Any:
        """Run one operation on many inputs; called on the batcher's worker thread."""
        if op == "embed":
            return self.model.embed(items)
        if op == "sparse":
            return self.model.encode(items, dense=False, sparse=True).sparse
        if op == "score":
            return np.asarray(self.model.score(items, normalize=False), dtype=np.float32).reshape(-1)
        raise ValueError(f"unknown operation {op!r}")

    def count_tokens(self, items: Sequence[Any], *, pairs: bool = False) -> list[int]:
        """Tokens per text (or (query, passage) pair) as the model will see them, after truncation."""
        if pairs:
            encodings = self.model.tokenizer.encode_pairs(list(items), query_max_length=self.model.query_max_length)
        else:
            encodings = self.model.tokenizer.encode(list(items), truncate=True)
        return [len(e.ids) for e in encodings]

    def check_length(self, items: Sequence[Any], *, param: str) -> None:
        """ApiError (413) naming the first text (or pair) longer than max_length before truncation."""
        with self._lock:
            if self._full is None:
                full = Tokenizer.from_str(self.model.tokenizer.tokenizer.to_str())
                full.no_truncation()
                full.no_padding()
                self._full = full
        limit = self.manifest.max_length
        for i, enc in enumerate(self._full.encode_batch(list(items))):
            if len(enc.ids) > limit:
                raise ApiError(
                    E.TOO_LARGE,
                    f"{param}[{i}] has {len(enc.ids)} tokens, more than the model's max_length {limit}; "
                    "shorten it or send truncate=true",
                    param=param,
                )

    def warm_up(self, *, max_batch_tokens: int, max_batch_items: int) -> None:
        """Run the largest batch the server will form: max_length tokens per row, rows to fill the budget."""
        length = self.manifest.max_length
        rows = max(1, min(max_batch_items, max_batch_tokens // length))
        text = "warm " * length  # truncated to max_length tokens
        op = self.ops[0]
        self.run(op, [(text, text)] * rows if op == "score" else [text] * rows)

    def describe(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "name": self.name,
            "kind": m.kind.value,
            "architecture": m.architecture,
            "precision": m.precision.value,
            "target": m.target.value,
            "dim": m.dim,
            "max_length": m.max_length,
            "pooling": m.pooling.value if m.pooling else None,
            "normalize": m.normalize,
            "query_instruction": m.query_instruction,
            "providers": list(getattr(self.model, "providers", [])),
            "parity": m.parity,
            "source": m.source,
        }


class Registry:
    """The served bundles by name; picks the one a request names, or the first that can do the op."""

    def __init__(self, served: Sequence[Served]) -> None:
        if not served:
            raise InputError("serve at least one bundle")
        self.served = list(served)
        self.by_name: dict[str, Served] = {}
        for s in self.served:
            if s.name in self.by_name:
                raise InputError(f"two bundles are named {s.name!r}; serve them from different processes")
            self.by_name[s.name] = s

    def _loaded(self) -> str:
        return ", ".join(f"{s.name!r} ({s.kind.value})" for s in self.served)

    def pick(self, op: str | None, name: Any, *, route: str) -> Served:
        """The bundle for ``op`` (None: any), or an ApiError saying why there is none."""
        if name is not None:
            if not isinstance(name, str):
                raise ApiError(E.VALIDATION, f"'model' must be a string, got {type(name).__name__}", param="model")
            served = self.by_name.get(name)
            if served is None:
                raise ApiError(
                    E.NOT_FOUND, f"model {name!r} is not served here; served: {self._loaded()}", param="model"
                )
            if op is not None and op not in served.ops:
                raise ApiError(
                    E.UNSUPPORTED,
                    f"{route} needs {_NEEDS[op]} bundle; {name!r} is of kind {served.kind.value!r}",
                    param="model",
                )
            return served
        for served in self.served:
            if op is None or op in served.ops:
                return served
        raise ApiError(
            E.UNSUPPORTED,
            f"{route} needs {_NEEDS[op]} bundle, and the loaded bundles do not support it: {self._loaded()}",
        )
