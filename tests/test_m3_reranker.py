"""bge-m3 and reranker runtime against FlagEmbedding itself (fp32), plus bad input."""

from __future__ import annotations

import numpy as np
import pytest

import edge_bge
from edge_bge import Embedder, InputError, Reranker
from edge_bge.m3 import colbert_score, lexical_score

from .helpers import corpus_texts

TEXTS = corpus_texts(40) + ["", "北京是中国的首都。", "emoji 🚀 and accents: déjà vu", "word " * 700]


@pytest.fixture(scope="module")
def m3_fp32(bundles, tiny_m3_dir):
    return bundles.get(tiny_m3_dir, "fp32")


@pytest.fixture(scope="module")
def flag_m3(tiny_m3_dir):
    from FlagEmbedding import BGEM3FlagModel

    return BGEM3FlagModel(str(tiny_m3_dir), use_fp16=False, devices="cpu")


@pytest.fixture(scope="module")
def flag_out(flag_m3):
    return flag_m3.encode(
        TEXTS, batch_size=8, max_length=512, return_dense=True, return_sparse=True, return_colbert_vecs=True
    )


def _cos(a, b):
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def test_m3_dense_sparse_colbert_match_flagembedding(m3_fp32, flag_out):
    out = Embedder(m3_fp32, max_batch_tokens=2048).encode(TEXTS, dense=True, sparse=True, colbert=True)
    assert _cos(out.dense, flag_out["dense_vecs"]).min() >= 0.99999
    for got, want in zip(out.sparse, flag_out["lexical_weights"], strict=True):
        assert set(got) == {int(k) for k in want}
        for k, v in want.items():
            assert abs(got[int(k)] - float(v)) <= 1e-4
        assert all(isinstance(k, int) for k in got)
    for got, want in zip(out.colbert, flag_out["colbert_vecs"], strict=True):
        assert got.shape == want.shape and got.dtype == np.float32
        if len(want):
            assert _cos(got, want).min() >= 0.9999


def test_m3_hybrid_scores_match_flagembedding(m3_fp32, flag_m3):
    pairs = [(TEXTS[i], TEXTS[i + 1]) for i in range(0, 20, 2)]
    weights = (0.4, 0.2, 0.4)
    want = flag_m3.compute_score(
        pairs, max_passage_length=512, max_query_length=512, weights_for_different_modes=list(weights)
    )
    got = Embedder(m3_fp32).compute_score(pairs, weights=weights)
    for mode in ("dense", "sparse", "colbert", "sparse+dense", "colbert+sparse+dense"):
        np.testing.assert_allclose(got[mode], want[mode], atol=1e-4)


def test_m3_score_helpers_match_flagembedding(m3_fp32, flag_m3, flag_out):
    out = Embedder(m3_fp32).encode(TEXTS[:4], sparse=True, colbert=True)
    want_lex = flag_m3.compute_lexical_matching_score(flag_out["lexical_weights"][0], flag_out["lexical_weights"][1])
    assert abs(lexical_score(out.sparse[0], out.sparse[1]) - float(want_lex)) <= 1e-4
    want_col = float(flag_m3.colbert_score(flag_out["colbert_vecs"][0], flag_out["colbert_vecs"][1]))
    assert abs(colbert_score(out.colbert[0], out.colbert[1]) - want_col) <= 1e-4


def test_m3_embed_is_dense_path(m3_fp32):
    emb = Embedder(m3_fp32)
    np.testing.assert_allclose(emb.embed(TEXTS[:5]), emb.encode(TEXTS[:5]).dense, atol=1e-6)
    out = emb.encode(TEXTS[:3], dense=False, sparse=True)
    assert out.dense is None and out.colbert is None and len(out.sparse) == 3


def test_m3_int8_dense_gate(bundles, tiny_m3_dir, flag_out):
    got = Embedder(bundles.get(tiny_m3_dir, "int8")).embed(TEXTS)
    assert _cos(got, flag_out["dense_vecs"]).min() >= 0.99


def test_encode_on_dense_bundle_refused(tiny_fp32):
    with pytest.raises(InputError, match="bge-m3 bundle"):
        Embedder(tiny_fp32).encode(["x"], sparse=True)


@pytest.fixture(scope="module")
def reranker_fp32(bundles, tiny_reranker_dir):
    return bundles.get(tiny_reranker_dir, "fp32")


def test_reranker_logits_match_flagreranker(reranker_fp32, tiny_reranker_dir):
    from FlagEmbedding import FlagReranker

    q = "what is the capital of france?"
    pairs = [(q, t) for t in TEXTS] + [("word " * 500, "long query is cut to three quarters")]
    want = np.asarray(
        FlagReranker(str(tiny_reranker_dir), use_fp16=False, devices="cpu").compute_score(pairs, normalize=False)
    )
    got = Reranker(reranker_fp32).score(pairs)
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert (np.argsort(-got[:-1]) == np.argsort(-want[:-1])).all()
    np.testing.assert_allclose(Reranker(reranker_fp32).score(pairs, normalize=True), 1 / (1 + np.exp(-want)), atol=1e-5)


def test_rerank_orders_and_cuts(reranker_fp32):
    rr = Reranker(reranker_fp32)
    docs = TEXTS[:10]
    results = rr.rerank("query", docs, top_k=3)
    scores = rr.score([("query", d) for d in docs])
    assert [r.index for r in results] == list(np.argsort(-scores, kind="stable")[:3])
    assert results[0].text == docs[results[0].index] and results[0].score == pytest.approx(float(scores.max()))
    assert rr.rerank("query", []) == []


def test_rerank_bad_document_named(reranker_fp32):
    with pytest.raises(InputError, match=r"docs\[1\]"):
        Reranker(reranker_fp32).rerank("q", ["fine", 42])


def test_reranker_refuses_embedding_bundle(tiny_fp32):
    with pytest.raises(InputError, match="Reranker takes 'reranker'"):
        Reranker(tiny_fp32)


def test_load_gives_the_class_of_the_bundles_kind(tiny_fp32, m3_fp32, reranker_fp32):
    embedder = edge_bge.load(tiny_fp32, providers="cpu")
    assert type(embedder) is Embedder and embedder.embed(["a text"]).shape == (1, embedder.dim)
    m3 = edge_bge.load(m3_fp32, providers="cpu")
    assert type(m3) is Embedder and m3.encode(["a text"], sparse=True).sparse is not None
    reranker = edge_bge.load(reranker_fp32, providers="cpu")
    assert type(reranker) is Reranker and reranker.query_max_length == reranker.max_length * 3 // 4
