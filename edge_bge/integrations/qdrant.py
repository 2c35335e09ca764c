"""Qdrant: bge-m3's three outputs as one collection, searched with Qdrant's own Query API.

    from qdrant_client import QdrantClient
    from edge_bge.integrations import qdrant

    client = QdrantClient(":memory:")                    # or a path, or a server URL
    qdrant.create_collection(client, "docs", m3)          # m3 = Embedder("models/bge-m3-int8")
    qdrant.upsert_texts(client, "docs", m3, texts)
    hits = qdrant.hybrid_search(client, "docs", m3, "what is bge-m3?", limit=5)

The collection has three named vectors: ``dense`` (cosine), ``sparse`` (the lexical weights as
given: no IDF modifier) and ``colbert`` (a multivector compared by MAX_SIM; dot product, the
vectors being normalised, so they are stored as given). A hybrid search prefetches by dense and
by sparse, fuses the two lists with Qdrant's reciprocal rank fusion, and may rescore the fused
candidates by ColBERT late interaction.

Needs ``pip install 'edge-bge[qdrant]'`` (qdrant-client).
"""

from __future__ import annotations

try:
    from qdrant_client import QdrantClient, models
except ImportError as e:
    from . import missing

    raise missing("qdrant_client", "qdrant") from e

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import numpy as np

from ..embedder import Embedder
from ..errors import InputError
from ..m3 import M3Output
from . import require_m3

__all__ = ["COLBERT", "DENSE", "SPARSE", "create_collection", "hybrid_search", "points", "upsert_texts"]

DENSE, SPARSE, COLBERT = "dense", "sparse", "colbert"
PointId = int | str
# Texts encoded and written per upsert call: memory holds one batch's ColBERT vectors.
UPSERT_BATCH = 256


def create_collection(client: QdrantClient, name: str, embedder: Embedder, *, colbert: bool = True) -> None:
    """Create collection ``name`` for ``embedder``'s bge-m3 outputs: named vectors dense, sparse and
    (with ``colbert``) colbert."""
    require_m3(embedder, "create_collection")
    vectors = {DENSE: models.VectorParams(size=embedder.dim, distance=models.Distance.COSINE)}
    if colbert:
        vectors[COLBERT] = models.VectorParams(
            size=embedder.dim,
            distance=models.Distance.DOT,
            multivector_config=models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM),
        )
    client.create_collection(
        name,
        vectors_config=vectors,
        sparse_vectors_config={SPARSE: models.SparseVectorParams(modifier=models.Modifier.NONE)},
    )


def _sparse(weights: Mapping[int, float]) -> models.SparseVector:
    items = sorted(weights.items())
    return models.SparseVector(indices=[int(t) for t, _ in items], values=[float(w) for _, w in items])


def points(
    output: M3Output, ids: Sequence[PointId], payloads: Sequence[dict[str, Any] | None] | None = None
) -> list[models.PointStruct]:
    """One ``PointStruct`` per text of ``Embedder.encode`` output, with the outputs it holds as named vectors."""
    parts = [x for x in (output.dense, output.sparse, output.colbert) if x is not None]
    if not parts:
        raise InputError("the output holds no vectors: encode with dense, sparse and/or colbert")
    n = len(parts[0])
    if isinstance(ids, str | bytes) or len(ids) != n:
        raise InputError(f"ids must be a sequence of {n} point ids (one per text)")
    if payloads is not None and len(payloads) != n:
        raise InputError(f"payloads must hold {n} items (one per text), got {len(payloads)}")
    out = []
    for i, point_id in enumerate(ids):
        vector: dict[str, Any] = {}
        if output.dense is not None:
            vector[DENSE] = output.dense[i].tolist()
        if output.sparse is not None:
            vector[SPARSE] = _sparse(output.sparse[i])
        if output.colbert is not None:
            vector[COLBERT] = np.asarray(output.colbert[i], dtype=np.float32).tolist()
        payload = payloads[i] if payloads is not None else None
        out.append(models.PointStruct(id=point_id, vector=vector, payload=payload))
    return out


