"""Throughput and latency of a loaded model on a fixed mixed-length set (``edge-bge bench``), and the
machine described as benchmark reports name it."""

from __future__ import annotations

import platform
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .reranker import Reranker

__all__ = ["bench_texts", "cpu_flags", "cpu_model", "measure"]

_WORDS = (
    "the model reads each sentence and returns one vector per text so that similar meanings end up close "
    "together while unrelated texts point elsewhere search engines use these vectors to rank passages for a "
    "query edge devices run them without a GPU in real time pipelines and air gapped sites"
).split()


def bench_texts(n: int, *, seed: int = 0) -> list[str]:
    """A fixed mixed-length set: 1/2 short queries (4-12 words), 1/3 paragraphs (30-80), 1/6 long (200-400)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        r = i % 6
        words = rng.randint(4, 12) if r < 3 else rng.randint(30, 80) if r < 5 else rng.randint(200, 400)
        out.append(" ".join(rng.choice(_WORDS) for _ in range(words)).capitalize() + ".")
    return out


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def measure(model: Any, *, texts: int = 256, repeat: int = 3, latency_samples: int = 50) -> dict[str, Any]:
    """The best of ``repeat`` passes over ``bench_texts(texts)`` (a reranker scores them against one
    query), then ``latency_samples`` single-input calls; one warm-up call first."""
    if texts < 1 or repeat < 1 or latency_samples < 1:
        raise ValueError("texts, repeat and latency_samples must be at least 1")
    inputs = bench_texts(texts)
    run: Callable[[list[Any]], Any]
    if isinstance(model, Reranker):
        items: list[Any] = [("what do embedding models do?", t) for t in inputs]
        run = model.score
        tokens = sum(len(e) for e in model.tokenize(items))
    else:
        items = inputs
        run = model.embed
        tokens = sum(model.count_tokens(items))
    run(items[:16])  # warm-up
    seconds = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run(items)
        seconds.append(time.perf_counter() - t0)
    best = min(seconds)
    latencies = []
    for i in range(latency_samples):
        t0 = time.perf_counter()
        run([items[i % len(items)]])
        latencies.append((time.perf_counter() - t0) * 1000)
    return {
        "name": model.manifest.name,
        "providers": list(model.providers),
        "texts": len(items),
        "tokens": tokens,
        "max_batch_tokens": model.max_batch_tokens,
        "throughput_texts_per_s": round(len(items) / best, 1),
        "throughput_tokens_per_s": round(tokens / best, 1),
        "batch_seconds": [round(s, 4) for s in seconds],
        "latency_ms_p50": round(_percentile(latencies, 50), 3),
        "latency_ms_p99": round(_percentile(latencies, 99), 3),
    }


def _cpuinfo(key: str) -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name (every speed figure names it: figures from other CPUs do not compare)."""
    return _cpuinfo("model name") or platform.processor() or "unknown"


def cpu_flags() -> str:
    """The CPU features int8 speed depends on: AVX2, AVX-512 VNNI, AVX-VNNI, AMX."""
    flags = _cpuinfo("flags")
    if flags is None:
        return "unknown"
    have = set(flags.split())
    return ", ".join(f for f in ("avx2", "avx512_vnni", "avx_vnni", "amx_int8") if f in have) or "none"
