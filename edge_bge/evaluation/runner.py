"""Run bundles over a dataset: rankings per mode, then metrics.

Modes: ``dense`` (exact inner product over the whole corpus, queries with the manifest's query
instruction), and for bge-m3 bundles ``sparse`` (lexical weights), ``colbert`` and ``hybrid``
(``Embedder.compute_score``'s weighted mean of the three, "colbert+sparse+dense"). ``dense+rerank``
reorders the dense top-100 with a reranker bundle.

The corpus is embedded once per bundle, a chunk at a time. Up to ``LARGE_CORPUS`` documents,
sparse, colbert and hybrid score every document (query x document score matrices are kept);
past it they score only each query's dense top-100, and the report says so.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..embedder import Embedder
from ..kinds import spec
from ..manifest import Manifest
from ..model import progress_bar
from ..reranker import Reranker
from .data import Dataset
from .metrics import mean_metrics
from .search import ColbertDocs, LexicalQueries, colbert_scores, dense_topk, top_of

__all__ = ["DEPTH", "LARGE_CORPUS", "MODES", "BundleResult", "Run", "default_hybrid_weights", "run_bundle"]

MODES = ("dense", "sparse", "colbert", "hybrid")
M3_MODES = ("sparse", "colbert", "hybrid")
DEPTH = 100  # documents ranked per query: recall@100, rerank and large-corpus candidates
LARGE_CORPUS = 10_000  # above this many documents, sparse/colbert/hybrid score the dense top-100 only
CHUNK = 1024  # documents embedded per call


def default_hybrid_weights() -> tuple[float, float, float]:
    """(dense, sparse, colbert): the default of ``Embedder.compute_score``."""
    default = inspect.signature(Embedder.compute_score).parameters["weights"].default
    return tuple(float(w) for w in default)  # type: ignore[return-value]


@dataclass
class Run:
    """One mode's ranking: corpus indices and scores [queries, <=DEPTH], best first."""

    index: np.ndarray
    scores: np.ndarray
    scored: str  # "all documents" or "dense top-100"


@dataclass
class BundleResult:
    path: str
    manifest: Manifest
    runs: dict[str, Run] = field(default_factory=dict)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    corpus_seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "path": self.path,
            "name": m.name,
            "kind": m.kind.value,
            "precision": m.precision.value,
            "target": m.target.value,
            "dim": m.dim,
            "corpus_encode_seconds": round(self.corpus_seconds, 3),
            "modes": {mode: {**self.metrics[mode], "scored": self.runs[mode].scored} for mode in self.runs},
        }


def _weighted(weights: Sequence[float], dense: np.ndarray, sparse: np.ndarray, colbert: np.ndarray) -> np.ndarray:
    wd, ws, wc = weights
    return ((wc * colbert + ws * sparse + wd * dense) / (wc + ws + wd)).astype(np.float32)


