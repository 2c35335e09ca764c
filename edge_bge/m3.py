"""bge-m3 outputs and scores, with FlagEmbedding's conventions.

- lexical weights: per text {token id: weight}, the max over repeated tokens, special tokens
  (cls, eos, pad, unk) and non-positive weights dropped;
- ColBERT vectors: per text float32 [tokens - 1, dim] (no CLS, no padding), L2-normalised;
- scores: dense = dot product, sparse = sum of weight products over shared tokens,
  colbert = mean over query vectors of the best dot product with any passage vector.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["M3Output", "colbert_score", "hybrid_scores", "lexical_score", "lexical_weights"]

MODES = ("dense", "sparse", "colbert", "sparse+dense", "colbert+sparse+dense")


@dataclass(frozen=True)
class M3Output:
    """What ``Embedder.encode`` returns; outputs not requested are None."""

    dense: np.ndarray | None  # float32 [n, dim]
    sparse: list[dict[int, float]] | None  # per text: token id -> weight
    colbert: list[np.ndarray] | None  # per text: float32 [tokens - 1, dim]


def lexical_weights(weights: np.ndarray, ids: np.ndarray, n_tokens: int, skip: frozenset[int]) -> dict[int, float]:
    """One text's {token id: max weight} from its per-token sparse weights."""
    out: dict[int, float] = {}
    for token, w in zip(ids[:n_tokens].tolist(), weights[:n_tokens].tolist(), strict=True):
        if w > 0 and token not in skip and w > out.get(token, 0.0):
            out[token] = w
    return out


def lexical_score(a: Mapping[int, float], b: Mapping[int, float]) -> float:
    """Sum of weight products over the tokens both texts have."""
    if len(b) < len(a):
        a, b = b, a
    return float(sum(w * b[t] for t, w in a.items() if t in b))


def colbert_score(q: np.ndarray, p: np.ndarray) -> float:
    """Mean over query vectors of the best dot product with any passage vector."""
    if len(q) == 0 or len(p) == 0:
        return 0.0
    return float((q @ p.T).max(axis=1).sum() / len(q))


def hybrid_scores(
    queries: M3Output, passages: M3Output, *, weights: Sequence[float] = (1.0, 1.0, 1.0)
) -> dict[str, np.ndarray]:
    """Row-wise pair scores (query i with passage i) for every mode of BGEM3FlagModel.compute_score.

    ``weights`` are (dense, sparse, colbert); combined modes are weighted means.
    """
    if len(weights) != 3:
        raise ValueError(f"weights must be (dense, sparse, colbert), got {weights!r}")
    assert queries.dense is not None and passages.dense is not None
    assert queries.sparse is not None and passages.sparse is not None
    assert queries.colbert is not None and passages.colbert is not None
    wd, ws, wc = (float(w) for w in weights)
    dense = (queries.dense * passages.dense).sum(axis=1)
    sparse = np.array([lexical_score(a, b) for a, b in zip(queries.sparse, passages.sparse, strict=True)])
    colbert = np.array([colbert_score(q, p) for q, p in zip(queries.colbert, passages.colbert, strict=True)])
    return {
        "dense": dense.astype(np.float32),
        "sparse": sparse.astype(np.float32),
        "colbert": colbert.astype(np.float32),
        "sparse+dense": ((ws * sparse + wd * dense) / (ws + wd)).astype(np.float32),
        "colbert+sparse+dense": ((wc * colbert + ws * sparse + wd * dense) / (wc + ws + wd)).astype(np.float32),
    }