def _has_colbert(client: QdrantClient, collection: str) -> bool:
    vectors = client.get_collection(collection).config.params.vectors
    return isinstance(vectors, Mapping) and COLBERT in vectors


def _batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def upsert_texts(
    client: QdrantClient,
    collection: str,
    embedder: Embedder,
    texts: Sequence[str],
    *,
    ids: Sequence[PointId] | None = None,
    payloads: Sequence[dict[str, Any] | None] | None = None,
    batch_size: int = UPSERT_BATCH,
) -> list[PointId]:
    """Encode ``texts`` and write them to ``collection``; returns their ids (default 0..n-1).

    The payload defaults to ``{"text": text}``; ColBERT vectors are written when the collection has them."""
    require_m3(embedder, "upsert_texts")
    if isinstance(texts, str):
        raise InputError("texts must be a list of str, not one str")
    if batch_size < 1:
        raise InputError(f"batch_size must be positive, got {batch_size}")
    ids = list(range(len(texts))) if ids is None else list(ids)
    if len(ids) != len(texts):
        raise InputError(f"ids must hold {len(texts)} items (one per text), got {len(ids)}")
    if payloads is None:
        payloads = [{"text": t} for t in texts]
    if len(payloads) != len(texts):
        raise InputError(f"payloads must hold {len(texts)} items (one per text), got {len(payloads)}")
    colbert = _has_colbert(client, collection)
    for part in _batches(len(texts), batch_size):
        out = embedder.encode(list(texts[part]), dense=True, sparse=True, colbert=colbert)
        client.upsert(collection, points=points(out, ids[part], payloads[part]), wait=True)
    return ids


def hybrid_search(
    client: QdrantClient,
    collection: str,
    embedder: Embedder,
    query: str,
    limit: int = 10,
    *,
    rescore: Literal["colbert"] | None = "colbert",
    prefetch_limit: int | None = None,
    query_filter: models.Filter | None = None,
) -> list[models.ScoredPoint]:
    """The ``limit`` best points for ``query``, best first (payloads included).

    Dense and sparse candidates (``prefetch_limit`` each, default max(4 * limit, 20)) are fused by
    Qdrant's RRF; with ``rescore="colbert"`` the fused candidates are then ordered by ColBERT MAX_SIM."""
    require_m3(embedder, "hybrid_search")
    if not isinstance(query, str):
        raise InputError(f"query must be a str, got {type(query).__name__}")
    if rescore not in ("colbert", None):
        raise InputError(f"rescore must be 'colbert' or None, got {rescore!r}")
    if limit < 1:
        raise InputError(f"limit must be positive, got {limit}")
    wide = prefetch_limit if prefetch_limit is not None else max(4 * limit, 20)
    if wide < limit:
        raise InputError(f"prefetch_limit ({wide}) must be at least limit ({limit})")
    if rescore == "colbert" and not _has_colbert(client, collection):
        raise InputError(f"collection {collection!r} has no {COLBERT!r} vectors: create it with colbert=True")
    q = embedder.encode(embedder.manifest.query_instruction + query, sparse=True, colbert=rescore == "colbert")
    assert q.dense is not None and q.sparse is not None
    candidates = [
        models.Prefetch(query=q.dense[0].tolist(), using=DENSE, limit=wide, filter=query_filter),
        models.Prefetch(query=_sparse(q.sparse[0]), using=SPARSE, limit=wide, filter=query_filter),
    ]
    fuse = models.FusionQuery(fusion=models.Fusion.RRF)
    if rescore is None:
        found = client.query_points(
            collection, prefetch=candidates, query=fuse, limit=limit, query_filter=query_filter, with_payload=True
        )
    else:
        assert q.colbert is not None
        found = client.query_points(
            collection,
            prefetch=[models.Prefetch(prefetch=candidates, query=fuse, limit=wide)],
            query=q.colbert[0].tolist(),
            using=COLBERT,
            limit=limit,
            query_filter=query_filter,
            with_payload=True,
        )
    return list(found.points)
