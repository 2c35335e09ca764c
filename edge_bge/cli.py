"""The ``edge-bge`` command line: export, embed, rerank, info, bench, serve.

Exit codes: 0 ok, 1 error (one line on stderr; ``--debug`` shows the traceback), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import EdgeBGEError, InputError, ManifestError, ModelFilesError

log = logging.getLogger("edge_bge")


class UsageError(Exception):
    """Wrong arguments: exit code 2."""


# ---- export ------------------------------------------------------------------------------------
def _export(args: argparse.Namespace) -> int:
    try:
        from edge_bge_export.pipeline import export, summary
    except ImportError as e:
        if e.name and e.name.split(".")[0] in ("edge_bge_export", "torch", "transformers", "onnx"):
            raise EdgeBGEError(
                f"export needs the build-time toolchain ({e.name} is missing): pip install -e ./export "
                "(with torch installed first: pip install torch --index-url https://download.pytorch.org/whl/cpu)"
            ) from None
        raise
    from edge_bge.manifest import Kind, Pooling

    path = export(
        args.source,
        precision=args.precision,
        target=args.target,
        out=args.out,
        force=args.force,
        checkpoint=args.checkpoint,
        pooling=Pooling(args.pooling) if args.pooling else None,
        kind=Kind(args.kind) if args.kind else None,
        max_length=args.max_length,
        normalize=args.normalize,
        query_instruction=args.query_instruction,
        external_data=args.external_data,
    )
    print(summary(path))
    return 0


# ---- texts in, results out -----------------------------------------------------------------------
def _read_texts(args: argparse.Namespace, given: Sequence[str]) -> tuple[list[str], list[dict[str, Any]] | None]:
    """Texts from arguments, --input (.txt: one per line; .jsonl: --field of each object) or stdin.

    Blank lines are skipped. Returns the texts and, for .jsonl, the records they came from.
    """
    if given and args.input:
        raise UsageError("give texts as arguments or with --input, not both")
    if given:
        return list(given), None
    path = args.input
    if path is None or path == "-":
        if path is None and sys.stdin.isatty():
            raise UsageError("no texts: give them as arguments, with --input FILE, or on stdin")
        return [line.rstrip("\r\n") for line in sys.stdin if line.strip()], None
    suffix = Path(path).suffix.lower()
    if suffix not in (".txt", ".jsonl"):
        raise UsageError(f"--input {path}: expected a .txt (one text per line) or .jsonl file")
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise InputError(f"{path} is not UTF-8 text (byte {e.start})") from None
    if suffix == ".txt":
        return [line for line in lines if line.strip()], None
    texts: list[str] = []
    records: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{number}: not valid JSON ({e.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get(args.field), str):
            raise InputError(f"{path}:{number}: expected a JSON object with a string field {args.field!r}")
        texts.append(record[args.field])
        records.append(record)
    return texts, records


def _output_kind(path: str | None) -> str:
    if path is None or path == "-":
        return "stdout"
    suffix = Path(path).suffix.lower()
    if suffix not in (".npy", ".jsonl"):
        raise UsageError(f"--output {path}: expected a .npy or .jsonl file name")
    return suffix[1:]


def _json_lines(rows: Sequence[dict[str, Any]], path: str | None) -> None:
    out = sys.stdout if path is None or path == "-" else open(path, "w", encoding="utf-8")  # noqa: SIM115
    try:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()


def _embed(args: argparse.Namespace) -> int:
    from .embedder import Embedder

    kind = _output_kind(args.output)
    texts, records = _read_texts(args, args.texts)
    if not texts:
        raise UsageError("no texts to embed")
    model = Embedder(
        args.bundle,
        providers=args.providers,
        threads=args.threads,
        max_batch_tokens=args.batch_tokens,
        verify=not args.no_verify,
    )
    progress = args.input not in (None, "-") and sys.stderr.isatty()
    if args.queries:
        vectors = model.embed_queries(texts, show_progress=progress)
    else:
        vectors = model.embed(texts, show_progress=progress)
    if kind == "npy":
        import numpy as np

        np.save(args.output, vectors)
        return 0
    rows = [
        {**record, "embedding": vec.tolist()} if records else {"text": text, "embedding": vec.tolist()}
        for text, vec, record in zip(texts, vectors, records or [None] * len(texts), strict=True)
    ]
    _json_lines(rows, args.output)
    return 0


def _load_reranker(bundle: str, args: argparse.Namespace) -> Any:
    from .manifest import Kind, Manifest
    from .server.models import load_model

    kind = Manifest.load(bundle).kind
    if kind is not Kind.RERANKER:
        raise EdgeBGEError(f"{bundle} is a bundle of kind {kind.value!r}; rerank needs one of kind 'reranker'")
    return load_model(
        bundle,
        providers=args.providers,
        threads=args.threads,
        max_batch_tokens=args.batch_tokens,
        verify=not args.no_verify,
    )


def _rerank(args: argparse.Namespace) -> int:
    import numpy as np

    if args.top_k is not None and args.top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {args.top_k}")
    docs, _ = _read_texts(args, args.docs)
    if not docs:
        raise UsageError("no documents to rerank")
    model = _load_reranker(args.bundle, args)
    scores = np.asarray(model.score([(args.query, d) for d in docs], normalize=not args.raw)).reshape(-1)
    order = np.argsort(-scores, kind="stable")[: args.top_k]
    _json_lines([{"index": int(i), "score": float(scores[i]), "text": docs[i]} for i in order], None)
    return 0


# ---- info --------------------------------------------------------------------------------------
def _info(args: argparse.Namespace) -> int:
    import onnxruntime as ort

    from .manifest import Manifest

    manifest = Manifest.load(args.bundle)
    providers: dict[str, Any] = {"available": ort.get_available_providers(), "asked": args.providers}
    if not args.no_load:
        from .server.models import load_model

        model = load_model(args.bundle, providers=args.providers, threads=args.threads)
        providers["requested"] = list(getattr(model.providers, "requested", []))
        providers["chosen"] = list(model.providers)
    if args.json:
        print(
            json.dumps({"bundle": str(args.bundle), "manifest": manifest.to_dict(), "providers": providers}, indent=2)
        )
        return 0
    m = manifest
    summary = m.parity.get("summary") or {}
    parity = f"against {m.parity.get('reference', '?')}: " + ", ".join(
        f"{k} {v:.7f}" if isinstance(v, float) else f"{k} {v}" for k, v in summary.items()
    )
    rows = [
        ("bundle", str(args.bundle)),
        ("name", f"{m.name} ({m.kind.value}, {m.architecture})"),
        ("graph", f"{m.precision.value}, {m.target.value}"),
        ("shape", f"dim {m.dim}, max_length {m.max_length}, pooling {m.pooling.value if m.pooling else '-'}"),
        ("normalize", str(m.normalize).lower()),
        ("query", json.dumps(m.query_instruction, ensure_ascii=False)),
        ("parity", f"{parity}; gate {m.parity.get('gate', {})}" if m.parity else "not recorded"),
        ("source", f"{m.source.get('id', '?')} @ {m.source.get('revision', '?')}"),
        ("providers", "available: " + ", ".join(providers["available"])),
    ]
    if "chosen" in providers:
        rows.append(("", f"requested ({args.providers}): " + ", ".join(providers["requested"])))
        rows.append(("", "chosen: " + ", ".join(providers["chosen"])))
    for key, value in rows:
        print(f"{key:<10} {value}")
    return 0


# ---- bench -------------------------------------------------------------------------------------
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


def _build_engine(args: argparse.Namespace) -> int:
    from .providers import build_engine

    built = build_engine(
        args.bundle,
        max_batch_tokens=args.max_batch_tokens,
        fp16=args.fp16,
        device_id=args.device_id,
        cache_dir=args.cache_dir,
        force=args.force,
    )
    state = "reused" if built.reused else f"built in {built.seconds:.1f}s"
    print(f"{built.context_model}  ({state}; key {built.key[:16]})")
    return 0


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def _bench(args: argparse.Namespace) -> int:
    from .manifest import Kind, Manifest
    from .server.models import load_model

    if args.texts < 1 or args.repeat < 1 or args.latency_samples < 1:
        raise UsageError("--texts, --repeat and --latency-samples must be at least 1")
    kind = Manifest.load(args.bundle).kind
    model = load_model(
        args.bundle,
        providers=args.providers,
        threads=args.threads,
        max_batch_tokens=args.batch_tokens,
        verify=not args.no_verify,
    )
    texts = bench_texts(args.texts)
    if kind is Kind.RERANKER:
        items: list[Any] = [("what do embedding models do?", t) for t in texts]

        def run(batch: list[Any]) -> Any:
            return model.score(batch)

        tokens = sum(len(e.ids) for e in model.tokenizer.encode_pairs(items, query_max_length=model.query_max_length))
    else:
        items = texts

        def run(batch: list[Any]) -> Any:
            return model.embed(batch)

        tokens = sum(model.count_tokens(items))
    run(items[:16])  # warm-up
    seconds = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        run(items)
        seconds.append(time.perf_counter() - t0)
    best = min(seconds)
    latencies = []
    for i in range(args.latency_samples):
        t0 = time.perf_counter()
        run([items[i % len(items)]])
        latencies.append((time.perf_counter() - t0) * 1000)
    result = {
        "bundle": str(args.bundle),
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
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['name']} on {', '.join(result['providers'])}: {len(items)} mixed-length texts, {tokens} tokens")
        print(f"throughput   {result['throughput_texts_per_s']} texts/s, {result['throughput_tokens_per_s']} tokens/s")
        print(f"latency      one text: p50 {result['latency_ms_p50']} ms, p99 {result['latency_ms_p99']} ms")
    return 0


# ---- serve -------------------------------------------------------------------------------------
def _api_key(args: argparse.Namespace) -> str | None:
    if args.api_key_file:
        try:
            key = Path(args.api_key_file).read_text(encoding="utf-8").strip()
        except UnicodeDecodeError:
            raise UsageError(f"--api-key-file {args.api_key_file} is not UTF-8 text") from None
        if not key:
            raise UsageError(f"--api-key-file {args.api_key_file} is empty")
        return key
    if args.api_key is not None:
        if not args.api_key.strip():
            raise UsageError("--api-key is empty")
        return args.api_key.strip()
    return os.environ.get("EDGE_BGE_API_KEY") or None


def _serve(args: argparse.Namespace) -> int:
    try:
        from .server import Served, ServerConfig, load_model, serve
    except ImportError as e:
        raise EdgeBGEError(
            f"serve needs the server extra ({e.name} is missing): pip install 'edge-bge[server]'"
        ) from None
    from .embedder import DEFAULT_MAX_BATCH_TOKENS, GPU_MAX_BATCH_TOKENS
    from .providers import wants_gpu

    if args.batch_tokens is None:
        args.batch_tokens = GPU_MAX_BATCH_TOKENS if wants_gpu(args.providers) else DEFAULT_MAX_BATCH_TOKENS
    try:
        config = ServerConfig(
            host=args.host,
            port=args.port,
            api_key=_api_key(args),
            cors_origins=tuple(args.cors_origin or ()),
            max_batch_tokens=args.batch_tokens,
            batch_wait_ms=args.batch_wait_ms,
            max_queue_items=args.max_queue,
            max_items=args.max_items,
            max_chars=args.max_chars,
            max_body_bytes=args.max_body_bytes,
            request_timeout=args.request_timeout,
            drain_timeout=args.drain_timeout,
            truncate=args.truncate,
            warmup=args.warmup,
            lenient_content_type=args.lenient_content_type,
            max_tokenize_requests=args.max_tokenize,
            max_connections=args.max_connections,
            header_timeout=args.header_timeout,
            keep_alive_timeout=args.keep_alive_timeout,
        )
    except InputError as e:
        raise UsageError(str(e)) from None
    options = {
        "providers": args.providers,
        "threads": args.threads,
        "max_batch_tokens": args.batch_tokens,
        "verify": not args.no_verify,
    }
    served = [Served(load_model(bundle, **options)) for bundle in args.bundles]
    serve(served, config, log_level="info" if args.debug else "warning")
    return 0


# ---- parser ------------------------------------------------------------------------------------
def _model_options(p: argparse.ArgumentParser) -> None:
    from .embedder import DEFAULT_MAX_BATCH_TOKENS, GPU_MAX_BATCH_TOKENS

    p.add_argument("--providers", default="auto", help="auto, cpu, cuda or tensorrt (default: auto)")
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: usable cores)")
    p.add_argument(
        "--batch-tokens",
        type=int,
        help=f"padded tokens per run (default {DEFAULT_MAX_BATCH_TOKENS} on CPU, {GPU_MAX_BATCH_TOKENS} on a GPU)",
    )
    p.add_argument(
        "--no-verify",
        action="store_true",
        help="skip the sha256 check of the bundle's files at load (faster start; for bundles checked otherwise)",
    )


def _input_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-i", "--input", metavar="FILE", help=".txt (one text per line) or .jsonl; '-' for stdin")
    p.add_argument("--field", default="text", help="the text field of each .jsonl object (default: text)")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="tracebacks and debug logs")
    p = argparse.ArgumentParser(
        prog="edge-bge", description="BGE models on ONNX Runtime, without PyTorch.", parents=[common]
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    e = sub.add_parser("export", parents=[common], help="turn a checkpoint into a verified bundle (edge-bge-export)")
    e.add_argument("source", help="recipe name (models/*.toml), local checkpoint directory, or hub id")
    e.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp32")
    e.add_argument("--target", choices=["cpu", "tensorrt"], default="cpu")
    e.add_argument("--out", required=True, help="bundle directory to write")
    e.add_argument("--force", action="store_true", help="replace an existing --out")
    e.add_argument("--checkpoint", help="local checkpoint directory for a recipe (skips the download)")
    e.add_argument("--pooling", choices=["cls", "mean"], help="required when the checkpoint does not say")
    e.add_argument("--kind", choices=["embedding", "m3", "reranker"], help="override the guessed kind")
    e.add_argument("--max-length", type=int, help="override the truncation length (tokens)")
    e.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None)
    e.add_argument("--query-instruction", help="prefix for queries (embed_queries)")
    e.add_argument(
        "--external-data",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="weights in model.onnx.data (default: only when the graph passes 2 GiB)",
    )
    e.set_defaults(func=_export)

    m = sub.add_parser("embed", parents=[common], help="embed texts; JSON lines on stdout, or .npy / .jsonl")
    m.add_argument("bundle")
    m.add_argument("texts", nargs="*", metavar="TEXT")
    _input_options(m)
    m.add_argument("-o", "--output", metavar="FILE", help=".npy (float32 [n, dim]) or .jsonl (default: stdout)")
    m.add_argument("--queries", action="store_true", help="prepend the bundle's query instruction")
    _model_options(m)
    m.set_defaults(func=_embed)

    r = sub.add_parser("rerank", parents=[common], help="score documents against a query; best first")
    r.add_argument("bundle")
    r.add_argument("docs", nargs="*", metavar="DOC")
    r.add_argument("-q", "--query", required=True)
    _input_options(r)
    r.add_argument("--top-k", type=int, help="print only the best K")
    r.add_argument("--raw", action="store_true", help="raw logits instead of sigmoid scores in 0..1")
    _model_options(r)
    r.set_defaults(func=_rerank)

    i = sub.add_parser("info", parents=[common], help="a bundle's manifest, parity, and providers")
    i.add_argument("bundle")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.add_argument("--no-load", action="store_true", help="do not open a session (no 'chosen' providers)")
    i.add_argument("--providers", default="auto")
    i.add_argument("--threads", type=int)
    i.set_defaults(func=_info)

    b = sub.add_parser("bench", parents=[common], help="throughput and latency on a built-in mixed-length set")
    b.add_argument("bundle")
    b.add_argument("--texts", type=int, default=256, help="texts in the set (default 256)")
    b.add_argument("--repeat", type=int, default=3, help="timed passes over the set; the best counts")
    b.add_argument("--latency-samples", type=int, default=50, help="single-text calls timed")
    b.add_argument("--json", action="store_true")
    _model_options(b)
    b.set_defaults(func=_bench)

    s = sub.add_parser("serve", parents=[common], help="HTTP server: OpenAI, TEI and Cohere/Jina routes")
    s.add_argument("bundles", nargs="+", metavar="BUNDLE")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8080)
    key = s.add_mutually_exclusive_group()
    key.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (visible in ps: prefer the file)")
    key.add_argument("--api-key-file", metavar="FILE", help="read the API key from FILE")
    s.add_argument("--cors-origin", action="append", metavar="ORIGIN", help="allow browsers from ORIGIN (repeat)")
    s.add_argument("--batch-wait-ms", type=float, default=2.0, help="wait for more requests before a run (2)")
    s.add_argument("--max-queue", type=int, default=4096, help="texts queued per model before 429 (4096)")
    s.add_argument("--max-items", type=int, default=2048, help="texts per request (2048)")
    s.add_argument("--max-chars", type=int, default=1_000_000, help="characters per request (1000000)")
    s.add_argument("--max-body-bytes", type=int, default=8 * 1024 * 1024, help="request body bytes (8 MiB)")
    s.add_argument("--request-timeout", type=float, default=60.0, help="seconds until 504 (60)")
    s.add_argument("--drain-timeout", type=float, default=30.0, help="seconds SIGTERM waits for in-flight work")
    s.add_argument("--truncate", action=argparse.BooleanOptionalAction, default=True, help="cut over-long texts")
    s.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=True, help="largest batch at start")
    s.add_argument("--max-tokenize", type=int, default=4, help="/tokenize requests worked on at once; then 429 (4)")
    s.add_argument(
        "--max-connections",
        type=int,
        default=1024,
        help="open connections; past it the oldest one waiting for a request is closed, or 503 (1024)",
    )
    s.add_argument("--header-timeout", type=float, default=10.0, help="seconds to send request headers (10)")
    s.add_argument("--keep-alive-timeout", type=float, default=5.0, help="idle seconds between requests (5)")
    s.add_argument(
        "--lenient-content-type",
        action="store_true",
        help="accept a POST without Content-Type as JSON (it lets browsers skip the CORS preflight)",
    )
    _model_options(s)
    s.set_defaults(func=_serve)

    g = sub.add_parser("build-engine", parents=[common], help="pre-build a TensorRT engine (EP-context model)")
    g.add_argument("bundle", help="a bundle exported with --target tensorrt")
    g.add_argument("--max-batch-tokens", type=int, help="the Embedder's token budget the engine must serve")
    g.add_argument("--fp16", action="store_true", help="let TensorRT run fp32 layers in fp16")
    g.add_argument("--device-id", type=int, default=0)
    g.add_argument("--cache-dir", help="engine cache (default $EDGE_BGE_CACHE_DIR or ~/.cache/edge-bge)")
    g.add_argument("--force", action="store_true", help="rebuild an engine that exists")
    g.set_defaults(func=_build_engine)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        # texts after options ("embed B -o x.npy a b"): argparse leaves them over; they are texts too
        rest = "texts" if args.command == "embed" else "docs" if args.command == "rerank" else None
        if extra and rest and not any(x.startswith("-") for x in extra):
            getattr(args, rest).extend(extra)
        elif extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as e:  # argparse: 2 for usage errors, 0 for --help
        return int(e.code or 0)
    args.debug = getattr(args, "debug", False)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="edge-bge: %(message)s")
    try:
        return int(args.func(args))
    except UsageError as e:
        parser.print_usage(sys.stderr)
        print(f"edge-bge: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edge-bge: interrupted", file=sys.stderr)
        return 130
    except (ManifestError, ModelFilesError) as e:
        if args.debug:
            raise
        print(f"edge-bge: error: {e}", file=sys.stderr)
        # serve: a bundle that cannot be loaded is a configuration fault that no restart mends
        return 2 if args.command == "serve" else 1
    except Exception as e:
        if args.debug:
            raise
        known = isinstance(e, (EdgeBGEError, OSError))
        detail = str(e) if known else f"{type(e).__name__}: {e} (a bug? --debug shows the traceback)"
        print(f"edge-bge: error: {detail}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
