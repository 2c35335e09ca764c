"""``edge-bge eval``: retrieval quality of bundles on the user's own data, compared with the first bundle.

Exit codes: 0 ok; 1 a bundle lost more nDCG than ``--fail-below`` allows (or a run failed);
2 bad input (data, bundles, modes, options), one line on stderr. The work is in
``edge_bge.evaluation``, imported when the command runs.
"""

from __future__ import annotations

import argparse
import sys

from .cli.common import model_options
from .errors import InputError

__all__ = ["add_arguments", "run"]

_MODES = "dense,sparse,colbert,hybrid"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``edge-bge eval``."""
    p.description = (
        "Rank DATA's corpus for each query with each bundle and report nDCG@k, recall@k, recall@100 and MRR@k "
        "(as trec_eval computes them), each bundle against the first."
    )
    p.add_argument(
        "bundles", nargs="+", metavar="BUNDLE", help="embedding or bge-m3 bundles; the first is the baseline"
    )
    p.add_argument(
        "--data",
        required=True,
        help="a BEIR folder (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv) or a pairs .jsonl "
        "({'query', 'positive', 'negatives'?} per line)",
    )
    p.add_argument("--split", default="test", help="the BEIR qrels file, qrels/SPLIT.tsv (default: test)")
    p.add_argument(
        "--modes",
        metavar="M[,M]",
        help=f"of {_MODES}; sparse, colbert and hybrid need bge-m3 bundles (default: all a bundle's kind can do)",
    )
    p.add_argument("--k", type=int, default=10, help="cut-off of nDCG, recall and MRR (default 10; recall@100 too)")
    p.add_argument("--reranker", metavar="BUNDLE", help="rerank each dense top-100 with this bundle: mode dense+rerank")
    p.add_argument(
        "--hybrid-weights",
        metavar="D,S,C",
        help="dense, sparse, colbert weights of hybrid (default: those of Embedder.compute_score, 1,1,1)",
    )
    p.add_argument("--out", metavar="REPORT.json", help="write every figure as JSON")
    p.add_argument("--plot", metavar="REPORT.png", help="bar chart of nDCG@k per bundle and mode (needs matplotlib)")
    p.add_argument(
        "--fail-below",
        type=float,
        metavar="DELTA",
        help="exit 1 when a bundle's nDCG@k is more than DELTA below the first bundle's, in nDCG units "
        "(0.01 = one point), in any mode both have",
    )
    model_options(p)


def _modes(raw: str | None) -> list[str] | None:
    if raw is None:
        return None
    modes = [m.strip() for m in raw.split(",") if m.strip()]
    if not modes:
        raise InputError(f"--modes lists no mode; choose from {_MODES}")
    return modes


def _weights(raw: str | None) -> tuple[float, ...] | None:
    if raw is None:
        return None
    try:
        return tuple(float(w) for w in raw.split(","))
    except ValueError:
        raise InputError(f"--hybrid-weights must be three numbers D,S,C, got {raw!r}") from None


def run(args: argparse.Namespace) -> int:
    """Run ``edge-bge eval``; returns the exit code."""
    from .evaluation import evaluate, markdown, plot, write_json

    try:
        if args.fail_below is not None and args.fail_below < 0:
            raise InputError(f"--fail-below must be >= 0 (nDCG units, 0.01 = one point), got {args.fail_below}")
        if args.plot:
            try:
                import matplotlib  # noqa: F401
            except ImportError:
                raise InputError("--plot needs matplotlib: pip install matplotlib") from None
        report, _ = evaluate(
            args.bundles,
            args.data,
            modes=_modes(args.modes),
            k=args.k,
            reranker=args.reranker,
            hybrid_weights=_weights(args.hybrid_weights),
            split=args.split,
            fail_below=args.fail_below,
            progress=sys.stderr.isatty(),
            providers=args.providers,
            threads=args.threads,
            max_batch_tokens=args.max_batch_tokens,
            verify=not args.no_verify,
        )
    except InputError as e:  # data, bundles, modes, options; a text the tokenizer refuses
        print(f"edge-bge: error: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(markdown(report))
    if args.out:
        write_json(report, args.out)
    if args.plot:
        plot(report, args.plot)
    for line in report["failed"]:
        print(f"edge-bge: nDCG dropped more than {args.fail_below}: {line}", file=sys.stderr)
    return 1 if report["failed"] else 0
