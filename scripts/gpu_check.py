#!/usr/bin/env python
"""GPU check: load bundles on TensorRT, CUDA and CPU, check the GPU vectors against the CPU's, time them.

    python scripts/gpu_check.py BUNDLE [BUNDLE ...] [--providers tensorrt,cuda,cpu] [--iters 50] [--json OUT]

Exports nothing. For each bundle and provider: the session start cold (empty engine cache, so
TensorRT builds its engine) and warm (engine from the cache), each including the first batch; the
minimum cosine of its vectors against the CPU provider's on --check-texts texts (gate 0.999 for
fp32 and fp16 bundles, 0.99 for int8); then p50 / p99 latency and throughput of one ONNX Runtime call
at batch 1 and 32 for 32, 128 and 512 tokens (capped at the bundle's max_length). A provider that this
ONNX Runtime lacks or that does not load is reported as such; on a CPU-only machine the script still
runs. Exit status: 1 when a parity gate fails, 2 with --require-gpu when no GPU provider ran, else 0.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(1, str(ROOT))  # this checkout's edge_bge, installed or not

import onnxruntime as ort  # noqa: E402

from edge_bge import Embedder, ProviderError  # noqa: E402
from edge_bge import providers as P  # noqa: E402
from edge_bge.batching import Batch  # noqa: E402
from edge_bge.manifest import Manifest  # noqa: E402

GATES = {"fp32": 0.999, "fp16": 0.999, "int8": 0.99}
NAMES = {"tensorrt": P.TRT, "cuda": P.CUDA, "cpu": P.CPU}


def check_texts(n: int) -> list[str]:
    corpus = ROOT / "benchmarks" / "corpus.jsonl"
    if corpus.is_file():
        with corpus.open(encoding="utf-8") as f:
            texts = [json.loads(line)["text"] for line in f]
        return texts[:n]
    words = "the quick brown fox jumps over a lazy dog while engines warm and vectors align".split()
    return [" ".join(words[(i + j) % len(words)] for j in range(4 + i % 60)) for i in range(n)]


def provider_spec(name: str, fp16: bool) -> Any:
    if name != "tensorrt" or not fp16:
        return name
    chain: list[Any] = [(P.TRT, {"fp16": True})]
    return chain + [P.CUDA] if P.CUDA in ort.get_available_providers() else chain


def feeds(model: Embedder, rows: int, tokens: int, rng: np.random.Generator) -> Batch:
    vocab = model.tokenizer.tokenizer.get_vocab_size()
    ids = rng.integers(min(1000, vocab // 2), vocab, size=(rows, tokens), dtype=np.int64)
    out = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    if "token_type_ids" in model.manifest.inputs:
        out["token_type_ids"] = np.zeros_like(ids)
    return Batch(np.arange(rows), out, rows * tokens)


def open_timed(bundle: str, spec: Any, texts: list[str]) -> tuple[Embedder, float]:
    start = time.perf_counter()
    model = Embedder(bundle, providers=spec)
    model.embed(texts[:1])
    return model, time.perf_counter() - start


def check_bundle(bundle: str, args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    manifest = Manifest.load(bundle)
    gate = GATES.get(manifest.precision.value, 0.99)
    texts = check_texts(args.check_texts)
    reference = Embedder(bundle, providers="cpu").embed(texts)
    available = ort.get_available_providers()
    rows: list[dict[str, Any]] = []
    timings: list[dict[str, Any]] = []
    rng = np.random.default_rng(0)
    for name in args.providers:
        row: dict[str, Any] = {"bundle": manifest.name, "precision": manifest.precision.value, "provider": name}
        rows.append(row)
        if NAMES[name] not in available:
            row["status"] = f"unavailable (not in this ONNX Runtime build; it has {', '.join(available)})"
            continue
        cache = tempfile.mkdtemp(prefix="edge-bge-gpu-check-")
        os.environ["EDGE_BGE_CACHE_DIR"] = cache  # an empty engine cache: the first start is cold
        spec = provider_spec(name, args.trt_fp16)
        try:
            model, row["cold_s"] = open_timed(bundle, spec, texts)
            del model
            model, row["warm_s"] = open_timed(bundle, spec, texts)
        except ProviderError as e:
            row["status"] = f"failed: {e}"[:300]
            shutil.rmtree(cache, ignore_errors=True)
            continue
        row["got"] = model.providers[0]
        row["io_binding"] = model.providers.io_binding
        got = model.embed(texts)
        cos = np.sum(got * reference, axis=1) / (
            np.linalg.norm(got, axis=1) * np.linalg.norm(reference, axis=1) + 1e-12
        )
        row["cos_min"], row["gate"] = float(cos.min()), gate
        row["status"] = "ok" if row["cos_min"] >= gate else "PARITY FAIL"
        for tokens in args.lengths:
            tokens = min(tokens, manifest.max_length)
            for batch_rows in args.batches:
                batch = feeds(model, batch_rows, tokens, rng)
                for _ in range(args.warmup):
                    model._run(batch, [model._output])
                ms = []
                for _ in range(args.iters):
                    start = time.perf_counter()
                    model._run(batch, [model._output])
                    ms.append((time.perf_counter() - start) * 1e3)
                p50, p99 = float(np.percentile(ms, 50)), float(np.percentile(ms, 99))
                timings.append(
                    {
                        "bundle": manifest.name,
                        "precision": manifest.precision.value,
                        "provider": name,
                        "batch": batch_rows,
                        "tokens": tokens,
                        "p50_ms": p50,
                        "p99_ms": p99,
                        "texts_per_s": batch_rows * 1e3 / float(np.mean(ms)),
                    }
                )
        del model
        shutil.rmtree(cache, ignore_errors=True)
    return rows, timings


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)])


def fmt(value: Any, spec: str = ".3f") -> str:
    return "" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("bundles", nargs="+")
    p.add_argument("--providers", default="tensorrt,cuda,cpu", help="comma-separated: tensorrt, cuda, cpu")
    p.add_argument("--batches", default="1,32")
    p.add_argument("--lengths", default="32,128,512", help="tokens per text")
    p.add_argument("--iters", type=int, default=50, help="timed calls per shape")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--check-texts", type=int, default=256, help="texts for the parity check")
    p.add_argument("--trt-fp16", action="store_true", help="fp16 TensorRT kernels on any bundle")
    p.add_argument("--require-gpu", action="store_true", help="exit 2 when no GPU provider ran")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    args.providers = [x.strip().lower() for x in args.providers.split(",") if x.strip()]
    unknown = [x for x in args.providers if x not in NAMES]
    if unknown:
        p.error(f"unknown providers {unknown}; use {', '.join(NAMES)}")
    args.batches = [int(x) for x in args.batches.split(",")]
    args.lengths = [int(x) for x in args.lengths.split(",")]

    env = P.environment()
    print(
        f"onnxruntime {env['onnxruntime']} {env['onnxruntime_distributions']}; providers {env['providers_available']}; "
        f"TensorRT {env['tensorrt'] or 'not found'}; GPU {env['gpu'] or 'none found'}"
    )
    rows: list[dict[str, Any]] = []
    timings: list[dict[str, Any]] = []
    for bundle in args.bundles:
        r, t = check_bundle(bundle, args)
        rows += r
        timings += t

    print()
    print(
        table(
            ["bundle", "precision", "provider", "ran on", "start cold s", "start warm s", "cos min", "gate", "status"],
            [
                [
                    r["bundle"],
                    r["precision"],
                    r["provider"],
                    str(r.get("got", "")),
                    fmt(r.get("cold_s"), ".2f"),
                    fmt(r.get("warm_s"), ".2f"),
                    fmt(r.get("cos_min"), ".5f"),
                    fmt(r.get("gate")),
                    r["status"],
                ]
                for r in rows
            ],
        )
    )
    print()
    print(
        table(
            ["bundle", "precision", "provider", "batch", "tokens", "p50 ms", "p99 ms", "texts/s"],
            [
                [
                    t["bundle"],
                    t["precision"],
                    t["provider"],
                    str(t["batch"]),
                    str(t["tokens"]),
                    fmt(t["p50_ms"], ".2f"),
                    fmt(t["p99_ms"], ".2f"),
                    fmt(t["texts_per_s"], ".1f"),
                ]
                for t in timings
            ],
        )
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"environment": env, "checks": rows, "timings": timings}, indent=2))
    if any(r["status"] == "PARITY FAIL" for r in rows):
        return 1
    if args.require_gpu and not any(r.get("got") in P.GPU_PROVIDERS for r in rows):
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
