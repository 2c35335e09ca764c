"""LangChain, LlamaIndex, Qdrant and Milvus formats, each against the real library on real text."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import numpy as np
import pytest

from edge_bge import Embedder, InputError, Reranker
from edge_bge.integrations.formats import to_milvus_sparse
from edge_bge.m3 import colbert_score

from .helpers import corpus_texts

# passages of the project's corpus, and their first sentences as the queries that should find them
PASSAGES = [t for t in corpus_texts(600) if len(t) > 200][:150]
PROBES = [0, 7, 19, 42, 77, 101, 133, 149]


def first_sentence(text: str) -> str:
    return text.split(". ")[0]


@pytest.fixture(scope="module")
def minilm(minilm_fp32) -> Embedder:
    return Embedder(minilm_fp32)


@pytest.fixture(scope="module")
def reranker_bundle(bundles, tiny_reranker_dir):
    return bundles.get(tiny_reranker_dir, "fp32")


@pytest.fixture(scope="module")
def m3(bundles, tiny_m3_dir) -> Embedder:
    return Embedder(bundles.get(tiny_m3_dir, "fp32"))


# ---- LangChain ---------------------------------------------------------------------------------


def test_langchain_vector_store_finds_the_passage(minilm):
    from langchain_core.vectorstores import InMemoryVectorStore

    from edge_bge.integrations.langchain import EdgeBGEEmbeddings

    embeddings = EdgeBGEEmbeddings(embedder=minilm)
    store = InMemoryVectorStore.from_texts(PASSAGES, embeddings, metadatas=[{"i": i} for i in range(len(PASSAGES))])
    for i in PROBES:
        (hit,) = store.similarity_search(first_sentence(PASSAGES[i]), k=1)
        assert hit.metadata["i"] == i and hit.page_content == PASSAGES[i]
    np.testing.assert_array_equal(np.array(embeddings.embed_documents(PASSAGES[:5])), minilm.embed(PASSAGES[:5]))


def test_langchain_loads_a_bundle_and_applies_the_query_instruction(tiny_fp32):
    from edge_bge.integrations.langchain import EdgeBGEEmbeddings

    embeddings = EdgeBGEEmbeddings(tiny_fp32, threads=1)
    model = embeddings.embedder
    assert model.manifest.query_instruction and model.session.get_session_options().intra_op_num_threads == 1
    query = "how do I read a file line by line?"
    np.testing.assert_array_equal(embeddings.embed_query(query), model.embed(model.manifest.query_instruction + query))
    assert not np.allclose(embeddings.embed_query(query), embeddings.embed_documents([query])[0])
    with pytest.raises(InputError, match="not one str"):
        embeddings.embed_documents("one text")


def test_langchain_async_equals_sync_and_leaves_the_loop_free(minilm):
    from edge_bge.integrations.langchain import EdgeBGEEmbeddings

    embeddings = EdgeBGEEmbeddings(embedder=minilm)
    texts = PASSAGES[:120]

    async def main() -> tuple[list[list[float]], list[float], int]:
        ticks = 0
        done = False

        async def ticker() -> None:
            nonlocal ticks
            while not done:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        ticks = 0
        docs = await embeddings.aembed_documents(texts)
        during = ticks  # the loop ran other work while the model did
        done = True
        await task
        return docs, await embeddings.aembed_query("read a file"), during

    docs, query, during = asyncio.run(main())
    assert docs == embeddings.embed_documents(texts)
    assert query == embeddings.embed_query("read a file")
    assert during > 1


def test_langchain_rerank_matches_reranker(reranker_bundle):
    from langchain_core.documents import Document

    from edge_bge.integrations.langchain import EdgeBGERerank

    query = first_sentence(PASSAGES[3])
    docs = [Document(page_content=t, metadata={"source": i}, id=f"d{i}") for i, t in enumerate(PASSAGES[:12])]
    compressor = EdgeBGERerank(reranker_bundle, top_n=5)
    got = compressor.compress_documents(docs, query)
    want = Reranker(reranker_bundle).rerank(query, PASSAGES[:12], top_k=5)
    assert [d.metadata["source"] for d in got] == [r.index for r in want]
    assert [d.id for d in got] == [f"d{r.index}" for r in want]
    assert [d.metadata["relevance_score"] for d in got] == [r.score for r in want]
    every = EdgeBGERerank(reranker=compressor.reranker, top_n=None, normalize=True).compress_documents(docs, query)
    assert len(every) == 12 and all(0 < d.metadata["relevance_score"] < 1 for d in every)
    assert [d.id for d in every][:5] == [d.id for d in got]
    assert asyncio.run(compressor.acompress_documents(docs, query)) == got
    assert compressor.compress_documents([], query) == []


def test_langchain_wrong_kind_named(reranker_bundle, minilm_fp32):
    from edge_bge.integrations.langchain import EdgeBGEEmbeddings, EdgeBGERerank

    with pytest.raises(InputError, match="is a 'reranker' bundle"):
        EdgeBGEEmbeddings(reranker_bundle)
    with pytest.raises(InputError, match="is a 'embedding' bundle"):
        EdgeBGERerank(minilm_fp32)
    with pytest.raises(InputError, match="exactly one"):
        EdgeBGEEmbeddings()
    with pytest.raises(InputError, match="top_n"):
        EdgeBGERerank(reranker_bundle, top_n=-1)


# ---- LlamaIndex --------------------------------------------------------------------------------


def test_llama_index_vector_index_finds_the_node(minilm):
    from llama_index.core import VectorStoreIndex
    from llama_index.core.schema import TextNode

    from edge_bge.integrations.llama_index import EdgeBGEEmbedding

    embed_model = EdgeBGEEmbedding(embedder=minilm)
    nodes = [TextNode(text=t, id_=f"n{i}") for i, t in enumerate(PASSAGES)]
    index = VectorStoreIndex(nodes, embed_model=embed_model)
    retriever = index.as_retriever(similarity_top_k=3)
    for i in PROBES:
        assert retriever.retrieve(first_sentence(PASSAGES[i]))[0].node.node_id == f"n{i}"
    query = first_sentence(PASSAGES[PROBES[1]])
    hits = asyncio.run(retriever.aretrieve(query))
    assert [h.node.node_id for h in hits] == [h.node.node_id for h in retriever.retrieve(query)]
    assert embed_model.get_text_embedding_batch(PASSAGES[:4]) == minilm.embed(PASSAGES[:4]).tolist()
    assert asyncio.run(embed_model.aget_text_embedding_batch(PASSAGES[:4])) == minilm.embed(PASSAGES[:4]).tolist()


def test_llama_index_query_instruction_and_kind(tiny_fp32, reranker_bundle):
    from edge_bge.integrations.llama_index import EdgeBGEEmbedding

    embed_model = EdgeBGEEmbedding(tiny_fp32)
    model = embed_model.embedder
    assert embed_model.model_name == model.manifest.name
    query = "symptoms of flu"
    assert embed_model.get_query_embedding(query) == model.embed_queries(query).tolist()
    assert asyncio.run(embed_model.aget_query_embedding(query)) == model.embed_queries(query).tolist()
    assert embed_model.get_text_embedding(query) == model.embed(query).tolist()
    with pytest.raises(InputError, match="is a 'reranker' bundle"):
        EdgeBGEEmbedding(reranker_bundle)


# ---- Qdrant ------------------------------------------------------------------------------------

M3_TEXTS = corpus_texts(60)


@pytest.fixture(scope="module")
def qdrant_docs(m3):
    from qdrant_client import QdrantClient

    from edge_bge.integrations import qdrant

    client = QdrantClient(":memory:")
    qdrant.create_collection(client, "docs", m3)
    ids = qdrant.upsert_texts(client, "docs", m3, M3_TEXTS, batch_size=16)
    assert ids == list(range(len(M3_TEXTS)))
    return client


@pytest.mark.parametrize("rescore", ["colbert", None])
def test_qdrant_hybrid_search_finds_the_stored_text(m3, qdrant_docs, rescore):
    from edge_bge.integrations import qdrant

    for k in (0, 5, 17, 33, 59):
        hits = qdrant.hybrid_search(qdrant_docs, "docs", m3, M3_TEXTS[k], limit=5, rescore=rescore)
        assert hits[0].id == k and hits[0].payload == {"text": M3_TEXTS[k]}
        assert len(hits) == 5 and len({h.id for h in hits}) == 5


def test_qdrant_colbert_rescore_is_max_sim(m3, qdrant_docs):
    from edge_bge.integrations import qdrant

    query = "return the hash of a file"
    hits = qdrant.hybrid_search(qdrant_docs, "docs", m3, query, limit=8)
    q = m3.encode(query, colbert=True).colbert[0]
    docs = m3.encode([M3_TEXTS[h.id] for h in hits], colbert=True).colbert
    # Qdrant's MAX_SIM sums over query vectors what FlagEmbedding's colbert score averages
    want = [colbert_score(q, d) * len(q) for d in docs]
    np.testing.assert_allclose([h.score for h in hits], want, rtol=1e-4)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_qdrant_stores_what_encode_gives(m3, qdrant_docs):
    ids = [0, 1, 2, 40]
    out = m3.encode([M3_TEXTS[i] for i in ids], dense=True, sparse=True, colbert=True)
    stored = {p.id: p for p in qdrant_docs.retrieve("docs", ids, with_vectors=True)}
    for j, i in enumerate(ids):
        vec = stored[i].vector
        sparse = vec["sparse"]
        assert dict(zip(sparse.indices, sparse.values, strict=True)) == out.sparse[j]
        np.testing.assert_array_equal(np.array(vec["colbert"], dtype=np.float32), out.colbert[j])
        np.testing.assert_allclose(vec["dense"], out.dense[j], atol=1e-6)


def test_qdrant_points_and_collection_layout(m3):
    from qdrant_client import QdrantClient, models

    from edge_bge.integrations import qdrant

    client = QdrantClient(":memory:")
    qdrant.create_collection(client, "lean", m3, colbert=False)
    params = client.get_collection("lean").config.params
    assert set(params.vectors) == {"dense"} and params.vectors["dense"].distance == models.Distance.COSINE
    assert params.sparse_vectors["sparse"].modifier in (None, models.Modifier.NONE)
    out = m3.encode(M3_TEXTS[:3], sparse=True)
    pts = qdrant.points(out, ["00000000-0000-0000-0000-00000000000a", 11, 12], [{"a": 1}, None, {"b": 2}])
    client.upsert("lean", points=pts, wait=True)
    assert client.count("lean").count == 3
    assert set(pts[0].vector) == {"dense", "sparse"}
    with pytest.raises(InputError, match="no 'colbert' vectors"):
        qdrant.hybrid_search(client, "lean", m3, "x")
    assert qdrant.hybrid_search(client, "lean", m3, M3_TEXTS[1], limit=1, rescore=None)[0].id == 11
    with pytest.raises(InputError, match="3 point ids"):
        qdrant.points(out, [1, 2])
    with pytest.raises(InputError, match="rescore"):
        qdrant.hybrid_search(client, "lean", m3, "x", rescore="dense")


def test_qdrant_refuses_a_dense_only_bundle(minilm):
    from qdrant_client import QdrantClient

    from edge_bge.integrations import qdrant

    client = QdrantClient(":memory:")
    for call in (
        lambda: qdrant.create_collection(client, "docs", minilm),
        lambda: qdrant.hybrid_search(client, "docs", minilm, "query"),
        lambda: qdrant.upsert_texts(client, "docs", minilm, ["text"]),
    ):
        with pytest.raises(InputError, match="needs a bge-m3 bundle .* is a 'embedding' bundle"):
            call()


# ---- Milvus format -----------------------------------------------------------------------------


def test_milvus_sparse_rows_and_csr(m3):
    from scipy.sparse import csr_array

    out = m3.encode(M3_TEXTS[:10] + [""], sparse=True)
    rows = to_milvus_sparse(out)
    assert rows.rows == out.sparse and to_milvus_sparse(out.sparse).rows == rows.rows
    assert rows.indptr.dtype == np.int64 and rows.data.dtype == np.float32 and len(rows.indptr) == 12
    matrix = csr_array((rows.data, rows.indices, rows.indptr), shape=(11, rows.width))
    for i, weights in enumerate(out.sparse):
        row = matrix[[i], :].toarray()[0]
        assert {int(t): float(row[t]) for t in np.nonzero(row)[0]} == weights
    assert rows.indptr[-2] == rows.indptr[-1]  # the empty text: an empty row
    with pytest.raises(InputError, match="sparse=True"):
        to_milvus_sparse(m3.encode(M3_TEXTS[:2]))


# ---- packaging ---------------------------------------------------------------------------------

_MISSING = """
import sys
for name in {blocked!r}:
    sys.modules[name] = None  # as if the package were not installed
import edge_bge.integrations
try:
    import edge_bge.integrations.{module}
except ImportError as e:
    print(str(e))
"""


@pytest.mark.parametrize(
    "module,blocked,extra",
    [
        ("langchain", ["langchain_core"], "langchain"),
        ("llama_index", ["llama_index", "llama_index.core"], "llama-index"),
        ("qdrant", ["qdrant_client"], "qdrant"),
    ],
)
def test_missing_library_names_the_extra(module, blocked, extra):
    code = _MISSING.format(blocked=blocked, module=module)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert f"pip install 'edge-bge[{extra}]'" in out


def test_integrations_package_imports_no_third_party_library():
    code = (
        "import sys, json, edge_bge.integrations, edge_bge.integrations.formats; "
        "print(json.dumps([m for m in ('langchain_core', 'llama_index', 'qdrant_client', 'torch') if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []
