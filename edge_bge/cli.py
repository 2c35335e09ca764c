"""The ``edge-bge`` command line: export, embed, rerank, info, bench, serve, pack, verify.

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

from .bulk import BulkError
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


def _bulk(args: argparse.Namespace) -> int:
    from .bulk import embed_files

    if args.texts:
        raise UsageError("with --out, give inputs with --input, not as arguments")
    if not args.input:
        raise UsageError("--out needs --input FILE... (files or globs)")
    if args.output:
        raise UsageError("give --out DIR (bulk) or --output FILE, not both")
    embed_files(
        args.bundle,
        args.input,
        args.out,
        field=args.field,
        id_field=args.id_field,
        sparse=args.sparse,
        colbert=args.colbert,
        queries=args.queries,
        skip_bad=args.skip_bad,
        overwrite=args.overwrite,
        part_rows=args.part_rows,
        providers=args.providers,
        threads=args.threads,
        max_batch_tokens=args.batch_tokens,
        verify=not args.no_verify,
        ray=args.ray,
        actors=args.actors,
        log=lambda line: print(line, file=sys.stderr),
    )
    return 0


def _embed(args: argparse.Namespace) -> int:
    from .embedder import Embedder

    if args.out is not None:
        return _bulk(args)
    bulk_only = [
        f"--{n.replace('_', '-')}"
        for n in ("id_field", "sparse", "colbert", "skip_bad", "ray", "actors")
        if getattr(args, n)
    ]
    if bulk_only:
        raise UsageError(f"{', '.join(bulk_only)} need --out DIR")
    if args.input is not None:
        if len(args.input) > 1:
            raise UsageError("several --input files need --out DIR (bulk mode)")
        args.input = args.input[0]
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


def _load_model(bundle: str, **options: Any) -> Any:
    """An Embedder or Reranker by the bundle's kind; not through edge_bge.server, which needs the server extra."""
    from .embedder import Embedder
    from .manifest import Kind, Manifest
    from .reranker import Reranker

    return (Reranker if Manifest.load(bundle).kind is Kind.RERANKER else Embedder)(bundle, **options)


def _load_reranker(bundle: str, args: argparse.Namespace) -> Any:
    from .manifest import Kind, Manifest

    kind = Manifest.load(bundle).kind
    if kind is not Kind.RERANKER:
        raise EdgeBGEError(f"{bundle} is a bundle of kind {kind.value!r}; rerank needs one of kind 'reranker'")
    return _load_model(
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
        model = _load_model(args.bundle, providers=args.providers, threads=args.threads)
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

    if args.texts < 1 or args.repeat < 1 or args.latency_samples < 1:
        raise UsageError("--texts, --repeat and --latency-samples must be at least 1")
    kind = Manifest.load(args.bundle).kind
    model = _load_model(
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
# Every `serve` flag can also be set by EDGE_BGE_<FLAG> (--max-queue: EDGE_BGE_MAX_QUEUE), the way
# containers are configured. A flag given on the command line wins; an empty variable is unset.
_ENV_PREFIX = "EDGE_BGE_"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _env_flags(parser: argparse.ArgumentParser) -> None:
    """Give each long flag of ``parser`` its variable EDGE_BGE_<FLAG>, shown beside it in --help.

    The flags' defaults move into a table that ``_flags_from_env`` reads after parsing: a flag not
    given is absent from the parsed arguments until then, which is how a flag given wins."""
    table = []
    for action in parser._actions:
        flag = next((o for o in action.option_strings if o.startswith("--")), None)
        if flag is None or action.dest in ("help", "debug"):
            continue
        var = _ENV_PREFIX + flag[2:].upper().replace("-", "_")
        action.help = f"{(action.help or '').replace('%(default)s', str(action.default))} [${var}]".lstrip()
        table.append((var, flag, action, action.default))
        action.default = argparse.SUPPRESS
    parser.set_defaults(env_flags=table)


def _env_value(var: str, flag: str, action: argparse.Action, raw: str) -> Any:
    value = raw.strip()
    if action.nargs == 0:  # a switch: --json-logs, --truncate/--no-truncate
        if value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
        expected = "1/0, true/false or yes/no"
    else:
        convert = action.type if callable(action.type) else str
        many = isinstance(action, argparse._AppendAction)
        items = [v.strip() for v in value.split(",") if v.strip()] if many else [value]
        try:
            out = [convert(v) for v in items]
        except (ValueError, TypeError, argparse.ArgumentTypeError):
            out = None
        if out is not None and (not action.choices or all(v in action.choices for v in out)):
            return out if many else out[0]
        expected = {int: "an integer", float: "a number"}.get(convert, "a value")  # type: ignore[call-overload]
        if action.choices:
            expected = "one of " + ", ".join(map(str, action.choices))
        if many:
            expected = f"a comma-separated list of {expected}s"
    raise UsageError(f"{var}={raw!r} is not valid: expected {expected}, as for {flag}")


def _flags_from_env(args: argparse.Namespace, environ: Any = None) -> dict[str, str]:
    """Set each flag not given: from its EDGE_BGE_ variable when that is set, else the flag's default.

    Returns {dest: variable} for the values that came from the environment (once done, the same again).
    A variable whose value the flag would refuse is a UsageError naming the variable and the value."""
    done: dict[str, str] | None = getattr(args, "from_env", None)
    if done is not None:
        return done
    environ = os.environ if environ is None else environ
    from_env: dict[str, str] = {}
    for var, flag, action, default in getattr(args, "env_flags", ()):
        if hasattr(args, action.dest):  # given on the command line
            continue
        raw = environ.get(var, "")
        if not raw.strip():
            setattr(args, action.dest, default)
            continue
        setattr(args, action.dest, _env_value(var, flag, action, raw))
        from_env[action.dest] = var
    args.from_env = from_env
    return from_env


def _api_key(args: argparse.Namespace) -> str | None:
    """--api-key-file, --api-key, then EDGE_BGE_API_KEY_FILE, EDGE_BGE_API_KEY; None: no key."""
    from_env = _flags_from_env(args)
    path, given = args.api_key_file, args.api_key
    if given is not None and "api_key" not in from_env and "api_key_file" in from_env:
        path = None  # the --api-key flag wins over the file's variable
    if path:
        name = from_env.get("api_key_file", "--api-key-file")
        try:
            key = Path(path).read_text(encoding="utf-8").strip()
        except UnicodeDecodeError:
            raise UsageError(f"{name} {path} is not UTF-8 text") from None
        if not key:
            raise UsageError(f"{name} {path} is empty")
        return key
    if given is not None:
        if not given.strip():
            raise UsageError(f"{from_env.get('api_key', '--api-key')} is empty")
        return str(given).strip()
    return None


def _serve(args: argparse.Namespace) -> int:
    _flags_from_env(args)
    try:
        from .server import Served, ServerConfig, load_model, serve
        from .server.logs import use_json_logs
    except ImportError as e:
        raise EdgeBGEError(
            f"serve needs the server extra ({e.name} is missing): pip install 'edge-bge[server]'"
        ) from None
    from .embedder import DEFAULT_MAX_BATCH_TOKENS, GPU_MAX_BATCH_TOKENS
    from .providers import wants_gpu

    names = args.served_model_name or []
    if names and len(names) != len(args.bundles):
        raise UsageError(
            f"give one --served-model-name per bundle, in bundle order ({len(args.bundles)} bundles, {len(names)} names)"
        )
    if len(set(names)) != len(names):
        raise UsageError(f"--served-model-name: each name once, got {', '.join(names)}")
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
            strict_model_names=args.strict_model_names,
            json_logs=args.json_logs,
            log_texts=args.log_texts,
        )
    except InputError as e:
        raise UsageError(str(e)) from None
    if config.json_logs:  # from here on: what the bundles' loading logs is JSON too
        use_json_logs(debug=args.debug)
    options = {
        "providers": args.providers,
        "threads": args.threads,
        "max_batch_tokens": args.batch_tokens,
        "verify": not args.no_verify,
        "spin": args.spin,
    }
    served = [
        Served(load_model(bundle, **options), name=names[i] if names else None) for i, bundle in enumerate(args.bundles)
    ]
    serve(served, config, log_level="info" if args.debug else "warning")
    return 0


# ---- pack, verify (air-gapped kits) ------------------------------------------------------------
def _pack(args: argparse.Namespace) -> int:
    from . import kit
    from .manifest import sha256_file

    try:
        target = kit.Target.parse(python=args.python, platform=args.platform, extras=args.extras)
        out = kit.pack(args.bundles, out=args.out, target=target, report=lambda line: print(line, file=sys.stderr))
    except InputError as e:  # kit's argument faults
        raise UsageError(str(e)) from None
    sums = sha256_file(out / kit.SUMS)
    print(f"{out}: kit for {target.describe()}; install with: bash {out / kit.INSTALL}")
    print(f"{kit.SUMS} sha256 {sums} (compare it on the target machine)")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from . import kit

    failed = 0
    for bundle in args.bundles:
        try:
            print(kit.verify_bundle(bundle), flush=True)
        except (EdgeBGEError, OSError) as e:
            if args.debug:
                raise
            print(f"edge-bge: error: {bundle}: {e}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


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


def _input_options(p: argparse.ArgumentParser, *, many: bool = False) -> None:
    if many:
        p.add_argument(
            "-i",
            "--input",
            metavar="FILE",
            nargs="+",
            action="extend",
            help=".txt (one text per line) or .jsonl; '-' for stdin; with --out: many files and globs, .parquet too",
        )
    else:
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
    e.add_argument(
        "source", help="recipe name (built in, or $EDGE_BGE_MODELS/NAME.toml), local checkpoint directory, or hub id"
    )
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
    _input_options(m, many=True)
    m.add_argument("-o", "--output", metavar="FILE", help=".npy (float32 [n, dim]) or .jsonl (default: stdout)")
    m.add_argument("--queries", action="store_true", help="prepend the bundle's query instruction")
    bulk = m.add_argument_group("bulk (with --out DIR: Parquet parts, resumable; see README 'Bulk embedding')")
    bulk.add_argument("--out", metavar="DIR", help="write Parquet parts and bulk.json here; a rerun resumes")
    bulk.add_argument("--id-field", help="the id field/column of each row (default: the line or row number)")
    bulk.add_argument("--sparse", action="store_true", help="add bge-m3 lexical weights (sparse_indices/values)")
    bulk.add_argument("--colbert", action="store_true", help="add bge-m3 ColBERT vectors")
    bulk.add_argument("--skip-bad", action="store_true", help="set bad rows aside in DIR/rejects.jsonl")
    bulk.add_argument("--overwrite", action="store_true", help="replace the output of another job in DIR")
    bulk.add_argument("--part-rows", type=int, default=10_000, help="input rows per part (default 10000)")
    bulk.add_argument(
        "--ray", nargs="?", const=True, metavar="ADDRESS", help="run on Ray Data (a cluster address, or a local Ray)"
    )
    bulk.add_argument("--actors", type=int, help="Ray actors (default: the cluster's CPUs / --threads)")
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

    s = sub.add_parser(
        "serve",
        parents=[common],
        help="HTTP server: OpenAI, TEI and Cohere/Jina routes",
        epilog="Each flag can also be set by the environment variable shown beside it, [$EDGE_BGE_...] (booleans: "
        "1/0, true/false, yes/no; lists: comma-separated). A flag given on the command line wins.",
    )
    s.add_argument("bundles", nargs="+", metavar="BUNDLE")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8080, help="port to listen on (8080)")
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
    s.add_argument(
        "--served-model-name",
        action="append",
        metavar="NAME",
        help="serve a bundle under NAME (repeat: one per bundle, in bundle order; default: the manifest's name)",
    )
    s.add_argument(
        "--strict-model-names",
        action="store_true",
        help="404 for a 'model' not served here, even when one bundle could answer (default: that bundle answers)",
    )
    s.add_argument(
        "--spin",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="ONNX Runtime threads spin-wait for work: ~5%% faster on cores of its own, more CPU per request, "
        "slower on a shared host (off; see benchmarks/spinning.py)",
    )
    s.add_argument(
        "--json-logs",
        action="store_true",
        help="one JSON object per log line: access lines (request id, route, status, texts, tokens, ms) and events",
    )
    s.add_argument("--log-texts", action="store_true", help="put request texts in the JSON access lines (off)")
    _model_options(s)
    _env_flags(s)
    s.set_defaults(func=_serve)

    g = sub.add_parser("build-engine", parents=[common], help="pre-build a TensorRT engine (EP-context model)")
    g.add_argument("bundle", help="a bundle exported with --target tensorrt")
    g.add_argument("--max-batch-tokens", type=int, help="the Embedder's token budget the engine must serve")
    g.add_argument("--fp16", action="store_true", help="let TensorRT run fp32 layers in fp16")
    g.add_argument("--device-id", type=int, default=0)
    g.add_argument("--cache-dir", help="engine cache (default $EDGE_BGE_CACHE_DIR or ~/.cache/edge-bge)")
    g.add_argument("--force", action="store_true", help="rebuild an engine that exists")
    g.set_defaults(func=_build_engine)

    k = sub.add_parser("pack", parents=[common], help="an air-gapped kit: runtime wheels, bundles, install.sh")
    k.add_argument("bundles", nargs="+", metavar="BUNDLE")
    k.add_argument("--out", required=True, metavar="KIT", help="the kit folder to write (must not exist)")
    k.add_argument("--python", metavar="3.N", help="the target's Python (default: this one's)")
    k.add_argument("--platform", help="the target's wheel platform, e.g. manylinux_2_28_x86_64 (default: this machine)")
    k.add_argument("--extras", metavar="E[,E]", help="runtime extras to include, e.g. server or server,gpu")
    k.set_defaults(func=_pack)

    v = sub.add_parser("verify", parents=[common], help="re-check bundles: manifest, sha256 of each file, graph")
    v.add_argument("bundles", nargs="+", metavar="BUNDLE")
    v.set_defaults(func=_verify)
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
    except BulkError as e:  # a bulk job that cannot start as asked (inputs, bundle, output of another job)
        if args.debug:
            raise
        print(f"edge-bge: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        if args.debug:
            raise
        known = isinstance(e, (EdgeBGEError, OSError))
        detail = str(e) if known else f"{type(e).__name__}: {e} (a bug? --debug shows the traceback)"
        print(f"edge-bge: error: {detail}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
