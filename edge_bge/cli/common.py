"""What the commands share: the usage error, model and input options, reading texts, writing JSON lines."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..batching import DEFAULT_MAX_BATCH_TOKENS, GPU_MAX_BATCH_TOKENS
from ..errors import InputError

__all__ = ["UsageError", "model_options", "input_options", "model_kwargs", "read_texts", "json_lines"]


class UsageError(Exception):
    """Wrong arguments: exit code 2."""


def model_options(p: argparse.ArgumentParser) -> None:
    """--providers, --threads, --max-batch-tokens, --no-verify: how a bundle is opened."""
    p.add_argument("--providers", default="auto", help="auto, cpu, cuda or tensorrt (default: auto)")
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: usable cores)")
    p.add_argument(
        "--max-batch-tokens",
        "--batch-tokens",  # the older spelling, still accepted
        dest="max_batch_tokens",
        type=int,
        help=f"padded tokens per run (default {DEFAULT_MAX_BATCH_TOKENS} on CPU, {GPU_MAX_BATCH_TOKENS} on a GPU)",
    )
    p.add_argument(
        "--no-verify",
        action="store_true",
        help="skip the sha256 check of the bundle's files at load (faster start; for bundles checked otherwise)",
    )


def model_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of Embedder/Reranker that model_options sets."""
    return {
        "providers": args.providers,
        "threads": args.threads,
        "max_batch_tokens": args.max_batch_tokens,
        "verify": not args.no_verify,
    }


def input_options(p: argparse.ArgumentParser, *, many: bool = False) -> None:
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


def read_texts(args: argparse.Namespace, given: Sequence[str]) -> tuple[list[str], list[dict[str, Any]] | None]:
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


def json_lines(rows: Sequence[dict[str, Any]], path: str | None) -> None:
    out = sys.stdout if path is None or path == "-" else open(path, "w", encoding="utf-8")  # noqa: SIM115
    try:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
