"""Each model kind described once: its graph outputs, what the runtime reads, what the server serves.

A bundle's ``kind`` (in its manifest) decides everything below. Adding an output head means a torch
wrapper in the export half (``edge_bge_export.heads``) plus an entry here (see CONTRIBUTING.md).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Kind", "KindSpec", "KINDS", "OUTPUTS", "spec"]


class Kind(str, enum.Enum):
    EMBEDDING = "embedding"
    M3 = "m3"
    RERANKER = "reranker"


@dataclass(frozen=True)
class KindSpec:
    kind: Kind
    outputs: tuple[str, ...]  # the graph's outputs, in order (the bundle contract)
    main: str  # the output that embed() (or score()) reads
    ops: tuple[str, ...]  # server operations: "embed" dense vectors, "sparse" lexical weights, "score" logits
    model: str  # the runtime class: "Embedder" or "Reranker"
    pooled: bool  # a pooled text vector (pooling, normalize, dim); a reranker gives one logit per pair
    # a (query, passage) pair's query gets this share of max_length (FlagReranker's rule); None: no pairs
    query_share: float | None = None
    score: str | None = None  # the transform from logit to relevance ("sigmoid"), for pair scorers
    label: str = ""  # the kind in a sentence: "an 'm3' (bge-m3)"

    def query_max_length(self, max_length: int) -> int | None:
        """The query's token budget in a pair (3/4 of max_length for rerankers), None for other kinds."""
        return None if self.query_share is None else int(max_length * self.query_share)

    @property
    def multi_output(self) -> bool:
        """bge-m3's heads: lexical (sparse) weights and ColBERT vectors beside the dense vector."""
        return "sparse" in self.outputs and "colbert" in self.outputs


KINDS: dict[Kind, KindSpec] = {
    s.kind: s
    for s in (
        KindSpec(
            Kind.EMBEDDING, ("embedding",), "embedding", ("embed",), "Embedder", pooled=True, label="an 'embedding'"
        ),
        KindSpec(
            Kind.M3,
            ("dense", "sparse", "colbert"),
            "dense",
            ("embed", "sparse"),
            "Embedder",
            pooled=True,
            label="an 'm3' (bge-m3)",
        ),
        KindSpec(
            Kind.RERANKER,
            ("logits",),
            "logits",
            ("score",),
            "Reranker",
            pooled=False,
            query_share=0.75,
            score="sigmoid",
            label="a 'reranker'",
        ),
    )
}

# The outputs each kind's graph must have, in order.
OUTPUTS: dict[Kind, tuple[str, ...]] = {k: s.outputs for k, s in KINDS.items()}


def spec(kind: Kind) -> KindSpec:
    return KINDS[kind]


def kinds_with(*, op: str | None = None, output: str | None = None) -> list[Kind]:
    """The kinds that serve ``op`` and/or have the graph output ``output``."""
    return [k for k, s in KINDS.items() if (op is None or op in s.ops) and (output is None or output in s.outputs)]
