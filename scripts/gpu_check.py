#!/usr/bin/env python
"""GPU check: bundles on TensorRT, CUDA and CPU; where their nodes run, their vectors against the CPU's, timings.

    python scripts/gpu_check.py BUNDLE [BUNDLE ...] [--providers tensorrt,cuda,cpu] [--json-lines FILE]
                                [--budget-s N] [--batches 1,32] [--lengths 32,128,512] [--trt-fp16]

Exports nothing. Each (bundle, provider) runs in a child process with its share of the remaining
budget, and is killed when it overruns it, so the whole check ends within --budget-s. Its steps:
the session start with an empty engine cache (cold: TensorRT builds its engine) and with a warm one,
the first batch included; where the nodes of a warm-up batch ran (share of compute nodes and of
time per provider, from ONNX Runtime's profile); the minimum cosine of its vectors against the CPU
provider's on --check-texts texts (gate 0.999 for fp32 and fp16 bundles, 0.99 for int8); on
TensorRT, an engine built ahead of time (``build_engine``) and the time to load it; then p50 / p99
latency and texts/s of one ONNX Runtime call per rows x tokens shape. Each row is printed, and
written to --json-lines as one JSON object, as soon as it is measured; a failure's row holds ONNX
Runtime's full error text. A provider this ONNX Runtime lacks gets one line saying why. Exit status:
1 when a parity gate or the placement fails, 2 with --require-gpu when no GPU provider ran, else 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(1, str(ROOT))  # this checkout's edge_bge, installed or not

from edge_bge import Embedder  # noqa: E402
from edge_bge import providers as P  # noqa: E402
from edge_bge.batching import Batch  # noqa: E402
from edge_bge.manifest import Manifest, Target  # noqa: E402

GATES = {"fp32": 0.999, "fp16": 0.999, "int8": 0.99}
NAMES = dict(P.ALIASES)  # tensorrt, cuda, cpu: the provider registry's aliases


def check_texts(n: int) -> list[str]:
    with (ROOT / "benchmarks" / "corpus.jsonl").open(encoding="utf-8") as f:
        return [json.loads(line)["text"] for line, _ in zip(f, range(n), strict=False)]


def provider_spec(name: str, fp16: bool) -> Any:
    if name != "tensorrt" or not fp16:
        return name
    return [(P.TRT, {"fp16": True}), P.CUDA]


def feeds(model: Embedder, rows: int, tokens: int, rng: np.random.Generator) -> Batch:
    vocab = model.tokenizer.tokenizer.get_vocab_size()
    ids = rng.integers(min(1000, vocab // 2), vocab, size=(rows, tokens), dtype=np.int64)
    out = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    if "token_type_ids" in model.manifest.inputs:
        out["token_type_ids"] = np.zeros_like(ids)
    return Batch(np.arange(rows), out, rows * tokens)


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


# ---- the child: one bundle on one provider -----------------------------------------------------


class Warnings(logging.Handler):
    """edge-bge's warnings (a provider that did not load, nodes off the GPU), kept for the row."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def opened(bundle: str, spec: Any, cache: str, texts: list[str]) -> tuple[Embedder, float]:
    os.environ["EDGE_BGE_CACHE_DIR"] = cache
    start = time.perf_counter()
    model = Embedder(bundle, providers=spec, strict=False)  # what did not load or fell off the GPU: warnings
    model.embed(texts[:1])
    return model, round(time.perf_counter() - start, 3)


