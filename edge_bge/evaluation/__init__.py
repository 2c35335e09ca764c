"""Retrieval quality of bundles on the user's own data (``edge-bge eval``).

``evaluate(bundles, data)`` ranks a BEIR folder's or a pairs file's corpus for each query with each
bundle, in each mode (dense; bge-m3: sparse, colbert, hybrid; optionally dense + a reranker), and
measures nDCG@k, recall@k, recall@100 and MRR@k as trec_eval does.
"""

from __future__ import annotations

from .compare import check_bundles, evaluate
from .data import Dataset, EvalInputError, load_data
from .metrics import mean_metrics, metric_names, mrr_at_k, ndcg_at_k, recall_at_k
from .report import build_report, markdown, plot, regressions, write_json
from .runner import DEPTH, LARGE_CORPUS, MODES, BundleResult, Run, default_hybrid_weights

__all__ = [
    "DEPTH",
    "LARGE_CORPUS",
    "MODES",
    "BundleResult",
    "Dataset",
    "EvalInputError",
    "Run",
    "build_report",
    "check_bundles",
    "default_hybrid_weights",
    "evaluate",
    "load_data",
    "markdown",
    "mean_metrics",
    "metric_names",
    "mrr_at_k",
    "ndcg_at_k",
    "plot",
    "recall_at_k",
    "regressions",
    "write_json",
]
