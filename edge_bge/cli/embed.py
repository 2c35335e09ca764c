"""``edge-bge embed`` (texts to vectors: stdout, .npy, .jsonl, or Parquet parts with --out) and
``edge-bge rerank`` (documents scored against a query, best first)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import UsageError, input_options, json_lines, model_kwargs, model_options, read_texts


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    m = sub.add_parser("embed", parents=[common], help="embed texts; JSON lines on stdout, or .npy / .jsonl")
    m.add_argument("bundle")
    m.add_argument("texts", nargs="*", metavar="TEXT")
    input_options(m, many=True)
    m.add_argument("-o", "--output", metavar="FILE", help=".npy (float32 [n, dim]) or .jsonl (default: stdout)")
    m.add_argument("--queries", action="store_true", help="prepend the bundle's query instruction")
    bulk = m.add_argument_group("bulk (with --out DIR: Parquet parts, resumable; see docs/bulk.md)")
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
    model_options(m)
    m.set_defaults(func=embed)

    r = sub.add_parser("rerank", parents=[common], help="score documents against a query; best first")
    r.add_argument("bundle")
    r.add_argument("docs", nargs="*", metavar="DOC")
    r.add_argument("-q", "--query", required=True)
    input_options(r)
    r.add_argument("--top-k", type=int, help="print only the best K")
    r.add_argument("--raw", action="store_true", help="raw logits instead of sigmoid scores in 0..1")
    model_options(r)
    r.set_defaults(func=rerank)


def _output_kind(path: str | None) -> str:
    if path is None or path == "-":
        return "stdout"
    suffix = Path(path).suffix.lower()
    if suffix not in (".npy", ".jsonl"):
        raise UsageError(f"--output {path}: expected a .npy or .jsonl file name")
    return suffix[1:]


def _bulk(args: argparse.Namespace) -> int:
    from ..bulk import embed_files

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
        ray=args.ray,
        actors=args.actors,
        log=lambda line: print(line, file=sys.stderr),
        **model_kwargs(args),
    )
    return 0


def embed(args: argparse.Namespace) -> int:
    from ..embedder import Embedder

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
    texts, records = read_texts(args, args.texts)
    if not texts:
        raise UsageError("no texts to embed")
    model = Embedder(args.bundle, **model_kwargs(args))
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
    json_lines(rows, args.output)
    return 0


def rerank(args: argparse.Namespace) -> int:
    from ..errors import EdgeBGEError
    from ..kinds import spec
    from ..manifest import Manifest
    from ..reranker import Reranker

    if args.top_k is not None and args.top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {args.top_k}")
    docs, _ = read_texts(args, args.docs)
    if not docs:
        raise UsageError("no documents to rerank")
    kind = Manifest.load(args.bundle).kind
    if "score" not in spec(kind).ops:
        raise EdgeBGEError(f"{args.bundle} is a bundle of kind {kind.value!r}; rerank needs one of kind 'reranker'")
    model = Reranker(args.bundle, **model_kwargs(args))
    best = model.rerank(args.query, docs, top_k=args.top_k, normalize=not args.raw)
    json_lines([{"index": r.index, "score": r.score, "text": r.text} for r in best], None)
    return 0