def unit(args: argparse.Namespace) -> int:
    bundle, name = args.unit
    manifest = Manifest.load(bundle)
    base = {"bundle": manifest.name, "precision": manifest.precision.value, "provider": name}
    warned = Warnings()
    logging.getLogger("edge_bge").addHandler(warned)
    texts = check_texts(args.check_texts)
    reference = np.load(args.reference)
    spec = provider_spec(name, args.trt_fp16)
    common: dict[str, Any] = {}
    root = tempfile.mkdtemp(prefix="edge-bge-gpu-check-")
    try:
        emit({"step": "cold start"})
        _, cold = opened(bundle, spec, os.path.join(root, "cache"), texts)
        emit({"step": "warm start"})
        model, warm = opened(bundle, spec, os.path.join(root, "cache"), texts)
        got = list(model.providers)
        common = {"ran_on": got[0], "build_s": {"cold": cold, "warm": warm}}
        if got[0] != NAMES[name]:
            emit({**base, **common, "status": "failed", "error": "\n".join(warned.lines)})
            return 0
        emit({"step": "placement"})
        placement = model.providers.placement
        if placement is None:  # CPU sessions are not profiled unless asked
            request = P.SessionRequest(model.bundle.model_path, manifest=manifest, providers=spec, placement=True)
            placement = request.open().providers.placement
        fell = P.shortfall(placement, got, P.GPU_PROVIDERS)
        common["placement"] = placement.to_dict() if placement else None
        emit({"step": "parity"})
        vectors = model.embed(texts)
        cos = np.sum(vectors * reference, axis=1) / (
            np.linalg.norm(vectors, axis=1) * np.linalg.norm(reference, axis=1) + 1e-12
        )
        gate = GATES.get(manifest.precision.value, 0.99)
        common.update(cos_min=round(float(cos.min()), 6), gate=gate, prebuilt_load_s=None)
        status = "ok" if cos.min() >= gate else "parity fail"
        if fell:
            status, common["error"] = "placement fail", "\n".join(warned.lines)
        if name == "tensorrt" and manifest.target is Target.TENSORRT:
            emit({"step": "pre-built engine"})
            common.update(prebuilt(bundle, spec, model.max_batch_tokens, os.path.join(root, "prebuilt"), texts, args))
    except Exception as e:  # any failure, with its full text, is the row
        emit({**base, **common, "status": "failed", "error": f"{type(e).__name__}: {e}", "warnings": warned.lines})
        return 0
    rng = np.random.default_rng(0)
    shapes = [(r, min(t, manifest.max_length)) for t in args.lengths for r in args.batches]
    for i, (rows, tokens) in enumerate(shapes):
        emit({"step": f"timing {rows}x{tokens}"})
        until = time.time() + (args.deadline - time.time()) / (len(shapes) - i) - 1.0
        batch = feeds(model, rows, tokens, rng)
        for _ in range(args.warmup):
            model._run(batch, [model._output])
        ms: list[float] = []
        while len(ms) < args.iters and (not ms or time.time() < until):
            start = time.perf_counter()
            model._run(batch, [model._output])
            ms.append((time.perf_counter() - start) * 1e3)
        row = {**base, "rows": rows, "tokens": tokens, **common, "status": status, "iters": len(ms)}
        row.update(p50_ms=round(float(np.percentile(ms, 50)), 3), p99_ms=round(float(np.percentile(ms, 99)), 3))
        row["texts_per_s"] = round(rows * 1e3 / float(np.mean(ms)), 1)
        emit(row)
    return 0


def prebuilt(bundle: str, spec: Any, budget: int, cache: str, texts: list[str], args: argparse.Namespace) -> dict:
    """Build the engine ahead of time, then time an Embedder that loads it (first batch included)."""
    try:
        built = P.build_engine(bundle, max_batch_tokens=budget, fp16=args.trt_fp16, cache_dir=cache)
        model, seconds = opened(bundle, spec, cache, texts)
    except Exception as e:
        return {"prebuilt_error": f"{type(e).__name__}: {e}"}
    loaded = model.providers.model == str(built.context_model)
    return {"prebuilt_build_s": round(built.seconds, 3), "prebuilt_load_s": seconds if loaded else None}


# ---- the parent: budget, children, rows --------------------------------------------------------


