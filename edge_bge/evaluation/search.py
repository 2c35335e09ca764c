"""Exact search over an embedded corpus with bounded memory, and bge-m3's lexical and ColBERT scores.

Dense top-k goes through the corpus in blocks of ``corpus_block`` rows and the queries in blocks
of ``query_block`` rows, merging each block's scores into a running top-k. Beside the corpus
matrix itself (n x dim float32: 4 GB for 1M x 1024) and the query matrix, it holds one block of
scores and its working copies: about 3 x query_block x (corpus_block + k) x 4 bytes, 100 MB at the
defaults (1024 x 8192), whatever the corpus size.

Ties are broken by corpus order (the earlier document first), in the running top-k as in the end.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["TopK", "colbert_scores", "dense_topk", "ColbertDocs", "LexicalQueries", "top_of"]

QUERY_BLOCK = 1024
CORPUS_BLOCK = 8192


class TopK:
    """A running top-k of scores per query; indices stay in increasing order until ``result``."""

    def __init__(self, n_queries: int, k: int) -> None:
        self.k = k
        self.scores = np.empty((n_queries, 0), np.float32)
        self.index = np.empty((n_queries, 0), np.int64)

    def add(self, scores: np.ndarray, first: int) -> None:
        """Merge scores [queries, m] of documents first .. first + m - 1 (after every earlier one)."""
        scores = np.nan_to_num(scores.astype(np.float32, copy=False), nan=-np.inf)
        index = np.broadcast_to(np.arange(first, first + scores.shape[1], dtype=np.int64), scores.shape)
        s = np.concatenate([self.scores, scores], axis=1)
        i = np.concatenate([self.index, index], axis=1)
        m = s.shape[1]
        if m <= self.k:
            self.scores, self.index = s, i
            return
        kth = np.partition(s, m - self.k, axis=1)[:, m - self.k : m - self.k + 1]  # the k-th best per row
        above = s > kth
        ties = s == kth
        room = self.k - above.sum(axis=1, keepdims=True)
        keep = above | (ties & (np.cumsum(ties, axis=1) <= room))  # equal scores: the earliest documents
        self.scores = s[keep].reshape(len(s), self.k)
        self.index = i[keep].reshape(len(s), self.k)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(scores, corpus indices), each [queries, <=k], best first."""
        order = np.lexsort((self.index, -self.scores), axis=1)
        return np.take_along_axis(self.scores, order, 1), np.take_along_axis(self.index, order, 1)


def dense_topk(
    queries: np.ndarray,
    corpus: np.ndarray,
    k: int,
    *,
    query_block: int = QUERY_BLOCK,
    corpus_block: int = CORPUS_BLOCK,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k of each query row over the corpus rows: (scores, indices) [q, min(k, n)]."""
    k = min(k, len(corpus))
    scores = np.empty((len(queries), k), np.float32)
    index = np.empty((len(queries), k), np.int64)
    for q0 in range(0, len(queries), query_block):
        block = queries[q0 : q0 + query_block]
        top = TopK(len(block), k)
        for c0 in range(0, len(corpus), corpus_block):
            top.add(block @ corpus[c0 : c0 + corpus_block].T, c0)
        scores[q0 : q0 + len(block)], index[q0 : q0 + len(block)] = top.result()
    return scores, index


def top_of(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best columns of each row of a full score matrix, best first, ties by column."""
    top = TopK(len(scores), min(k, scores.shape[1]))
    top.add(scores, 0)
    return top.result()[1]


class LexicalQueries:
    """Queries' lexical weights as a matrix over the tokens they hold, for scoring many documents.

    A document token that no query has cannot score and is left out, so a block of documents is
    a docs x (distinct query tokens) matrix."""

    def __init__(self, queries: Sequence[Mapping[int, float]]) -> None:
        self.vocab: dict[int, int] = {}
        for weights in queries:
            for token in weights:
                self.vocab.setdefault(token, len(self.vocab))
        self.matrix = np.zeros((len(queries), len(self.vocab)), np.float32)
        for row, weights in enumerate(queries):
            for token, w in weights.items():
                self.matrix[row, self.vocab[token]] = w

    def scores(self, docs: Sequence[Mapping[int, float]]) -> np.ndarray:
        """float32 [queries, docs]: for each pair, the sum of q_w * d_w over the tokens both have."""
        d = np.zeros((len(docs), len(self.vocab)), np.float32)
        for row, weights in enumerate(docs):
            for token, w in weights.items():
                col = self.vocab.get(token)
                if col is not None:
                    d[row, col] = w
        return self.matrix @ d.T


class ColbertDocs:
    """The ColBERT vectors of some documents, concatenated once for scoring against many queries."""

    def __init__(self, docs: Sequence[np.ndarray], dim: int) -> None:
        lengths = np.array([len(d) for d in docs], np.int64)
        self.n = len(docs)
        self.empty = lengths == 0
        kept = [d for d in docs if len(d)]
        self.vectors = np.concatenate(kept).astype(np.float32, copy=False) if kept else np.empty((0, dim), np.float32)
        self.starts = np.concatenate([[0], np.cumsum(lengths[~self.empty])[:-1]]).astype(np.int64)

    def scores(self, query: np.ndarray) -> np.ndarray:
        """float32 [docs]: mean over the query's vectors of the best dot product with each document's vectors."""
        out = np.zeros(self.n, np.float32)
        if len(query) == 0 or len(self.vectors) == 0:
            return out
        sims = query @ self.vectors.T  # [query tokens, all document tokens]
        best = np.maximum.reduceat(sims, self.starts, axis=1)  # [query tokens, non-empty documents]
        out[~self.empty] = best.sum(axis=0) / len(query)
        return out


def colbert_scores(queries: Sequence[np.ndarray], docs: Sequence[np.ndarray], dim: int) -> np.ndarray:
    """FlagEmbedding's colbert_score for every (query, document) pair: float32 [queries, docs]."""
    concatenated = ColbertDocs(docs, dim)
    out = np.zeros((len(queries), len(docs)), np.float32)
    for row, query in enumerate(queries):
        out[row] = concatenated.scores(query)
    return out
