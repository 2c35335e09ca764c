"""Length-sorted, token-budget batching: the batch policy, the batches, their padded feeds.

The batch policy lives here and only here: the default token budgets and the row limit. The
TensorRT shape profile (``providers.tensorrt``) is derived from the same numbers, so that every
batch cut here fits the engine.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from .tokenize import Encoded

__all__ = [
    "DEFAULT_MAX_BATCH_TOKENS",
    "GPU_MAX_BATCH_TOKENS",
    "MAX_BATCH_ROWS",
    "MIN_TOKENS",
    "Batch",
    "batches",
    "default_budget",
    "pad",
    "plan",
]

# Padded tokens per ONNX Runtime call. On CPU small calls are fastest (they stay in cache) and
# hold the least memory (figures: docs/benchmarks.md, "Token budget"); a GPU wants large calls.
# A text longer than the budget still runs, in a batch of its own.
DEFAULT_MAX_BATCH_TOKENS = 1024
GPU_MAX_BATCH_TOKENS = 16384


def default_budget(*, gpu: bool) -> int:
    """The token budget when none is given: small calls on the CPU, large ones on a GPU."""
    return GPU_MAX_BATCH_TOKENS if gpu else DEFAULT_MAX_BATCH_TOKENS


# Rows per batch at most, whatever the budget: TensorRT's profile allows no more rows than this.
MAX_BATCH_ROWS = 256
# The shortest tokenized text: [CLS] [SEP] (BERT) or <s> </s> (XLM-R); a budget holds at most
# max_batch_tokens // MIN_TOKENS rows.
MIN_TOKENS = 2


class Batch:
    """Row ``r`` of the feeds holds input ``index[r]``."""

    __slots__ = ("index", "feeds", "tokens")

    def __init__(self, index: np.ndarray, feeds: dict[str, np.ndarray], tokens: int) -> None:
        self.index, self.feeds, self.tokens = index, feeds, tokens


def plan(lengths: Sequence[int], *, max_batch_tokens: int, max_batch_size: int = MAX_BATCH_ROWS) -> list[np.ndarray]:
    """Cut inputs sorted by length into batches whose padded size (rows x longest) fits the budget.

    A single input longer than the budget gets a batch of its own.
    """
    order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    n = len(order)
    while start < n:
        end = start + 1
        while end < n and end - start < max_batch_size and (end - start + 1) * lengths[order[end]] <= max_batch_tokens:
            end += 1
        batches.append(order[start:end])
        start = end
    return batches


def pad(encodings: Sequence[Encoded], index: np.ndarray, *, inputs: Sequence[str], pad_id: int) -> Batch:
    """int64 [rows, longest] feeds for the named graph inputs."""
    rows = [encodings[i] for i in index]
    longest = max(len(e.ids) for e in rows)
    ids = np.full((len(rows), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), longest), dtype=np.int64)
    types = np.zeros((len(rows), longest), dtype=np.int64) if "token_type_ids" in inputs else None
    tokens = 0
    for r, e in enumerate(rows):
        k = len(e.ids)
        tokens += k
        ids[r, :k] = e.ids
        mask[r, :k] = 1
        if types is not None and e.type_ids is not None:
            types[r, :k] = e.type_ids
    feeds = {"input_ids": ids, "attention_mask": mask}
    if types is not None:
        feeds["token_type_ids"] = types
    return Batch(index, feeds, tokens)


def batches(
    encodings: Sequence[Encoded],
    *,
    inputs: Sequence[str],
    pad_id: int,
    max_batch_tokens: int,
    max_rows: int = MAX_BATCH_ROWS,
) -> Iterator[Batch]:
    """The padded batches of ``encodings`` under the token budget, shortest texts first; at most
    ``max_rows`` rows each (a session's limit: TensorRT's shape profile)."""
    lengths = [len(e.ids) for e in encodings]
    for index in plan(lengths, max_batch_tokens=max_batch_tokens, max_batch_size=min(max_rows, MAX_BATCH_ROWS)):
        yield pad(encodings, index, inputs=inputs, pad_id=pad_id)
