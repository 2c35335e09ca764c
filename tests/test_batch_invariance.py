"""A text gets the same vector whatever else is in its batch, at every precision (DESIGN: cosine
>= 0.99999 alone vs batched), in process and through the server's micro-batching."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from edge_bge import Embedder

from .helpers import corpus_texts
from .server.helpers import metric, running, wait_ready

# short, long (truncated), emoji, CJK, empty: the rows where per-batch scales hurt most
PROBES = [
    "hi",
    "I love this! 😍🔥🎉",
    "北京是中华人民共和国的首都，也是全国的政治和文化中心。",
    "",
    "The patient was advised to rest, drink fluids and return if the fever persisted beyond three days.",
    "word " * 400,
]
INVARIANT = 0.99999


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)


def _neighbours() -> list[str]:
    texts = corpus_texts(400)
    rng = np.random.default_rng(3)
    # 64 others of mixed lengths, long ones included, so the batch tensor's range is theirs
    return [texts[int(i)] for i in rng.choice(len(texts), 64, replace=False)]


@pytest.fixture(scope="module", params=["int8", "fp16"])
def minilm_bundle(request, bundles):
    return bundles.get("all-minilm-l6-v2", request.param)


def test_alone_and_in_a_batch_of_64_under_two_budgets(minilm_bundle):
    others = _neighbours()
    single = Embedder(minilm_bundle)
    alone = np.stack([single.embed([t])[0] for t in PROBES])
    for budget in (300, 100_000):  # many small batches vs one padded batch of everything
        model = Embedder(minilm_bundle, max_batch_tokens=budget)
        for i, text in enumerate(PROBES):
            batch = others[:32] + [text] + others[32:]
            got = model.embed(batch)[32]
            assert _cos(got, alone[i]) >= INVARIANT, (budget, text[:30])


def test_m3_int8_outputs_do_not_depend_on_the_batch(bundles, tiny_m3_dir):
    path = bundles.get(tiny_m3_dir, "int8")
    model = Embedder(path, max_batch_tokens=100_000)
    others = _neighbours()[:16]
    for text in PROBES[:3]:
        alone = model.encode([text], dense=True, sparse=True, colbert=True)
        batched = model.encode([*others, text], dense=True, sparse=True, colbert=True)
        assert _cos(batched.dense[-1], alone.dense[0]) >= INVARIANT
        assert batched.colbert[-1].shape == alone.colbert[0].shape
        assert _cos(batched.colbert[-1], alone.colbert[0]).min() >= INVARIANT
        a, b = alone.sparse[0], batched.sparse[-1]
        assert set(a) == set(b) and max((abs(a[k] - b[k]) for k in a), default=0) <= 1e-4


def test_server_returns_the_in_process_int8_vectors(bundles):
    """Requests coalesced into one run get the vectors each text gets alone in process."""
    model = Embedder(bundles.get("all-minilm-l6-v2", "int8"))
    requests = [[t] for t in PROBES if t] + [[t] for t in _neighbours()[:26]]  # the API refuses ""
    want = np.stack([model.embed(r)[0] for r in requests])
    with running([model], batch_wait_ms=50, warmup=False) as s:
        wait_ready(s.url)

        def call(r: list[str]) -> list[float]:
            out = httpx.post(s.url + "/v1/embeddings", json={"input": r}, timeout=60)
            assert out.status_code == 200, out.text
            return out.json()["data"][0]["embedding"]

        with ThreadPoolExecutor(len(requests)) as pool:
            got = np.array(list(pool.map(call, requests)), dtype=np.float32)
        text = s.client.get("/metrics").text
    assert _cos(got, want).min() >= INVARIANT
    runs = metric(text, "edge_bge_batch_requests_count", model=model.manifest.name, op="embed")
    assert 1 <= runs < len(requests)  # requests were coalesced
