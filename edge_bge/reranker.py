"""``Reranker``: a cross-encoder bundle scoring (query, passage) pairs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .kinds import KINDS, spec
from .model import Model
from .tokenize import Encoded, as_sequence, check_pairs, check_texts

__all__ = ["Reranker", "RerankResult", "sigmoid"]


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """float32 relevance in (0, 1) from raw logits (computed in float64, so large logits do not overflow)."""
    return (1.0 / (1.0 + np.exp(-np.asarray(logits).astype(np.float64)))).astype(np.float32)


@dataclass(frozen=True)
class RerankResult:
    index: int  # position in the docs given to rerank()
    score: float
    text: str


class Reranker(Model):
    """Relevance logits from a ``reranker`` bundle, tokenized as FlagReranker does."""

    _kinds = tuple(k for k, s in KINDS.items() if s.model == "Reranker")

    @property
    def query_max_length(self) -> int:
        share = spec(self.manifest.kind).query_max_length(self.manifest.max_length)
        return self.manifest.query_max_length or share or self.manifest.max_length

    def score(self, pairs: Sequence[tuple[str, str]], *, normalize: bool = False) -> np.ndarray:
        """float32 [n]: raw logits, or their sigmoid with normalize=True."""
        if isinstance(pairs, tuple) and len(pairs) == 2 and all(isinstance(x, str) for x in pairs):
            pairs = [pairs]
        pairs = as_sequence(pairs, what="pairs")
        check_pairs(pairs)
        out = np.empty(len(pairs), dtype=np.float32)
        for start, encoded in self._chunks(pairs, self.tokenize):
            out[start : start + len(encoded)] = self.score_encoded(encoded)
        if normalize:
            out = sigmoid(out)
        return out

    def tokenize(self, pairs: Sequence[tuple[str, str]], *, offset: int = 0) -> list[Encoded]:
        """Token ids per (query, passage) pair as FlagReranker builds them."""
        return self.tokenizer.encode_pairs(
            pairs, query_max_length=self.query_max_length, truncate=self.truncate, offset=offset
        )

    def score_encoded(self, encoded: Sequence[Encoded]) -> np.ndarray:
        """float32 [n] raw logits for pairs already tokenized by ``tokenize``."""
        out = np.empty(len(encoded), dtype=np.float32)
        for batch in self._batches(encoded):
            out[batch.index] = self._run(batch, ["logits"])[0].reshape(-1)
        return out

    def rerank(
        self, query: str, docs: Sequence[str], *, top_k: int | None = None, normalize: bool = False
    ) -> list[RerankResult]:
        """Docs ordered best first (ties keep input order); at most top_k of them."""
        if not isinstance(query, str):
            raise InputError(f"query is {type(query).__name__}, expected str")
        if isinstance(docs, str):
            raise InputError("docs must be a list of str, not one str")
        check_texts(docs, what="docs")
        if top_k is not None and top_k < 0:
            raise InputError(f"top_k must be >= 0, got {top_k}")
        scores = self.score([(query, d) for d in docs], normalize=normalize)
        order = np.argsort(-scores, kind="stable")[: top_k if top_k is not None else len(docs)]
        return [RerankResult(int(i), float(scores[i]), docs[i]) for i in order]
