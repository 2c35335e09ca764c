"""The ``edge-bge`` command line. Each command lives in a module of this package with a ``register``
that adds its parser; ``main`` parses and maps failures to exit codes.

Exit codes: 0 ok, 1 error (one line on stderr; ``--debug`` shows the traceback), 2 usage error
(also a bulk job that cannot start as asked, and ``serve`` with a bundle it cannot load).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ..errors import BulkError, EdgeBGEError, ManifestError, ModelFilesError
from . import bench, embed, evaluate, export, info, serve
from .common import UsageError

__all__ = ["build_parser", "main", "UsageError"]

# the commands in --help order; a new command is a module with register(sub, common) plus an entry here
COMMANDS = (export, embed, info, bench, serve, evaluate)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="tracebacks and debug logs")
    p = argparse.ArgumentParser(
        prog="edge-bge", description="BGE models on ONNX Runtime, without PyTorch.", parents=[common]
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub, common)
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
    except Exception as e:
        if args.debug:
            raise
        if isinstance(e, (ManifestError, ModelFilesError)):
            print(f"edge-bge: error: {e}", file=sys.stderr)
            # serve: a bundle that cannot be loaded is a configuration fault that no restart mends
            return 2 if args.command == "serve" else 1
        if isinstance(e, BulkError):  # a bulk job that cannot start as asked
            print(f"edge-bge: error: {e}", file=sys.stderr)
            return 2
        known = isinstance(e, (EdgeBGEError, OSError))
        detail = str(e) if known else f"{type(e).__name__}: {e} (a bug? --debug shows the traceback)"
        print(f"edge-bge: error: {detail}", file=sys.stderr)
        return 1
