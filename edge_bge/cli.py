"""The ``edge-bge`` command line. Exit codes: 0 ok, 1 error, 2 usage error."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from .errors import EdgeBGEError, InputError

log = logging.getLogger("edge_bge")


class UsageError(Exception):
    """Wrong arguments: exit code 2."""


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
    )
    print(summary(path))
    return 0


def _embed(args: argparse.Namespace) -> int:
    from .embedder import Embedder

    texts = list(args.texts) or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        raise UsageError("no texts: give them as arguments or on stdin")
    model = Embedder(args.bundle, providers=args.providers)
    vectors = model.embed_queries(texts) if args.queries else model.embed(texts)
    for text, vec in zip(texts, vectors, strict=True):
        print(json.dumps({"text": text, "embedding": [round(float(x), 7) for x in vec]}, ensure_ascii=False))
    return 0


def _info(args: argparse.Namespace) -> int:
    import onnxruntime as ort

    from .manifest import Manifest

    manifest = Manifest.load(args.bundle)
    info = manifest.to_dict()
    info["providers_available"] = ort.get_available_providers()
    print(json.dumps(info, indent=2, ensure_ascii=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-bge", description="BGE models on ONNX Runtime, without PyTorch.")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("export", help="turn a checkpoint into a verified ONNX bundle (needs edge-bge-export)")
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
    e.set_defaults(func=_export)

    m = sub.add_parser("embed", help="embed texts (arguments or stdin) and print JSON lines")
    m.add_argument("bundle")
    m.add_argument("texts", nargs="*")
    m.add_argument("--queries", action="store_true", help="prepend the bundle's query instruction")
    m.add_argument("--providers", default="auto")
    m.set_defaults(func=_embed)

    i = sub.add_parser("info", help="print a bundle's manifest and the available providers")
    i.add_argument("bundle")
    i.set_defaults(func=_info)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="edge-bge: %(message)s")
    try:
        return int(args.func(args))
    except UsageError as e:
        parser.print_usage(sys.stderr)
        print(f"edge-bge: error: {e}", file=sys.stderr)
        return 2
    except (EdgeBGEError, InputError, OSError) as e:
        if args.debug:
            raise
        print(f"edge-bge: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("edge-bge: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
