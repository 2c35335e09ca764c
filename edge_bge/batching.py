"""Length-sorted, token-budget batching: the batches, their padded feeds, and order restored."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from .tokenize import Encoded

__all__ = ["Batch", "plan", "pad"]


class Batch:
    """Row ``r`` of the feeds holds input ``index[r]``."""

    __slots__ = ("index", "feeds", "tokens")

    def __init__(self, index: np.ndarray, feeds: dict[str, np.ndarray], tokens: int) -> None:
        self.index, self.feeds, self.tokens = index, feeds, tokens


def plan(lengths: Sequence[int], *, max_batch_tokens: int, max_batch_size: int = 256) -> list[np.ndarray]:
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
    encodings: Sequence[Encoded], *, inputs: Sequence[str], pad_id: int, max_batch_tokens: int
) -> Iterator[Batch]:
    for index in plan([len(e.ids) for e in encodings], max_batch_tokens=max_batch_tokens):
        yield pad(encodings, index, inputs=inputs, pad_id=pad_id)
