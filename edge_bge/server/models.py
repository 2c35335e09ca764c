"""The bundles a server holds: loading them, what each kind can do, running an operation, warm-up."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import PureWindowsPath
from typing import Any

import numpy as np

from ..errors import InputError
from ..kinds import kinds_with, spec
from ..manifest import Manifest
from ..model import load
from ..tokenize import Encoded, TooLongError
from .batcher import Batcher
from .errors import ApiError
from .errors import ErrorKind as E

__all__ = ["Served", "Registry", "load_model"]


def _needs(op: str) -> str:
    return " or ".join(spec(k).label for k in kinds_with(op=op))


def load_model(
    path: str | os.PathLike[str],
    *,
    providers: str | Sequence[Any] = "auto",
    threads: int | None = None,
    max_batch_tokens: int | None = None,
    verify: bool = True,
    spin: bool = True,
) -> Any:
    """An Embedder (embedding, m3) or Reranker (reranker) for a bundle directory.

    ``verify=False`` skips the sha256 check of the bundle's files against its manifest (faster start;
    only for bundles whose integrity is checked some other way). ``spin=False``: ONNX Runtime's threads
    sleep when they run out of work instead of spin-waiting for more (``serve``'s default: less CPU per
    request between requests, and no CPU taken from other processes on a shared host).
    """
    options: dict[str, Any] = {
        "providers": providers,
        "threads": threads,
        "max_batch_tokens": max_batch_tokens,
        "verify": verify,
        "spin": spin,
    }
    return load(path, **options)


class Served:
    """One loaded bundle under a name (``name``: an alias, e.g. from --served-model-name; default the
    manifest's name), with its batcher once the server starts."""

    def __init__(self, model: Any, *, name: str | None = None) -> None:
        self.model = model
        self.manifest: Manifest = model.manifest
        self.name = name or self.manifest.name
        self.kind = self.manifest.kind
        self.ops = spec(self.kind).ops  # what the kind can do: embed, sparse, score (edge_bge.kinds)
        self.batcher: Batcher | None = None

    def tokenize(self, items: Sequence[Any], *, param: str, truncate: bool, pairs: bool = False) -> list[Encoded]:
        """Token ids per text (or (query, passage) pair), once per request: what ``run`` takes.

        With ``truncate`` false, an input longer than max_length is an ApiError (413) naming it."""
        tokenizer = self.model.tokenizer
        try:
            if pairs:
                return tokenizer.encode_pairs(items, query_max_length=self.model.query_max_length, truncate=truncate)
            return tokenizer.encode(items, truncate=truncate)
        except TooLongError as e:
            raise ApiError(E.TOO_LARGE, str(e.naming(param, hint="send truncate=true")), param=param) from None

    def run(self, op: str, encoded: list[Encoded]) -> Any:
        """Run one operation on many tokenized inputs; called on the batcher's worker thread."""
        if op == "embed":
            return self.model.embed_encoded(encoded)
        if op == "sparse":
            return self.model.encode_encoded(encoded, dense=False, sparse=True).sparse
        if op == "score":
            return self.model.score_encoded(encoded)
        raise ValueError(f"unknown operation {op!r}")

    def unit(self, vectors: np.ndarray) -> np.ndarray:
        """``vectors`` L2-normalised (as the graph does for bundles that normalise: those come back as they are)."""
        if self.manifest.normalize:
            return vectors
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    def warm_up(self, *, max_batch_tokens: int, max_batch_items: int) -> None:
        """Run the largest batch the server will form: max_length tokens per row, rows to fill the budget."""
        length = self.manifest.max_length
        rows = max(1, min(max_batch_items, max_batch_tokens // length))
        text = "warm " * length  # truncated to max_length tokens
        op = self.ops[0]
        pairs = op == "score"
        items = [(text, text)] * rows if pairs else [text] * rows
        self.run(op, self.tokenize(items, param="warm-up", truncate=True, pairs=pairs))

    @property
    def session_threads(self) -> tuple[int | None, bool | None]:
        """The ONNX Runtime session's intra-op threads and whether they spin (None where unknown)."""
        session = getattr(self.model, "session", None)
        if session is None:
            return None, None
        options = session.get_session_options()
        try:
            spinning = options.get_session_config_entry("session.intra_op.allow_spinning") != "0"
        except RuntimeError:  # not set: ONNX Runtime's default, spinning
            spinning = True
        return options.intra_op_num_threads or None, spinning

    def describe(self) -> dict[str, Any]:
        """The bundle as /info shows it: no local paths (the manifest's source.checkpoint is the build
        machine's directory; a source id that is a path becomes its last name), no probe texts."""
        m = self.manifest
        source: dict[str, Any] = {}
        for key in ("id", "revision", "commit"):
            value = m.source.get(key)
            if isinstance(value, str) and (
                value.startswith(("/", "~", ".", "\\")) or PureWindowsPath(value).is_absolute() or value.count("/") > 1
            ):
                value = PureWindowsPath(value).name  # splits on / and \
            if value is not None:
                source[key] = value
        parity = {k: m.parity[k] for k in ("reference", "probe_texts", "gate", "summary") if k in m.parity}
        threads, spinning = self.session_threads
        return {
            "name": self.name,
            "bundle_name": m.name,
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
            "threads": threads,
            "spinning": spinning,
            "parity": parity,
            "source": source,
            "files": dict(m.files),  # sha256 of each file
        }


class Registry:
    """The served bundles by name; picks the one a request names, or the first that can do the op.

    A request may name a bundle by its served name or, where that is unambiguous, its manifest name.
    A name served by no bundle still gets the one bundle that can do the operation, when there is
    exactly one (as text-embeddings-inference does: OpenAI clients send model names of their own,
    such as "text-embedding-3-small"); ``strict`` answers 404 instead (``Service`` sets it from
    ``ServerConfig.strict_model_names``). With several such bundles the 404 lists the served names.
    """

    def __init__(self, served: Sequence[Served]) -> None:
        if not served:
            raise InputError("serve at least one bundle")
        self.served = list(served)
        self.strict = False
        self.by_name: dict[str, Served] = {}
        for s in self.served:
            if s.name in self.by_name:
                raise InputError(f"two bundles are named {s.name!r}; serve them under different names")
            self.by_name[s.name] = s
        bundle_names = [s.manifest.name for s in self.served]
        for s in self.served:  # manifest names as second names, where they point at one bundle
            if s.manifest.name not in self.by_name and bundle_names.count(s.manifest.name) == 1:
                self.by_name[s.manifest.name] = s

    def _loaded(self) -> str:
        return ", ".join(f"{s.name!r} ({s.kind.value})" for s in self.served)

    def pick(self, op: str | None, name: Any, *, route: str) -> Served:
        """The bundle for ``op`` (None: any), or an ApiError saying why there is none."""
        able = [s for s in self.served if op is None or op in s.ops]
        if name is not None:
            if not isinstance(name, str):
                raise ApiError(E.VALIDATION, f"'model' must be a string, got {type(name).__name__}", param="model")
            served = self.by_name.get(name)
            if served is None:
                if len(able) == 1 and not self.strict:
                    return able[0]
                raise ApiError(
                    E.NOT_FOUND, f"model {name!r} is not served here; served: {self._loaded()}", param="model"
                )
            if op is not None and op not in served.ops:
                raise ApiError(
                    E.UNSUPPORTED,
                    f"{route} needs {_needs(op)} bundle; {name!r} is of kind {served.kind.value!r}",
                    param="model",
                )
            return served
        if able:
            return able[0]
        raise ApiError(
            E.UNSUPPORTED,
            f"{route} needs {_needs(op)} bundle, and the loaded bundles do not support it: {self._loaded()}",
        )
