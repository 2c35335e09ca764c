"""``edge-bge eval``: retrieval quality of bundles on the user's data (edge_bge.evaluate holds its options
and runner; edge_bge.evaluation is imported only when it runs)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from .. import evaluate

    ev = sub.add_parser("eval", parents=[common], help="retrieval quality of bundles on your data: nDCG, recall, MRR")
    evaluate.add_arguments(ev)
    ev.set_defaults(func=evaluate.run)
