"""Retrieval metrics as trec_eval computes them: nDCG@k, recall@k, MRR@k.

- nDCG@k: gain = the qrels grade (grades <= 0 give nothing), discount log2(rank + 1); the ideal
  ranking is every judged document of the query sorted by grade, cut at k (``ndcg_cut.k``).
- recall@k: relevant documents (grade >= 1) in the top k over all relevant documents (``recall.k``).
- MRR@k: 1 / rank of the first relevant document within the top k, else 0 (``recip_rank`` on a run
  cut at k).

A ranking is a sequence of document ids, best first; ``qrels`` maps a query id to {doc id: grade}.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

__all__ = ["mean_metrics", "metric_names", "mrr_at_k", "ndcg_at_k", "query_metrics", "recall_at_k"]


def metric_names(k: int) -> list[str]:
    """The reported metric names for a cut-off k: nDCG@k, recall@k, recall@100, MRR@k."""
    names = [f"ndcg@{k}", f"recall@{k}", "recall@100", f"mrr@{k}"]
    return list(dict.fromkeys(names))  # k = 100: recall@100 once


def _dcg(gains: Sequence[float]) -> float:
    return sum(g / math.log2(rank + 2) for rank, g in enumerate(gains) if g > 0)


def ndcg_at_k(ranking: Sequence[str], rels: Mapping[str, int], k: int) -> float:
    """nDCG of the first k documents of ``ranking`` (0.0 when the query has no positive grade)."""
    ideal = _dcg(sorted((max(g, 0) for g in rels.values()), reverse=True)[:k])
    if ideal == 0:
        return 0.0
    return _dcg([max(rels.get(d, 0), 0) for d in ranking[:k]]) / ideal


def recall_at_k(ranking: Sequence[str], rels: Mapping[str, int], k: int) -> float:
    """Share of the relevant documents (grade >= 1) found in the first k."""
    relevant = {d for d, g in rels.items() if g >= 1}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranking[:k])) / len(relevant)


def mrr_at_k(ranking: Sequence[str], rels: Mapping[str, int], k: int) -> float:
    """1 / rank of the first relevant document in the first k, 0.0 if none."""
    for rank, d in enumerate(ranking[:k], start=1):
        if rels.get(d, 0) >= 1:
            return 1.0 / rank
    return 0.0


def query_metrics(ranking: Sequence[str], rels: Mapping[str, int], k: int) -> dict[str, float]:
    """Every reported metric for one query."""
    out = {
        f"ndcg@{k}": ndcg_at_k(ranking, rels, k),
        f"recall@{k}": recall_at_k(ranking, rels, k),
        "recall@100": recall_at_k(ranking, rels, 100),
        f"mrr@{k}": mrr_at_k(ranking, rels, k),
    }
    return {name: out[name] for name in metric_names(k)}


def mean_metrics(
    rankings: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]], k: int
) -> dict[str, float]:
    """The mean of each metric over the queries of ``qrels`` (a query missing from ``rankings`` scores 0)."""
    if not qrels:
        raise ValueError("no queries to average over")
    totals = dict.fromkeys(metric_names(k), 0.0)
    for qid, rels in qrels.items():
        for name, value in query_metrics(rankings.get(qid, ()), rels, k).items():
            totals[name] += value
    return {name: total / len(qrels) for name, total in totals.items()}