def _ranked(scores: np.ndarray, candidates: np.ndarray | None, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Best-first (corpus indices, scores) from full [q, n] scores, or from [q, depth] candidate scores."""
    order = top_of(scores, depth)
    picked = np.take_along_axis(scores, order, 1)
    return (order if candidates is None else np.take_along_axis(candidates, order, 1)), picked


class _Scorer:
    """Encodes a bundle's queries and corpus and ranks the corpus in each mode."""

    def __init__(self, model: Embedder, data: Dataset, modes: Sequence[str], *, progress: bool, large: int) -> None:
        self.model, self.data, self.progress = model, data, progress
        self.m3 = spec(model.manifest.kind).multi_output
        self.lexical = self.m3 and any(m in M3_MODES for m in modes)
        self.small = len(data.docs) <= large
        prefix = model.manifest.query_instruction
        if self.m3:
            q = model.encode([prefix + t for t in data.queries], sparse=self.lexical, colbert=self.lexical)
            assert q.dense is not None
            self.q_dense, self.q_sparse, self.q_colbert = q.dense, q.sparse, q.colbert
        else:
            self.q_dense, self.q_sparse, self.q_colbert = model.embed_queries(data.queries), None, None

    def corpus(self) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """The corpus's dense matrix [n, dim]; with lexical modes on a small corpus, the full
        sparse and colbert score matrices [queries, n] too."""
        docs, model = self.data.docs, self.model
        dense = np.empty((len(docs), model.dim), np.float32)
        full = self.lexical and self.small
        sparse = np.empty((len(self.q_dense), len(docs)), np.float32) if full else None
        colbert = np.empty_like(sparse) if full else None
        lexical = LexicalQueries(self.q_sparse) if full and self.q_sparse is not None else None
        bar = progress_bar(len(docs), self.progress, unit="doc", postfix={"bundle": model.manifest.name})
        try:
            for a in range(0, len(docs), CHUNK):
                chunk = docs[a : a + CHUNK]
                if self.m3:
                    out = model.encode(chunk, sparse=full, colbert=full)
                    assert out.dense is not None
                    dense[a : a + len(chunk)] = out.dense
                    if lexical is not None and sparse is not None and colbert is not None:
                        assert out.sparse is not None and out.colbert is not None and self.q_colbert is not None
                        sparse[:, a : a + len(chunk)] = lexical.scores(out.sparse)
                        colbert[:, a : a + len(chunk)] = colbert_scores(self.q_colbert, out.colbert, model.dim)
                else:
                    dense[a : a + len(chunk)] = model.embed(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
        return dense, sparse, colbert

    def rescore(self, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sparse and colbert scores [queries, depth] of each query's candidate documents only."""
        assert self.q_sparse is not None and self.q_colbert is not None
        union = np.unique(candidates)
        where = np.searchsorted(union, candidates)  # each candidate's position in the union
        sparse = np.zeros(candidates.shape, np.float32)
        colbert = np.zeros(candidates.shape, np.float32)
        lexical = LexicalQueries(self.q_sparse)
        for a in range(0, len(union), CHUNK):
            texts = [self.data.docs[i] for i in union[a : a + CHUNK].tolist()]
            out = self.model.encode(texts, dense=False, sparse=True, colbert=True)
            assert out.sparse is not None and out.colbert is not None
            s = lexical.scores(out.sparse)
            rows, cols = np.nonzero((where >= a) & (where < a + len(texts)))
            sparse[rows, cols] = s[rows, where[rows, cols] - a]
            for q in np.unique(rows).tolist():
                mine = cols[rows == q]
                local = (where[q, mine] - a).tolist()
                colbert[q, mine] = ColbertDocs([out.colbert[j] for j in local], self.model.dim).scores(
                    self.q_colbert[q]
                )
        return sparse, colbert


def run_bundle(
    path: str,
    data: Dataset,
    modes: Sequence[str],
    *,
    k: int,
    reranker: Reranker | None = None,
    hybrid_weights: Sequence[float] | None = None,
    progress: bool = False,
    large_corpus: int = LARGE_CORPUS,
    **options: Any,
) -> BundleResult:
    """Embed the corpus with the bundle at ``path`` once, rank it in each mode, and measure."""
    weights = tuple(hybrid_weights or default_hybrid_weights())
    model = Embedder(path, **options)
    result = BundleResult(path, model.manifest)
    depth = max(DEPTH, k)
    scorer = _Scorer(model, data, modes, progress=progress, large=large_corpus)
    start = time.perf_counter()
    dense_corpus, sparse_full, colbert_full = scorer.corpus()
    result.corpus_seconds = time.perf_counter() - start
    top_scores, top_index = dense_topk(scorer.q_dense, dense_corpus, depth)
    runs: dict[str, Run] = {"dense": Run(top_index, top_scores, "all documents")}
    if scorer.lexical:
        if sparse_full is not None and colbert_full is not None:
            dense_full = scorer.q_dense @ dense_corpus.T
            scores = {"sparse": sparse_full, "colbert": colbert_full}
            scores["hybrid"] = _weighted(weights, dense_full, sparse_full, colbert_full)
            candidates, scored = None, "all documents"
        else:
            sparse_c, colbert_c = scorer.rescore(top_index)
            scores = {
                "sparse": sparse_c,
                "colbert": colbert_c,
                "hybrid": _weighted(weights, top_scores, sparse_c, colbert_c),
            }
            candidates, scored = top_index, f"dense top-{depth}"
        for mode in M3_MODES:
            if mode in modes:
                runs[mode] = Run(*_ranked(scores[mode], candidates, depth), scored)
    result.runs = {mode: runs[mode] for mode in modes}
    if reranker is not None:
        result.runs["dense+rerank"] = rerank(reranker, data, top_index, progress=progress)
    for mode, run in result.runs.items():
        rankings = {
            qid: [data.doc_ids[i] for i in row] for qid, row in zip(data.query_ids, run.index.tolist(), strict=True)
        }
        result.metrics[mode] = mean_metrics(rankings, data.qrels, k)
    return result


def rerank(model: Reranker, data: Dataset, candidates: np.ndarray, *, progress: bool = False, block: int = 32) -> Run:
    """Reorder each query's candidate documents by the reranker's logits."""
    scores = np.empty(candidates.shape, np.float32)
    bar = progress_bar(len(candidates), progress, unit="query", postfix={"rerank": model.manifest.name})
    try:
        for a in range(0, len(candidates), block):
            rows = candidates[a : a + block]
            pairs = [(data.queries[a + r], data.docs[i]) for r, row in enumerate(rows.tolist()) for i in row]
            scores[a : a + len(rows)] = model.score(pairs).reshape(len(rows), -1)
            if bar is not None:
                bar.update(len(rows))
    finally:
        if bar is not None:
            bar.close()
    index, picked = _ranked(scores, candidates, candidates.shape[1])
    return Run(index, picked, f"dense top-{candidates.shape[1]}")
