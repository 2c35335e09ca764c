"""The HTTP server on real sockets (127.0.0.1): dialects, micro-batching, limits, errors, security, drain."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_bge import Embedder
from edge_bge.server import Registry, Served, ServerConfig, Service
from edge_bge.server.batcher import Batcher, QueueFull
from edge_bge.server.metrics import Metrics
from edge_bge.server.run import DrainingServer

from ..helpers import ROOT, corpus_texts
from .helpers import Gated, cos, free_port, metric, post_async, running, wait_metric, wait_ready


# ---- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tiny_fp32: Path) -> Embedder:
    return Embedder(tiny_fp32)


@pytest.fixture(scope="module")
def minilm(minilm_fp32: Path) -> Embedder:
    return Embedder(minilm_fp32)


LIMITS = {"max_items": 16, "max_chars": 20_000, "max_body_bytes": 200_000, "batch_wait_ms": 20}


@pytest.fixture(scope="module")
def srv(tiny: Embedder, minilm: Embedder) -> Iterator[SimpleNamespace]:
    """Both bundles served together; the first (tiny) is the default for routes without 'model'."""
    with running([tiny, minilm], **LIMITS) as s:
        wait_ready(s.url)
        yield s


# ---- OpenAI --------------------------------------------------------------------------------------
def test_openai_client_float_and_base64_match_the_embedder(srv, minilm):
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="not-needed", max_retries=0)
    texts = corpus_texts(40)[::4] + ["word " * 600]  # the last one is truncated
    want = minilm.embed(texts)
    name = minilm.manifest.name
    for fmt in ("float", None):  # None: the client's default, base64
        kw = {"encoding_format": fmt} if fmt else {}
        resp = client.embeddings.create(model=name, input=texts, **kw)
        got = np.array([d.embedding for d in resp.data], dtype=np.float32)
        assert [d.index for d in resp.data] == list(range(len(texts)))
        assert got.shape == want.shape and cos(got, want).min() >= 1 - 1e-6
        assert resp.model == name
        assert resp.usage.prompt_tokens == resp.usage.total_tokens == sum(minilm.count_tokens(texts))
    one = client.embeddings.create(model=name, input="a single string", dimensions=minilm.dim)
    assert len(one.data) == 1 and cos(np.array(one.data[0].embedding), minilm.embed("a single string"))[0] >= 1 - 1e-6
    assert [m.id for m in client.models.list().data] == [srv.service.served[0].name, name]


def test_base64_is_little_endian_float32(srv, tiny):
    r = srv.client.post("/v1/embeddings", json={"input": ["abc"], "encoding_format": "base64"})
    raw = base64.b64decode(r.json()["data"][0]["embedding"])
    np.testing.assert_array_equal(np.frombuffer(raw, dtype="<f4"), tiny.embed(["abc"])[0])


def test_openai_client_sees_errors_it_can_read(srv, minilm):
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as e:  # 400: token ids are not served, whatever their values
        client.embeddings.create(model=minilm.manifest.name, input=[[101, 2023]])
    assert "check_embedding_ctx_length=False" in e.value.message
    with pytest.raises(openai.NotFoundError) as e:
        client.embeddings.create(model="text-embedding-3-small", input="x")
    assert e.value.body["param"] == "model" and minilm.manifest.name in e.value.message


# ---- micro-batching ----------------------------------------------------------------------------------
def test_64_concurrent_requests_each_get_their_own_vectors_and_are_batched(tiny):
    corpus = corpus_texts(400)
    rng = np.random.default_rng(7)
    requests = []
    for i in range(64):
        n = int(rng.integers(1, 9))
        picks = [corpus[int(j)] for j in rng.integers(0, len(corpus), n)]
        picks[0] = f"request {i}: " + picks[0]  # every request differs
        requests.append(picks)
    with running([tiny], batch_wait_ms=50, warmup=False) as s:

        def call(i: int) -> np.ndarray:
            if i % 2:
                r = httpx.post(s.url + "/v1/embeddings", json={"input": requests[i]}, timeout=60)
                return np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)
            r = httpx.post(s.url + "/embed", json={"inputs": requests[i]}, timeout=60)
            return np.array(r.json(), dtype=np.float32)

        with ThreadPoolExecutor(64) as pool:
            results = list(pool.map(call, range(64)))
        text = s.client.get("/metrics").text
    for texts, got in zip(requests, results, strict=True):
        assert got.shape == (len(texts), tiny.dim)
        assert cos(got, tiny.embed(texts)).min() >= 1 - 1e-6
    name = tiny.manifest.name
    runs = metric(text, "edge_bge_batch_requests_count", model=name, op="embed")
    assert metric(text, "edge_bge_batch_requests_sum", model=name, op="embed") == 64
    assert metric(text, "edge_bge_batch_texts_sum", model=name, op="embed") == sum(map(len, requests))
    assert 1 <= runs < 64  # some runs served several requests
    assert metric(text, "edge_bge_batch_requests_bucket", model=name, op="embed", le="1") < runs
    assert metric(text, "edge_bge_requests_total", route="/embed", status="200") == 32


def test_batcher_hands_each_job_its_slice_and_keeps_ops_apart():
    calls: list[tuple[str, list[int]]] = []
    gate = threading.Event()

    def run(op: str, items: list[int]) -> np.ndarray:
        gate.wait(10)
        calls.append((op, list(items)))
        return np.array(items) * (10 if op == "a" else -1)

    limits = {"max_batch_tokens": 100, "max_batch_items": 5, "wait_s": 0.0, "max_queue_items": 9}
    batcher = Batcher("m", run, metrics=Metrics(), **limits)

    async def main() -> list[Any]:
        batcher.start()
        jobs = [batcher.submit("a", [0], 1)]  # taken at once; the run waits for the gate
        await asyncio.sleep(0.2)
        jobs += [batcher.submit("a", [1, 2], 2), batcher.submit("b", [3], 1), batcher.submit("a", [4, 5, 6], 3)]
        with pytest.raises(QueueFull):
            batcher.submit("a", list(range(4)), 4)  # 6 queued + 4 > 9
        gate.set()
        return [list(await job.future) for job in jobs]

    try:
        assert asyncio.run(main()) == [[0], [10, 20], [-3], [40, 50, 60]]
    finally:
        batcher.stop(5)
    assert calls == [("a", [0]), ("a", [1, 2, 4, 5, 6]), ("b", [3])]


# ---- TEI ----------------------------------------------------------------------------------------
def test_tei_embed_tokenize_and_prompt_name(srv, tiny):
    assert np.allclose(srv.client.post("/embed", json={"inputs": "hello there"}).json(), tiny.embed(["hello there"]))
    q = srv.client.post("/embed", json={"inputs": ["where?"], "prompt_name": "query"}).json()
    assert cos(np.array(q), tiny.embed_queries(["where?"])).min() >= 1 - 1e-6
    long = srv.client.post("/embed", json={"inputs": ["word " * 600], "truncate": True})
    assert long.status_code == 200 and cos(np.array(long.json()), tiny.embed(["word " * 600]))[0] >= 1 - 1e-6
    toks = srv.client.post("/tokenize", json={"inputs": ["héllo wörld"]}).json()[0]
    assert [t["id"] for t in toks] == list(tiny.tokenizer.encode(["héllo wörld"])[0].ids)
    assert [t["text"] for t in toks if not t["special"]] == ["héllo", "wörld"]
    assert toks[0]["special"] and toks[0]["start"] is None and toks[1]["start"] == 0


def test_ops_routes(srv, tiny, minilm):
    assert srv.client.get("/health").json() == {"status": "ok"}
    assert srv.client.get("/ready").json() == {"status": "ready"}
    info = srv.client.get("/info").json()
    assert info["model_id"] == tiny.manifest.name and info["max_client_batch_size"] == LIMITS["max_items"]
    assert [m["name"] for m in info["models"]] == [tiny.manifest.name, minilm.manifest.name]
    assert info["models"][1]["dim"] == 384 and "CPUExecutionProvider" in info["models"][1]["providers"]
    r = srv.client.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    for name in ("edge_bge_requests_total", "edge_bge_queue_depth", "edge_bge_inference_duration_seconds_bucket"):
        assert name in r.text
    assert metric(r.text, "edge_bge_ready") == 1


# ---- bad input: always JSON, in the route's dialect, never a 500 -------------------------------------
LONG = "word " * 600
BAD = [
    # (path, body (dict, or raw bytes), content type, status, error code, fragment of the message)
    ("/v1/embeddings", {}, None, 400, "validation", "'input' is required"),
    ("/v1/embeddings", {"input": ""}, None, 400, "validation", "empty string"),
    ("/v1/embeddings", {"input": []}, None, 400, "validation", "empty list"),
    ("/v1/embeddings", {"input": None}, None, 400, "validation", "required"),
    ("/v1/embeddings", {"input": ["a", None]}, None, 400, "validation", "input[1] is null"),
    ("/v1/embeddings", {"input": ["a", 3]}, None, 400, "validation", "input[1] is number"),
    ("/v1/embeddings", {"input": {"text": "a"}}, None, 400, "validation", "got object"),
    ("/v1/embeddings", {"input": [101, 2023, 102]}, None, 400, "unsupported", "check_embedding_ctx_length=False"),
    ("/v1/embeddings", {"input": [[101, 2023], [7]]}, None, 400, "unsupported", "token ids"),
    ("/v1/embeddings", b'{"input": "ok \\ud800"}', "application/json", 400, "validation", "not valid Unicode"),
    ("/v1/embeddings", b'{"input": ["a", "\\udfff"]}', "application/json", 400, "validation", "input[1]"),
    ("/v1/embeddings", b'{"input": "a",}', "application/json", 400, "invalid_json", "not valid JSON"),
    ("/v1/embeddings", b"\xff\xfe{}", "application/json", 400, "invalid_json", "UTF-8"),
    ("/v1/embeddings", b"", "application/json", 400, "invalid_json", "empty"),
    ("/v1/embeddings", b'["a"]', "application/json", 400, "validation", "JSON object"),
    ("/v1/embeddings", b'{"input": "a"}', "text/plain", 415, "unsupported_media_type", "application/json"),
    ("/v1/embeddings", b"input=a", "application/x-www-form-urlencoded", 415, "unsupported_media_type", "json"),
    ("/v1/embeddings", {"input": "a", "encoding_format": "hex"}, None, 400, "validation", "encoding_format"),
    ("/v1/embeddings", {"input": "a", "dimensions": 8}, None, 400, "validation", "'dimensions' must be 32"),
    ("/v1/embeddings", {"input": "a", "model": "gpt"}, None, 404, "not_found", "not served here"),
    ("/v1/embeddings", {"input": "a", "model": 5}, None, 400, "validation", "'model' must be a string"),
    ("/v1/embeddings", {"input": ["a"] * 17}, None, 413, "too_large", "limit of 16"),
    ("/v1/embeddings", {"input": ["a" * 15_000, "b" * 6_000]}, None, 413, "too_large", "characters"),
    ("/v1/embeddings", {"input": "a" * 300_000}, None, 413, "too_large", "bytes"),
    ("/embed", {"inputs": LONG, "truncate": False}, None, 413, "too_large", "inputs[0] has 602 tokens"),
    ("/embed", {"inputs": "a", "truncate": "yes"}, None, 422, "validation", "'truncate' must be true or false"),
    ("/embed", {"inputs": "a", "normalize": False}, None, 422, "validation", "normalize=false"),
    ("/embed", {"inputs": "a", "prompt_name": "doc"}, None, 422, "validation", "prompt_name"),
    ("/embed", {"input": "a"}, None, 422, "validation", "'inputs' is required"),
    ("/embed", b"null", "application/json", 422, "validation", "got null"),
    ("/embed_sparse", {"inputs": "a"}, None, 400, "unsupported", "needs an 'm3'"),
    ("/rerank", {"query": "q", "texts": ["a"]}, None, 400, "unsupported", "needs a 'reranker'"),
    ("/rerank", {"query": "q", "texts": ["a"], "model": "all-minilm-l6-v2"}, None, 400, "unsupported", "of kind"),
    ("/v1/rerank", {"query": "q", "documents": ["a"]}, None, 400, "unsupported", "needs a 'reranker'"),
    ("/tokenize", {"inputs": 5}, None, 422, "validation", "got number"),
    ("/tokenize", {"inputs": ["x"], "add_special_tokens": 1}, None, 422, "validation", "add_special_tokens"),
]


@pytest.mark.parametrize(("path", "body", "ctype", "status", "code", "fragment"), BAD)
def test_bad_input_gets_a_json_error_in_the_route_dialect(srv, path, body, ctype, status, code, fragment):
    if isinstance(body, bytes):
        r = srv.client.post(path, content=body, headers={"content-type": ctype})
    else:
        r = srv.client.post(path, json=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    data = r.json()
    if path == "/v1/rerank":  # Cohere / Jina
        assert data["error_type"] == code and fragment in data["message"]
    elif path.startswith("/v1/"):  # OpenAI
        err = data["error"]
        assert set(err) == {"message", "type", "param", "code"}
        assert err["code"] == code and fragment in err["message"]
        assert err["type"] == "invalid_request_error"
    else:  # text-embeddings-inference
        assert set(data) == {"error", "error_type"} and data["error_type"] == code and fragment in data["error"]


def test_body_limit_holds_without_a_content_length(srv):
    def chunks():
        for _ in range(30):
            yield b" " * 10_000  # 300 kB of whitespace, sent chunked

    r = srv.client.post("/embed", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error_type"] == "too_large" and "bytes" in r.json()["error"]


@pytest.mark.parametrize(
    ("method", "path", "status", "shape"),
    [("GET", "/nope", 404, "error_type"), ("GET", "/v1/nope", 404, "error"), ("GET", "/v1/embeddings", 405, "error")],
)
def test_unknown_routes_and_methods_answer_json(srv, method, path, status, shape):
    r = srv.client.request(method, path)
    assert r.status_code == status and r.headers["content-type"] == "application/json" and shape in r.json()


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
FIELDS = (
    "input inputs model encoding_format dimensions normalize truncate prompt_name query texts documents "
    "raw_scores return_text top_n return_documents add_special_tokens"
).split()
BODIES = st.one_of(JSON, st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=5))
ROUTES = ["/v1/embeddings", "/embed", "/embed_sparse", "/rerank", "/v1/rerank", "/tokenize"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(ROUTES), body=BODIES, raw=st.booleans(), junk=st.binary(max_size=30))
def test_fuzzed_bodies_never_get_a_500(srv, path, body, raw, junk):
    content = junk if raw else json.dumps(body).encode()
    r = srv.client.post(path, content=content, headers={"content-type": "application/json"})
    assert r.status_code < 500, r.text
    assert r.headers["content-type"] == "application/json"
    data = r.json()
    if r.status_code >= 400:
        assert "error" in data or "message" in data


# ---- limits, back-pressure, deadlines, disconnects, warm-up ------------------------------------------
def test_full_queue_answers_429_with_retry_after(tiny):
    gated = Gated(tiny)
    with running([gated], warmup=False, max_queue_items=4, max_items=4, batch_wait_ms=0) as s:
        try:
            results: list[Any] = []
            first = post_async(s.url, "/v1/embeddings", {"input": ["a", "b"]}, results)
            assert gated.entered.wait(10)  # the first request runs (blocked at the gate)
            second = post_async(s.url, "/embed", {"inputs": ["c", "d", "e", "f"]}, results)
            wait_metric(s.url, "edge_bge_queue_depth", 4, model=tiny.manifest.name)
            r = s.client.post("/v1/embeddings", json={"input": "g"})
            assert r.status_code == 429 and r.headers["retry-after"] == "1"
            assert r.json()["error"]["code"] == "overloaded"
            r = s.client.post("/embed", json={"inputs": "g"})
            assert r.status_code == 429 and r.json()["error_type"] == "overloaded"
        finally:
            gated.gate.set()
        first.join(30), second.join(30)
    assert sorted(r.status_code for r in results) == [200, 200]


def test_disconnected_client_has_its_queued_work_dropped(tiny):
    gated = Gated(tiny)
    with running([gated], warmup=False, batch_wait_ms=0) as s:
        try:
            results: list[Any] = []
            first = post_async(s.url, "/embed", {"inputs": ["first"]}, results)
            assert gated.entered.wait(10)
            body = json.dumps({"inputs": ["dropped one", "dropped two"]}).encode()
            with socket.create_connection(("127.0.0.1", int(s.url.rsplit(":", 1)[1]))) as sock:
                sock.sendall(
                    b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                wait_metric(s.url, "edge_bge_queue_depth", 2, model=tiny.manifest.name)
            wait_metric(s.url, "edge_bge_dropped_total", 1, model=tiny.manifest.name, reason="disconnect")
            assert metric(s.client.get("/metrics").text, "edge_bge_queue_depth", model=tiny.manifest.name) == 0
        finally:
            gated.gate.set()
        first.join(30)
        after = s.client.post("/embed", json={"inputs": ["after"]})
    assert results[0].status_code == 200 and after.status_code == 200
    assert gated.calls == [["first"], ["after"]]  # the dropped texts never ran


def test_request_deadline_answers_504_and_drops_the_work(tiny):
    gated = Gated(tiny)
    with running([gated], warmup=False, batch_wait_ms=0, request_timeout=0.5) as s:
        try:
            results: list[Any] = []
            post_async(s.url, "/embed", {"inputs": ["blocking"]}, results)
            assert gated.entered.wait(10)
            r = s.client.post("/v1/embeddings", json={"input": "late"})
            assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
            text = s.client.get("/metrics").text
            assert metric(text, "edge_bge_dropped_total", model=tiny.manifest.name, reason="timeout") == 1
        finally:
            gated.gate.set()
    assert gated.calls == [["blocking"]]


def test_ready_waits_for_the_warm_up_with_the_largest_batch(tiny):
    gated = Gated(tiny)
    with running([gated], max_batch_tokens=2048) as s:
        try:
            assert gated.entered.wait(10)  # warm-up is running
            r = s.client.get("/ready")
            assert r.status_code == 503 and r.json()["error_type"] == "unavailable" and "retry-after" in r.headers
            assert s.client.get("/health").status_code == 200
            r = s.client.post("/v1/embeddings", json={"input": "x"})
            assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"
        finally:
            gated.gate.set()
        wait_ready(s.url)
        s.service.draining = True  # as after SIGTERM
        assert s.client.get("/ready").status_code == 503
    warm = gated.calls[0]
    assert len(warm) == 2048 // tiny.manifest.max_length
    assert set(tiny.count_tokens(warm)) == {tiny.manifest.max_length}


def test_sigterm_handler_marks_the_service_draining(tiny):
    service = Service(Registry([Served(tiny)]), ServerConfig())
    service.ready = True
    server = DrainingServer(uvicorn.Config(lambda *a: None), service)
    assert service.is_ready
    server.handle_exit(signal.SIGTERM, None)
    assert service.draining and not service.is_ready and server.should_exit and not server.force_exit


# ---- security ------------------------------------------------------------------------------------
def test_api_key_protects_every_route_but_health(tiny, tmp_path):
    with running([tiny], api_key="s3cret-key", warmup=False) as s:
        assert s.client.get("/health").status_code == 200
        for path in ("/ready", "/metrics", "/info", "/v1/models", "/nope", "/openapi.json"):
            r = s.client.get(path)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", path
        r = s.client.post("/v1/embeddings", json={"input": "x"}, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        r = s.client.post("/embed", json={"inputs": "x"})
        assert r.status_code == 401 and r.json()["error_type"] == "unauthorized"
        assert s.client.get("/ready", headers={"Authorization": "Bearer s3cret-key"}).status_code == 200
        assert s.client.get("/ready", headers={"X-API-Key": "s3cret-key"}).status_code == 200
        good = openai.OpenAI(base_url=s.url + "/v1", api_key="s3cret-key", max_retries=0)
        assert len(good.embeddings.create(model=tiny.manifest.name, input="x").data[0].embedding) == tiny.dim
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=s.url + "/v1", api_key="s3cret-kez", max_retries=0).models.list()


def test_cors_is_off_by_default_and_on_for_named_origins(tiny, srv):
    preflight = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    r = srv.client.options("/v1/embeddings", headers=preflight)
    assert "access-control-allow-origin" not in r.headers
    r = srv.client.post("/embed", json={"inputs": "x"}, headers={"Origin": "http://evil.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    with running([tiny], warmup=False, cors_origins=("http://app.example",)) as s:
        r = s.client.options("/v1/embeddings", headers={**preflight, "Origin": "http://app.example"})
        assert r.headers["access-control-allow-origin"] == "http://app.example"
        r = s.client.options("/v1/embeddings", headers=preflight)
        assert "access-control-allow-origin" not in r.headers


# ---- the real command: SIGTERM drains in-flight requests -----------------------------------------
def test_serve_command_drains_in_flight_requests_on_sigterm(tiny_fp32, tiny):
    port = free_port()
    cmd = [sys.executable, "-m", "edge_bge", "serve", str(tiny_fp32), "--port", str(port), "--batch-wait-ms", "1500"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
        texts = [[f"in flight {i}", f"second {i}"] for i in range(8)]
        results: list[Any] = []
        threads = [post_async(url, "/v1/embeddings", {"input": t}, results) for t in texts]
        wait_metric(url, "edge_bge_queue_depth", 16, model=tiny.manifest.name)
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(30)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    output = proc.stdout.read() if proc.stdout else ""
    assert len(results) == 8 and all(isinstance(r, httpx.Response) and r.status_code == 200 for r in results), output
    got = [np.array([d["embedding"] for d in r.json()["data"]]) for r in results]
    for t in texts:  # each request got its own two vectors
        want = tiny.embed(t)
        assert sum(cos(g, want).min() >= 1 - 1e-6 for g in got) == 1
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/health")


def test_serving_does_not_import_torch(tiny_fp32):
    code = (
        "import sys\n"
        "from edge_bge.server import Served, ServerConfig, create_app, load_model\n"
        "from starlette.testclient import TestClient\n"
        f"app = create_app([Served(load_model({str(tiny_fp32)!r}))], ServerConfig(warmup=False))\n"
        "with TestClient(app) as c:\n"
        "    assert c.post('/v1/embeddings', json={'input': 'x'}).status_code == 200\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=os.environ)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
