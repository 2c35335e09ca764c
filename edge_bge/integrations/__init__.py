"""Thin adapters of the runtime to other libraries, each behind its own pip extra.

    edge_bge.integrations.langchain    EdgeBGEEmbeddings, EdgeBGERerank   pip install 'edge-bge[langchain]'
    edge_bge.integrations.llama_index  EdgeBGEEmbedding                   pip install 'edge-bge[llama-index]'
    edge_bge.integrations.qdrant       hybrid collections and search      pip install 'edge-bge[qdrant]'
    edge_bge.integrations.formats      Milvus sparse formats              (numpy only)

Importing this package imports none of those libraries; each module imports its own and says
which extra to install when it is missing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ..embedder import Embedder
from ..errors import InputError
from ..kinds import spec
from ..manifest import Manifest
from ..reranker import Reranker

__all__ = ["load_embedder", "load_reranker", "missing", "require_m3"]

BundlePath = str | os.PathLike[str]


def missing(module: str, extra: str) -> ImportError:
    """The ImportError for a library an integration needs: it names the pip extra that installs it."""
    return ImportError(f"{module} is not installed; this integration needs it: pip install 'edge-bge[{extra}]'")


def _given(bundle: BundlePath | None, model: Any, cls: type, who: str) -> Any:
    if (bundle is None) == (model is None):
        raise InputError(f"{who} takes a bundle path or a loaded {cls.__name__}, exactly one of them")
    if model is not None and not isinstance(model, cls):
        raise InputError(f"{who} takes an edge_bge.{cls.__name__}, got {type(model).__name__}")
    return model


def load_embedder(
    bundle: BundlePath | None, embedder: Embedder | None, options: Mapping[str, Any], *, who: str
) -> Embedder:
    """``embedder``, or an Embedder on ``bundle`` with ``options``; a reranker bundle is refused by kind."""
    if _given(bundle, embedder, Embedder, who) is not None:
        return embedder  # type: ignore[return-value]
    assert bundle is not None
    kind = Manifest.load(bundle).kind
    if "embed" not in spec(kind).ops:
        raise InputError(
            f"{who} embeds text and needs an 'embedding' or 'm3' bundle; {os.fspath(bundle)} is a "
            f"{kind.value!r} bundle: rerank with edge_bge.Reranker (LangChain: EdgeBGERerank)"
        )
    return Embedder(bundle, **options)


def load_reranker(
    bundle: BundlePath | None, reranker: Reranker | None, options: Mapping[str, Any], *, who: str
) -> Reranker:
    """``reranker``, or a Reranker on ``bundle`` with ``options``; an embedder bundle is refused by kind."""
    if _given(bundle, reranker, Reranker, who) is not None:
        return reranker  # type: ignore[return-value]
    assert bundle is not None
    kind = Manifest.load(bundle).kind
    if "score" not in spec(kind).ops:
        raise InputError(
            f"{who} needs a 'reranker' bundle; {os.fspath(bundle)} is a {kind.value!r} bundle: embed with edge_bge.Embedder"
        )
    return Reranker(bundle, **options)


def require_m3(embedder: Embedder, who: str) -> None:
    """InputError naming the kind unless ``embedder`` runs a bge-m3 bundle (dense, sparse and ColBERT outputs)."""
    if not isinstance(embedder, Embedder):
        raise InputError(f"{who} takes an edge_bge.Embedder, got {type(embedder).__name__}")
    kind = embedder.manifest.kind
    if not spec(kind).multi_output:
        raise InputError(
            f"{who} needs a bge-m3 bundle (kind 'm3': dense, sparse and ColBERT vectors); "
            f"{embedder.manifest.name} is a {kind.value!r} bundle"
        )
