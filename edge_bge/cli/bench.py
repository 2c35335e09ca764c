"""``edge-bge bench``: throughput and latency on a built-in mixed-length set (edge_bge.bench)."""

from __future__ import annotations

import argparse
import json

from .common import UsageError, model_kwargs, model_options


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    b = sub.add_parser("bench", parents=[common], help="throughput and latency on a built-in mixed-length set")
    b.add_argument("bundle")
    b.add_argument("--texts", type=int, default=256, help="texts in the set (default 256)")
    b.add_argument("--repeat", type=int, default=3, help="timed passes over the set; the best counts")
    b.add_argument("--latency-samples", type=int, default=50, help="single-text calls timed")
    b.add_argument("--json", action="store_true")
    model_options(b)
    b.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..bench import measure
    from ..model import load

    if args.texts < 1 or args.repeat < 1 or args.latency_samples < 1:
        raise UsageError("--texts, --repeat and --latency-samples must be at least 1")
    model = load(args.bundle, **model_kwargs(args))
    result = {"bundle": str(args.bundle)}
    result.update(measure(model, texts=args.texts, repeat=args.repeat, latency_samples=args.latency_samples))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{result['name']} on {', '.join(result['providers'])}: {result['texts']} mixed-length texts, {result['tokens']} tokens"
        )
        print(f"throughput   {result['throughput_texts_per_s']} texts/s, {result['throughput_tokens_per_s']} tokens/s")
        print(f"latency      one text: p50 {result['latency_ms_p50']} ms, p99 {result['latency_ms_p99']} ms")
    return 0
