"""LlamaIndex: ``EdgeBGEEmbedding``, a ``BaseEmbedding`` on an edge-bge bundle.

    from llama_index.core import Settings, VectorStoreIndex
    from edge_bge.integrations.llama_index import EdgeBGEEmbedding

    Settings.embed_model = EdgeBGEEmbedding("models/bge-small-int8")
    index = VectorStoreIndex.from_documents(documents)

Needs ``pip install 'edge-bge[llama-index]'`` (llama-index-core).
"""

from __future__ import annotations

try:
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.callbacks import CallbackManager
except ImportError as e:
    from . import missing

    raise missing("llama_index.core", "llama-index") from e

import asyncio
from typing import Any

from pydantic import PrivateAttr

from ..embedder import Embedder
from ..errors import InputError
from . import BundlePath, load_embedder

__all__ = ["EdgeBGEEmbedding"]

# Texts per call from LlamaIndex to the Embedder, which batches by tokens itself: large calls
# let it sort by length across more texts (LlamaIndex's default is 10).
DEFAULT_EMBED_BATCH_SIZE = 512


class EdgeBGEEmbedding(BaseEmbedding):
    """LlamaIndex embeddings from an edge-bge ``embedding`` or ``m3`` bundle (its dense vectors).

    ``EdgeBGEEmbedding(bundle, **options)`` loads an ``edge_bge.Embedder`` with ``options``
    (providers, threads, ...); ``EdgeBGEEmbedding(embedder=model)`` shares one. Queries get the
    bundle's query instruction, texts do not. The async methods run in a worker thread.
    """

    _embedder: Embedder = PrivateAttr()

    def __init__(
        self,
        bundle: BundlePath | None = None,
        *,
        embedder: Embedder | None = None,
        embed_batch_size: int = DEFAULT_EMBED_BATCH_SIZE,
        callback_manager: CallbackManager | None = None,
        **options: Any,
    ) -> None:
        model = load_embedder(bundle, embedder, options, who="EdgeBGEEmbedding")
        super().__init__(
            model_name=model.manifest.name, embed_batch_size=embed_batch_size, callback_manager=callback_manager
        )
        self._embedder = model

    @classmethod
    def class_name(cls) -> str:
        return "EdgeBGEEmbedding"

    @property
    def embedder(self) -> Embedder:
        return self._embedder

    def _get_query_embedding(self, query: str) -> list[float]:
        if not isinstance(query, str):
            raise InputError(f"a query must be a str, got {type(query).__name__}")
        return self._embedder.embed_queries(query).tolist()

    def _get_text_embedding(self, text: str) -> list[float]:
        if not isinstance(text, str):
            raise InputError(f"a text must be a str, got {type(text).__name__}")
        return self._embedder.embed_documents(text).tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._embedder.embed_documents(list(texts)).tolist()

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)
