"""The export's gate from the user's data (``edge-bge export ... --eval-data DATA --max-ndcg-drop D``):
the new bundle's nDCG@10 against the PyTorch reference's on the same queries and documents.

Cosine to the reference says how far a bundle's vectors moved; this says whether search results did.
Both rank the corpus by exact inner product (dense vectors, the query instruction applied to queries)
and score the rankings with ``edge_bge.evaluation``'s trec_eval-equal nDCG. A bundle that loses more
than ``max_drop`` (0.01 = one nDCG point) is refused before it is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge_bge import Embedder
from edge_bge.errors import InputError
from edge_bge.evaluation import Dataset, load_data, mean_metrics
from edge_bge.evaluation.search import dense_topk

from .errors import ExportError, ParityError
from .heads import Head
from .recipes import Recipe

__all__ = ["K", "prepare", "retrieval_gate"]

K = 10


def _ndcg(data: Any, queries: np.ndarray, docs: np.ndarray) -> float:
    _, index = dense_topk(np.ascontiguousarray(queries, np.float32), np.ascontiguousarray(docs, np.float32), K)
    rankings = {qid: [data.doc_ids[j] for j in row] for qid, row in zip(data.query_ids, index, strict=True)}
    return mean_metrics(rankings, data.qrels, K)[f"ndcg@{K}"]


def prepare(data_path: str | Path, recipe: Recipe, head: Head, max_drop: float) -> Dataset:
    """The data, read and checked before the export starts: a bad path or a model this gate cannot
    measure fails in a second, not after the graph is built."""
    if head.metric != "cosine":
        raise ExportError(
            f"--eval-data gates retrieval with vectors; {recipe.name} is a {recipe.kind.value!r} model, which "
            "gives scores of pairs: check it with edge-bge eval --reranker instead"
        )
    if not 0 <= max_drop < 1:
        raise ExportError(f"--max-ndcg-drop must be in [0, 1) (nDCG units: 0.01 is one point), got {max_drop}")
    try:
        return load_data(data_path)
    except InputError as e:
        raise ExportError(f"--eval-data: {e}") from None


def retrieval_gate(
    bundle: Path, checkpoint: Path, recipe: Recipe, head: Head, data: Dataset, max_drop: float
) -> dict[str, Any]:
    """nDCG@10 of the bundle and of the reference on ``data``; ParityError when the bundle loses more
    than ``max_drop``. Returns what the manifest records under ``parity.retrieval``."""
    instruction = recipe.query_instruction
    queries = [instruction + q for q in data.queries]
    # one reference run (one load of the PyTorch model) over documents and queries together
    ref = np.asarray(head.reference(checkpoint, recipe, data.docs + queries)[0][head.compared])
    ref_docs, ref_queries = ref[: len(data.docs)], ref[len(data.docs) :]
    model = Embedder(bundle, providers="cpu")
    reference = _ndcg(data, ref_queries, ref_docs)
    got = _ndcg(data, model.embed(queries), model.embed(data.docs))
    record = {
        "data": Path(data.path).name,
        "queries": len(data.query_ids),
        "documents": len(data.doc_ids),
        f"ndcg@{K}": got,
        f"reference_ndcg@{K}": reference,
        "max_drop": max_drop,
    }
    if reference - got > max_drop:
        raise ParityError(
            f"{recipe.name} loses {100 * (reference - got):.2f} nDCG@{K} points against the PyTorch reference on "
            f"{data.path} ({got:.4f} against {reference:.4f}; allowed {100 * max_drop:.2f}); nothing was written"
        )
    return record
