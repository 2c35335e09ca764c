"""bge-m3 lexical weights in the forms vector databases take, with numpy only.

``to_milvus_sparse(output)``: Milvus ``SPARSE_FLOAT_VECTOR`` rows as ``{token id: weight}`` dicts,
and the same rows as a CSR triple (indptr, indices, data) that ``scipy.sparse.csr_array((data,
indices, indptr), shape=...)`` takes, without needing scipy here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..m3 import M3Output

__all__ = ["SparseRows", "to_milvus_sparse"]


@dataclass(frozen=True)
class SparseRows:
    """Sparse rows, one per text: as dicts and as CSR arrays (indices ascending within a row)."""

    rows: list[dict[int, float]]  # token id -> weight, what Milvus inserts as a sparse vector
    indptr: np.ndarray  # int64 [n + 1]: row i is indices[indptr[i]:indptr[i + 1]]
    indices: np.ndarray  # int64 [nnz]: token ids
    data: np.ndarray  # float32 [nnz]: weights

    @property
    def csr(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(indptr, indices, data)."""
        return self.indptr, self.indices, self.data

    @property
    def width(self) -> int:
        """One past the largest token id (0 when every row is empty): the least CSR column count."""
        return int(self.indices.max()) + 1 if len(self.indices) else 0


def to_milvus_sparse(output: M3Output | Sequence[Mapping[int, float]]) -> SparseRows:
    """Milvus sparse rows from ``Embedder.encode(..., sparse=True)`` (or its ``.sparse`` list)."""
    sparse = output.sparse if isinstance(output, M3Output) else output
    if sparse is None:
        raise InputError("the output has no lexical weights: encode with sparse=True")
    if isinstance(sparse, Mapping):
        raise InputError("expected a list of per-text {token id: weight} dicts, got one dict")
    rows: list[dict[int, float]] = []
    indptr = np.zeros(len(sparse) + 1, dtype=np.int64)
    for i, weights in enumerate(sparse):
        if not isinstance(weights, Mapping):
            raise InputError(f"sparse[{i}] is {type(weights).__name__}, expected a {{token id: weight}} dict")
        row = {int(t): float(w) for t, w in sorted(weights.items())}
        if any(t < 0 for t in row):
            raise InputError(f"sparse[{i}] has a negative token id")
        rows.append(row)
        indptr[i + 1] = indptr[i] + len(row)
    indices = np.fromiter((t for row in rows for t in row), dtype=np.int64, count=int(indptr[-1]))
    data = np.fromiter((w for row in rows for w in row.values()), dtype=np.float32, count=int(indptr[-1]))
    return SparseRows(rows=rows, indptr=indptr, indices=indices, data=data)
