"""Embedder: parity with the reference on real text, batching invariance, input rules, threads."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from edge_bge import Embedder, InputError

from .helpers import corpus_texts


def _cos(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def texts500():
    return corpus_texts(500)


@pytest.fixture(scope="module")
def st_vectors(st_minilm, texts500):
    return st_minilm.encode(texts500, batch_size=32)


def test_minilm_fp32_matches_sentence_transformers(minilm_fp32, texts500, st_vectors):
    got = Embedder(minilm_fp32, providers="cpu").embed(texts500)
    assert got.dtype == np.float32 and got.shape == (500, 384)
    assert _cos(got, st_vectors).min() >= 0.99999


def test_minilm_int8_meets_gate_on_real_text(minilm_int8, texts500, st_vectors):
    cos = _cos(Embedder(minilm_int8, providers="cpu").embed(texts500), st_vectors)
    assert cos.min() >= 0.995 and cos.mean() >= 0.998


def test_long_and_empty_texts_match_reference(minilm_fp32, st_minilm):
    texts = ["", "word " * 600, "short"]
    got = Embedder(minilm_fp32).embed(texts)
    assert _cos(got, st_minilm.encode(texts)).min() >= 0.99999


def test_order_batch_size_and_budget_do_not_change_vectors(tiny_fp32):
    texts = corpus_texts(120)
    ref = Embedder(tiny_fp32, max_batch_tokens=8192).embed(texts)
    perm = np.random.default_rng(0).permutation(len(texts))
    for budget in (1, 300, 100_000):
        got = Embedder(tiny_fp32, max_batch_tokens=budget).embed([texts[i] for i in perm])
        np.testing.assert_allclose(got, ref[perm], atol=2e-6)


def test_shapes(tiny_fp32):
    emb = Embedder(tiny_fp32)
    assert emb.embed("one").shape == (32,)
    assert emb.embed([]).shape == (0, 32)
    assert emb.embed(["a", "b"]).shape == (2, 32)
    np.testing.assert_allclose(emb.embed_documents(["a"]), emb.embed(["a"]))


@pytest.mark.parametrize("bad,index", [(["ok", 3], 1), (["ok", "fine", None], 2), ([b"bytes"], 0)])
def test_non_strings_named(tiny_fp32, bad, index):
    with pytest.raises(InputError, match=rf"texts\[{index}\]"):
        Embedder(tiny_fp32).embed(bad)


def test_lone_surrogate_is_input_error(tiny_fp32):
    with pytest.raises(InputError, match=r"texts\[1\].*Unicode"):
        Embedder(tiny_fp32).embed(["fine", "broken \ud800 text"])


def test_truncate_false_names_index_and_count(tiny_fp32):
    emb = Embedder(tiny_fp32, truncate=False)
    with pytest.raises(InputError, match=r"texts\[1\] has \d+ tokens.*512"):
        emb.embed(["short", "word " * 700])
    assert emb.embed(["short"]).shape == (1, 32)


def test_embed_stream_equals_embed(tiny_fp32):
    emb = Embedder(tiny_fp32)
    texts = corpus_texts(50)
    chunks = list(emb.embed_stream(iter(texts), chunk_size=16))
    assert [len(c) for c in chunks] == [16, 16, 16, 2]
    np.testing.assert_allclose(np.concatenate(chunks), emb.embed(texts), atol=2e-6)


def test_threads_get_the_same_vectors(tiny_fp32):
    emb = Embedder(tiny_fp32, threads=1)
    texts = corpus_texts(64)
    want = emb.embed(texts)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda k: (k, emb.embed(texts[k::4])), list(range(4)) * 4))
    for k, got in results:
        np.testing.assert_allclose(got, want[k::4], atol=2e-6)


def test_show_progress(tiny_fp32, capsys):
    Embedder(tiny_fp32).embed(corpus_texts(10), show_progress=True)
    assert "10/10" in capsys.readouterr().err


def test_runtime_imports_no_torch(minilm_fp32):
    code = textwrap.dedent(
        f"""
        import sys, edge_bge
        v = edge_bge.Embedder({str(minilm_fp32)!r}).embed(["hello world"])
        assert v.shape == (1, 384)
        bad = sorted(m for m in ("torch", "transformers", "onnx", "sentence_transformers") if m in sys.modules)
        print("LOADED:" + ",".join(bad))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "LOADED:"


# ONNX Runtime stays silent by itself under a CI marker (CI=true, GITHUB_ACTIONS, ...), so the probe
# runs in a minimal environment, as on a user's machine, with its cache inside ``home``.
_PROBE_ENV = ("PATH", "LANG", "LC_ALL", "TMPDIR", "TOKENIZERS_PARALLELISM")


def _telemetry_written(tiny_fp32, home, **env) -> bool:
    """Embed in a fresh process with HOME at ``home``; did ONNX Runtime write its telemetry store?"""
    code = f"import edge_bge; edge_bge.Embedder({str(tiny_fp32)!r}).embed(['hello world'])"
    base = {k: os.environ[k] for k in _PROBE_ENV if k in os.environ}
    base.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"))
    subprocess.run([sys.executable, "-c", code], env={**base, **env}, check=True, timeout=120)
    return any(home.rglob("onnxruntime.db"))


def test_no_onnxruntime_telemetry(tiny_fp32, tmp_path):
    (tmp_path / "a").mkdir()
    assert not _telemetry_written(tiny_fp32, tmp_path / "a")
    # the probe can see telemetry: a user who turns it back on gets it
    (tmp_path / "b").mkdir()
    assert _telemetry_written(tiny_fp32, tmp_path / "b", ORT_DISABLE_TELEMETRY="0")
