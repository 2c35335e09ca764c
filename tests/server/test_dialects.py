"""Ollama's API with the real ``ollama`` client, LangChain's OpenAI embeddings as users configure them,
and each dialect's error shape on paths no route serves."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import cohere
import httpx
import numpy as np
import ollama
import openai
import pytest
from langchain_openai import OpenAIEmbeddings

from edge_bge import Embedder, Reranker
from edge_bge.manifest import MANIFEST_NAME

from ..helpers import corpus_texts
from .helpers import cos, running


@pytest.fixture(scope="module")
def minilm(minilm_fp32: Path) -> Embedder:
    return Embedder(minilm_fp32)


@pytest.fixture(scope="module")
def srv(minilm: Embedder) -> Iterator[SimpleNamespace]:
    with running([minilm], warmup=False) as s:
        yield s


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_ollama_client_embeds_as_an_ollama_server_would(srv, minilm):
    texts = corpus_texts(6)
    name = minilm.manifest.name
    client = ollama.Client(host=srv.url)
    tags = client.list()
    assert [m.model for m in tags.models] == [f"{name}:latest"]
    assert tags.models[0].details.quantization_level == minilm.manifest.precision.value
    r = client.embed(model=f"{name}:latest", input=texts)  # the name as Ollama's tools write it
    got = np.array(r.embeddings, dtype=np.float32)
    assert got.shape == (6, 384) and np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)  # normalised
    assert cos(got, minilm.embed(texts)).min() >= 1 - 1e-6
    assert r.model == f"{name}:latest" and r.prompt_eval_count == sum(len(e) for e in minilm.tokenize(texts))
    assert r.total_duration > 0
    one = client.embed(model=name, input=texts[0])
    assert np.allclose(one.embeddings, got[:1], atol=1e-6)
    assert client.embed(model=name, input=[]).embeddings == []  # Ollama's "load the model" call
    older = client.embeddings(model=name, prompt=texts[1])  # the older API: the model's own vector
    assert np.allclose(older.embedding, minilm.embed([texts[1]])[0], atol=1e-6)
    assert client.embeddings(model=name, prompt="").embedding == []


def test_ollama_errors_are_what_its_client_reads(srv, minilm):
    name = minilm.manifest.name
    client = ollama.Client(host=srv.url)
    with running([minilm], warmup=False, strict_model_names=True) as strict:
        with pytest.raises(ollama.ResponseError) as e:
            ollama.Client(host=strict.url).embed(model="nomic-embed-text", input="x")
        assert e.value.status_code == 404 and "'nomic-embed-text' is not served here" in e.value.error
    assert len(client.embed(model="nomic-embed-text", input="x").embeddings) == 1  # one model: any name
    cases = [
        (dict(model=name, input="x", dimensions=7), 400, "'dimensions' must be 384"),
        (dict(model=name, input="word " * 600, truncate=False), 413, "truncate"),
        (dict(model=name, input=["ok", ""]), 400, "input[1] is an empty string"),
    ]
    for kwargs, status, fragment in cases:
        with pytest.raises(ollama.ResponseError) as e:
            client.embed(**kwargs)
        assert e.value.status_code == status and fragment in e.value.error, (kwargs, e.value)
    r = httpx.post(srv.url + "/api/embed", json={"input": "x"})
    assert r.status_code == 400 and r.json() == {"error": "'model' is required"}  # Ollama's status for it
    long = client.embed(model=name, input="word " * 600)  # Ollama truncates unless told not to
    assert len(long.embeddings) == 1


@pytest.mark.parametrize(
    ("path", "keys"),
    [("/api/nope", {"error"}), ("/v1/nope", {"error"}), ("/nope", {"error", "error_type"})],
)
def test_unrouted_paths_answer_in_their_dialect(srv, path, keys):
    r = httpx.get(srv.url + path)
    assert r.status_code == 404 and set(r.json()) == keys
    if path.startswith("/v1/"):
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_langchain_openai_embeddings_against_the_server(srv, minilm):
    texts = corpus_texts(5)
    # as users point it at a compatible server: any model name, text sent as text
    lc = OpenAIEmbeddings(
        model="text-embedding-3-small", base_url=srv.url + "/v1", api_key="unused", check_embedding_ctx_length=False
    )
    assert cos(np.array(lc.embed_documents(texts)), minilm.embed(texts)).min() >= 1 - 1e-6
    assert cos(np.array(lc.embed_query(texts[0])), minilm.embed([texts[0]])).min() >= 1 - 1e-6
    # LangChain's default (check_embedding_ctx_length=True) sends tiktoken ids, which mean nothing to this
    # tokenizer: the server refuses them with a 400 that names the flag to set
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model="text-embedding-3-small", input=[[9906, 1917], [15339]])
    assert e.value.status_code == 400 and "check_embedding_ctx_length=False" in str(e.value)


COMPACT = ["float", "int8", "uint8", "binary", "ubinary"]


def test_cohere_client_gets_compact_embeddings_equal_to_the_python_api(srv, minilm):
    texts = corpus_texts(8)
    assert minilm.manifest.quantization_ranges is not None  # recorded at export
    v2 = cohere.ClientV2(api_key="unused", base_url=srv.url, max_retries=0)
    r = v2.embed(model="embed-english-v3.0", texts=texts, input_type="search_document", embedding_types=COMPACT)
    for t in COMPACT:
        got = np.array(getattr(r.embeddings, "float_" if t == "float" else t))
        want = minilm.embed(texts, dtype="float32" if t == "float" else t)
        assert got.shape == want.shape and (np.allclose(got, want, atol=1e-6) if t == "float" else (got == want).all())
    assert r.meta.billed_units.input_tokens == sum(len(e) for e in minilm.tokenize(texts))
    q = v2.embed(model="m", texts=[texts[0]], input_type="search_query", embedding_types=["float"])
    assert cos(np.array(q.embeddings.float_), minilm.embed_queries([texts[0]])).min() >= 1 - 1e-6
    v1 = cohere.Client(api_key="unused", base_url=srv.url, max_retries=0)
    plain = v1.embed(texts=texts[:2], model="m", input_type="search_document")  # no types: plain floats
    assert plain.response_type == "embeddings_floats"
    assert cos(np.array(plain.embeddings), minilm.embed(texts[:2])).min() >= 1 - 1e-6
    by_type = v1.embed(texts=texts[:2], model="m", input_type="search_document", embedding_types=["binary"])
    assert by_type.response_type == "embeddings_by_type"
    assert (np.array(by_type.embeddings.binary) == minilm.embed(texts[:2], dtype="binary")).all()


@pytest.mark.parametrize("dtype", ["float16", "int8", "uint8", "binary", "ubinary"])
def test_tei_embed_dtype_equals_the_python_api(srv, minilm, dtype):
    texts = corpus_texts(4)
    r = httpx.post(srv.url + "/embed", json={"inputs": texts, "dtype": dtype})
    want = minilm.embed(texts, dtype=dtype)
    got = np.array(r.json())
    assert got.shape == want.shape
    assert np.allclose(got, want, atol=1e-3) if dtype == "float16" else (got == want).all()


def test_compact_types_refuse_bad_values_with_the_accepted_ones(srv):
    bad = httpx.post(srv.url + "/embed", json={"inputs": "x", "dtype": "int4"})
    assert bad.status_code == 422 and all(t in bad.json()["error"] for t in ("float16", "ubinary"))
    bad = httpx.post(
        srv.url + "/v2/embed", json={"texts": ["x"], "input_type": "search_query", "embedding_types": ["int4"]}
    )
    assert (
        bad.status_code == 422 and "ubinary" in bad.json()["message"] and set(bad.json()) == {"message", "error_type"}
    )
    bad = httpx.post(srv.url + "/v2/embed", json={"texts": ["x"]})
    assert bad.status_code == 422 and "input_type" in bad.json()["message"]
    long = httpx.post(srv.url + "/v1/embed", json={"texts": ["word " * 600], "truncate": "NONE"})
    assert long.status_code == 413


def test_int8_without_recorded_ranges_is_refused_with_the_reason(minilm_fp32, tmp_path):
    import json
    import shutil

    copy = tmp_path / "old"
    shutil.copytree(minilm_fp32, copy)
    manifest = json.loads((copy / MANIFEST_NAME).read_text())
    del manifest["quantization_ranges"]  # a bundle exported before ranges were recorded
    (copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    with running([Embedder(copy)], warmup=False) as s:
        r = httpx.post(s.url + "/v1/embed", json={"texts": ["x"], "embedding_types": ["int8"]})
        assert r.status_code == 400 and "re-export" in r.json()["message"]
        assert httpx.post(s.url + "/embed", json={"inputs": "x", "dtype": "binary"}).status_code == 200


@pytest.fixture(scope="module")
def with_reranker(minilm: Embedder, bundles, tiny_reranker_dir) -> Iterator[SimpleNamespace]:
    reranker = Reranker(bundles.get(tiny_reranker_dir, "fp32"))
    with running([minilm, reranker], warmup=False) as s:
        s.reranker = reranker
        yield s


def test_cohere_v2_inputs_and_rerank_as_its_client_sends_them(with_reranker, minilm):
    texts = corpus_texts(4)
    v2 = cohere.ClientV2(api_key="unused", base_url=with_reranker.url, max_retries=0)
    parts = [{"content": [{"type": "text", "text": t}]} for t in texts]  # v2's own input shape
    r = v2.embed(model="m", inputs=parts, input_type="search_document", embedding_types=["float"])
    assert cos(np.array(r.embeddings.float_), minilm.embed(texts)).min() >= 1 - 1e-6
    ranked = v2.rerank(model="rerank-v3.5", query="where do the texts come from?", documents=texts, top_n=3)
    want = with_reranker.reranker.rerank("where do the texts come from?", texts, top_k=3, normalize=True)
    assert [x.index for x in ranked.results] == [w.index for w in want]
    assert np.allclose([x.relevance_score for x in ranked.results], [w.score for w in want], atol=1e-6)


def test_cohere_values_not_served_here_are_a_400_saying_so(srv):
    start = httpx.post(srv.url + "/v1/embed", json={"texts": ["x"], "truncate": "START"})
    assert start.status_code == 400 and '"END" or "NONE"' in start.json()["message"]
    b64 = httpx.post(
        srv.url + "/v2/embed", json={"texts": ["x"], "input_type": "clustering", "embedding_types": ["base64"]}
    )
    assert b64.status_code == 400 and "'base64' is not served here" in b64.json()["message"]
    assert httpx.post(srv.url + "/embed", json={"inputs": "x", "dtype": None}).status_code == 200  # null: default
    unrouted = httpx.get(srv.url + "/v2/nope")
    assert unrouted.status_code == 404 and set(unrouted.json()) == {"message", "error_type"}  # Cohere's shape


def test_ollama_show_gives_the_sizes_its_clients_read(srv, minilm):
    shown = ollama.Client(host=srv.url).show(f"{minilm.manifest.name}:latest")
    assert shown.modelinfo["bert.embedding_length"] == 384 and shown.modelinfo["bert.context_length"] == 256
    assert shown.capabilities == ["embedding"] and shown.details.family == "bert"