class Rows:
    """Each row printed as one readable line and appended to --json-lines at once, flushed."""

    def __init__(self, path: str | None) -> None:
        self.file = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115
        self.rows: list[dict[str, Any]] = []

    def write(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if self.file is not None:
            self.file.write(json.dumps(row) + "\n")
            self.file.flush()
        print(describe(row), flush=True)


def describe(row: dict[str, Any]) -> str:
    head = " ".join(str(row[k]) for k in ("bundle", "precision", "provider") if row.get(k))
    if "rows" not in row:
        return f"{head}: {row['status']}: {row.get('error') or row.get('reason', '')}"
    nodes = ", ".join(f"{k} {v:.0%}" for k, v in ((row.get("placement") or {}).get("nodes") or {}).items())
    return (
        f"{head} {row['rows']}x{row['tokens']}: {row['status']}; p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms, "
        f"{row['texts_per_s']:.1f} texts/s; cos min {row['cos_min']:.5f}; nodes {nodes}; start {row['build_s']}; "
        f"pre-built load {row.get('prebuilt_load_s')} s"
    )


def run_unit(bundle: str, name: str, reference: str, deadline: float, args: argparse.Namespace, rows: Rows) -> None:
    command = [sys.executable, str(Path(__file__).resolve()), "--unit", bundle, name, "--reference", reference]
    command += ["--deadline", str(deadline), "--check-texts", str(args.check_texts), "--iters", str(args.iters)]
    command += ["--warmup", str(args.warmup), "--batches", args.batches_text, "--lengths", args.lengths_text]
    command += ["--trt-fp16"] * args.trt_fp16
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in child.stdout or ():
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    step, wrote = "start", False
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.time()))
        except queue.Empty:
            child.kill()
            child.wait()
            rows.write({"bundle": bundle, "provider": name, "status": "timed out", "error": f"budget spent in: {step}"})
            return
        if line is None:
            break
        record = json.loads(line)
        if "step" in record:
            step = record["step"]
        else:
            rows.write(record)
            wrote = True
    if child.wait() != 0 and not wrote:
        rows.write(
            {"bundle": bundle, "provider": name, "status": "failed", "error": f"exit {child.returncode} in: {step}"}
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("bundles", nargs="*")
    p.add_argument("--providers", default="tensorrt,cuda,cpu", help="comma-separated: tensorrt, cuda, cpu")
    p.add_argument("--json-lines", metavar="FILE", help="append one JSON object per row, as it is measured")
    p.add_argument("--budget-s", type=float, default=900.0, help="the whole check ends within this (seconds)")
    p.add_argument("--batches", default="1,32", help="rows per timed call")
    p.add_argument("--lengths", default="32,128,512", help="tokens per text (capped at max_length)")
    p.add_argument("--iters", type=int, default=50, help="timed calls per shape at most (fewer when time is short)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--check-texts", type=int, default=256, help="texts for the parity check")
    p.add_argument("--trt-fp16", action="store_true", help="fp16 TensorRT kernels on any bundle")
    p.add_argument("--require-gpu", action="store_true", help="exit 2 when no GPU provider ran")
    p.add_argument("--unit", nargs=2, metavar=("BUNDLE", "PROVIDER"), help=argparse.SUPPRESS)
    p.add_argument("--reference", help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.batches_text, args.lengths_text = args.batches, args.lengths
    args.batches = [int(x) for x in args.batches.split(",")]
    args.lengths = [int(x) for x in args.lengths.split(",")]
    if args.unit:
        return unit(args)
    deadline = time.time() + args.budget_s
    names = [x.strip().lower() for x in args.providers.split(",") if x.strip()]
    unknown = [x for x in names if x not in NAMES]
    if unknown or not args.bundles:
        p.error(f"unknown providers {unknown}; use {', '.join(NAMES)}" if unknown else "give at least one bundle")
    env = P.environment()
    print(
        f"onnxruntime {env['onnxruntime']} {env['onnxruntime_distributions']}; providers {env['providers_available']}; "
        f"TensorRT {env['tensorrt'] or 'not found'}; GPU {env['gpu'] or 'none found'}; budget {args.budget_s:g} s",
        flush=True,
    )
    rows = Rows(args.json_lines)
    present = [n for n in names if NAMES[n] in env["providers_available"]]
    for n in names:
        if n not in present:
            why = f"{NAMES[n]} is not in this ONNX Runtime build (it has {', '.join(env['providers_available'])})"
            rows.write({"provider": n, "status": "absent", "reason": why})
    units = [(b, n) for b in args.bundles for n in present]
    with tempfile.TemporaryDirectory(prefix="edge-bge-gpu-check-") as tmp:
        references: dict[str, str] = {}
        for i, (bundle, name) in enumerate(units):
            if time.time() >= deadline:
                rows.write({"bundle": bundle, "provider": name, "status": "skipped", "error": "budget spent"})
                continue
            if bundle not in references:  # the CPU provider's vectors, once per bundle
                references[bundle] = os.path.join(tmp, f"reference-{len(references)}.npy")
                np.save(references[bundle], Embedder(bundle, providers="cpu").embed(check_texts(args.check_texts)))
            share = time.time() + (deadline - time.time()) / (len(units) - i)
            run_unit(bundle, name, references[bundle], share, args, rows)
    statuses = {r["status"] for r in rows.rows}
    if statuses & {"parity fail", "placement fail"}:
        return 1
    if args.require_gpu and not any(r.get("ran_on") in P.GPU_PROVIDERS and "rows" in r for r in rows.rows):
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
