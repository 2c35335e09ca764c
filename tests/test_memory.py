"""Memory is bounded by the batch, not by the input: peak RSS measured in a fresh process.

The peak is the kernel's VmHWM, reset after the model is loaded (``/proc/self/clear_refs``).
``getrusage``'s ru_maxrss would not do in a child: across exec it keeps the parent's peak (pytest's,
with torch loaded)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from .helpers import corpus_texts

BOUND_MB = 400  # peak RSS above the loaded, warmed-up model

PROBE = textwrap.dedent(
    """
    import json, os, sys
    from collections.abc import Sequence

    import edge_bge

    def status_mb(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024

    bundle, case, words = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    model = edge_bge.Embedder(bundle)
    model.embed(["warm up"] * 64)
    prose = " ".join(words)

    class Texts(Sequence):  # many long texts, made on demand: the input itself costs nothing
        def __init__(self, n):
            self.n = n
        def __len__(self):
            return self.n
        def __getitem__(self, i):
            if isinstance(i, slice):
                return [self[j] for j in range(*i.indices(self.n))]
            if not 0 <= i < self.n:
                raise IndexError(i)
            return f"{i} {prose[i % 97:]}"

    if case == "one":
        texts = [(prose + " ") * (10_000_000 // (len(prose) + 1)), "a" * 10_000_000, "é" * 10_000_000]
    else:
        texts = [Texts(100_000)]
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # peak RSS := current RSS
    base = status_mb("VmRSS")
    shapes = [model.embed(t).shape for t in texts]
    peak = status_mb("VmHWM")
    print(json.dumps({"above": peak - base, "shapes": shapes, "lengths": [len(t) for t in texts]}))
    """
)


def _peak_above_model(bundle, case: str) -> dict:
    words = " ".join(corpus_texts(50)).split()
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(bundle), case, json.dumps(words)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def tiny_m3_fp32(bundles, tiny_m3_dir):
    return bundles.get(tiny_m3_dir, "fp32")


@pytest.mark.parametrize("model", ["bert", "xlmr"])
def test_one_10mb_string(model, tiny_fp32, tiny_m3_fp32):
    got = _peak_above_model(tiny_fp32 if model == "bert" else tiny_m3_fp32, "one")
    assert min(got["lengths"]) >= 9_900_000
    assert got["above"] <= BOUND_MB, got


def test_100k_long_texts(bundles, tiny_bge_dir):
    short = bundles.get(tiny_bge_dir, "fp32", max_length=64)  # every text is far past 64 tokens
    got = _peak_above_model(short, "many")
    assert got["shapes"] == [[100_000, 32]]
    assert got["above"] <= BOUND_MB, got


def _rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_server_returns_to_its_warm_size_after_1mb_requests(tiny_fp32, tmp_path):
    from .server.helpers import serve_process

    prose = " ".join(corpus_texts())
    prose = " ".join([prose] * (1_000_000 // len(prose) + 1))
    bodies = [
        ("/embed", {"inputs": prose[:999_000]}),
        ("/embed", {"inputs": "a" * 999_000}),
        ("/v1/embeddings", {"input": [prose[i : i + 999] for i in range(0, 999_000, 1000)]}),
        ("/embed", {"inputs": [prose[i : i + 1999] for i in range(0, 998_000, 2000)], "truncate": True}),
        ("/tokenize", {"inputs": prose[:999_000]}),
        ("/tokenize", {"inputs": "é" * 999_000}),
    ]
    with serve_process(tiny_fp32, tmp=tmp_path) as s, httpx.Client(base_url=s.url, timeout=120) as client:
        for path, _ in bodies:  # every route once with small inputs: the warm level
            assert client.post(path, json={"inputs": "hello", "input": "hello"}).status_code == 200
        warm = _rss_mb(s.proc.pid)
        with ThreadPoolExecutor(len(bodies)) as pool:
            answers = list(pool.map(lambda b: client.post(b[0], json=b[1]), bodies))
        codes = [a.status_code for a in answers]
        assert codes == [200] * len(bodies), [a.text[:300] for a in answers if a.status_code != 200]
        time.sleep(0.5)
        after = _rss_mb(s.proc.pid)
    assert after - warm <= 50, f"warm {warm:.0f} MB, after six 1 MB requests {after:.0f} MB"
