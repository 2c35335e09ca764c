"""``edge-bge export``: a checkpoint or recipe becomes a verified bundle (needs edge-bge-export)."""

from __future__ import annotations

import argparse

from ..errors import EdgeBGEError
from ..manifest import Kind, Pooling
from .common import UsageError


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    e = sub.add_parser("export", parents=[common], help="turn a checkpoint into a verified bundle (edge-bge-export)")
    e.add_argument(
        "source", help="recipe name (built in, or $EDGE_BGE_MODELS/NAME.toml), local checkpoint directory, or hub id"
    )
    e.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp32")
    e.add_argument("--target", choices=["cpu", "tensorrt"], default="cpu")
    e.add_argument("--out", required=True, help="bundle directory to write")
    e.add_argument("--force", action="store_true", help="replace an existing --out")
    e.add_argument("--checkpoint", help="local checkpoint directory for a recipe (skips the download)")
    e.add_argument("--pooling", choices=[p.value for p in Pooling], help="required when the checkpoint does not say")
    e.add_argument("--kind", choices=[k.value for k in Kind], help="override the guessed kind")
    e.add_argument("--max-length", type=int, help="override the truncation length (tokens)")
    e.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None)
    e.add_argument("--query-instruction", help="prefix for queries (embed_queries)")
    e.add_argument(
        "--external-data",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="weights in model.onnx.data (default: only when the graph passes 2 GiB)",
    )
    e.add_argument(
        "--eval-data",
        metavar="DATA",
        help="also gate on retrieval: a BEIR folder or pairs .jsonl (as edge-bge eval reads); the bundle's nDCG@10 "
        "may fall at most --max-ndcg-drop below the PyTorch reference's there",
    )
    e.add_argument(
        "--max-ndcg-drop",
        type=float,
        metavar="DELTA",
        help="with --eval-data: the nDCG@10 the bundle may lose, in nDCG units (default 0.01 = one point)",
    )
    e.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        from edge_bge_export.pipeline import export, summary
    except ImportError as e:
        if e.name and e.name.split(".")[0] in ("edge_bge_export", "torch", "transformers", "onnx"):
            raise EdgeBGEError(
                f"export needs the build-time toolchain ({e.name} is missing): pip install -e ./export "
                "(with torch installed first: pip install torch --index-url https://download.pytorch.org/whl/cpu)"
            ) from None
        raise
    if args.max_ndcg_drop is not None and args.eval_data is None:
        raise UsageError("--max-ndcg-drop needs --eval-data DATA")
    gate = {} if args.eval_data is None else {"eval_data": args.eval_data}
    if args.max_ndcg_drop is not None:
        gate["max_ndcg_drop"] = args.max_ndcg_drop
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
        **gate,
    )
    print(summary(path))
    return 0
