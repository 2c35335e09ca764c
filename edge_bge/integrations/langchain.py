"""LangChain: ``EdgeBGEEmbeddings`` (an ``Embeddings``) and ``EdgeBGERerank`` (a document compressor).

    from edge_bge.integrations.langchain import EdgeBGEEmbeddings, EdgeBGERerank

    embeddings = EdgeBGEEmbeddings("models/bge-small-int8")      # any Embedder option: threads=2, ...
    store = InMemoryVectorStore.from_texts(texts, embeddings)
    rerank = EdgeBGERerank("models/bge-reranker-base", top_n=3)

Needs ``pip install 'edge-bge[langchain]'`` (langchain-core).
"""

from __future__ import annotations

try:
    from langchain_core.callbacks import Callbacks
    from langchain_core.documents import BaseDocumentCompressor, Document
    from langchain_core.embeddings import Embeddings
except ImportError as e:
    from . import missing

    raise missing("langchain_core", "langchain") from e

import asyncio
from collections.abc import Sequence
from typing import Any

from pydantic import ConfigDict

from ..embedder import Embedder
from ..errors import InputError
from ..reranker import Reranker
from . import BundlePath, load_embedder, load_reranker

__all__ = ["EdgeBGEEmbeddings", "EdgeBGERerank"]


class EdgeBGEEmbeddings(Embeddings):
    """LangChain embeddings from an edge-bge ``embedding`` or ``m3`` bundle (its dense vectors).

    ``EdgeBGEEmbeddings(bundle, **options)`` loads an ``edge_bge.Embedder`` with ``options``
    (providers, threads, max_batch_tokens, ...); ``EdgeBGEEmbeddings(embedder=model)`` shares one.
    Queries get the bundle's query instruction, documents do not. The async methods run in a
    worker thread, so the event loop keeps running while the model does.
    """

    def __init__(self, bundle: BundlePath | None = None, *, embedder: Embedder | None = None, **options: Any) -> None:
        self.embedder = load_embedder(bundle, embedder, options, who="EdgeBGEEmbeddings")

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """One vector (``dim`` floats) per text, in order."""
        if isinstance(texts, str):
            raise InputError("embed_documents takes a list of str, not one str: use embed_query")
        return self.embedder.embed_documents(list(texts)).tolist()

    def embed_query(self, text: str) -> list[float]:
        """The vector of one search query, the bundle's query instruction prepended."""
        if not isinstance(text, str):
            raise InputError(f"embed_query takes one str, got {type(text).__name__}")
        return self.embedder.embed_queries(text).tolist()

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        return await asyncio.to_thread(self.embed_query, text)


class EdgeBGERerank(BaseDocumentCompressor):
    """Reorders retrieved documents with an edge-bge cross-encoder (``reranker`` bundle), best first.

    Keeps the ``top_n`` best (all with None) and puts the score in ``metadata["relevance_score"]``
    (raw logit; its sigmoid with ``normalize=True``).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    reranker: Reranker
    top_n: int | None = 3
    normalize: bool = False

    def __init__(
        self,
        bundle: BundlePath | None = None,
        *,
        reranker: Reranker | None = None,
        top_n: int | None = 3,
        normalize: bool = False,
        **options: Any,
    ) -> None:
        if top_n is not None and (not isinstance(top_n, int) or isinstance(top_n, bool) or top_n < 0):
            raise InputError(f"top_n must be a non-negative int or None, got {top_n!r}")
        model = load_reranker(bundle, reranker, options, who="EdgeBGERerank")
        super().__init__(reranker=model, top_n=top_n, normalize=normalize)

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """The best ``top_n`` documents for ``query``, best first, each with its ``relevance_score``."""
        docs = list(documents)
        if not docs:
            return []
        ranked = self.reranker.rerank(query, [d.page_content for d in docs], top_k=self.top_n, normalize=self.normalize)
        out = []
        for r in ranked:
            doc = docs[r.index]
            meta = {**doc.metadata, "relevance_score": r.score}
            out.append(Document(page_content=doc.page_content, metadata=meta, id=doc.id))
        return out
