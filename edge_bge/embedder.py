"""``Embedder``: a bundle on ONNX Runtime, batched by token budget, vectors in input order."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

import numpy as np

from .batching import DEFAULT_MAX_BATCH_TOKENS, GPU_MAX_BATCH_TOKENS
from .errors import InputError
from .kinds import KINDS, spec
from .m3 import M3Output, hybrid_scores, lexical_weights
from .model import Model, progress_bar
from .tokenize import Encoded, as_sequence, check_pairs, check_texts

__all__ = ["Embedder", "DEFAULT_MAX_BATCH_TOKENS", "GPU_MAX_BATCH_TOKENS"]

log = logging.getLogger("edge_bge")


class Embedder(Model):
    """Dense embeddings from an ``embedding`` or ``m3`` bundle.

    ``embed(texts)`` returns float32 [n, dim] in input order ([dim] for one str); vectors are
    L2-normalised where the manifest says ``normalize``.
    """

    _kinds = tuple(k for k, s in KINDS.items() if s.model == "Embedder")

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def _output(self) -> str:
        return spec(self.manifest.kind).main

    def tokenize(self, texts: Sequence[str], *, offset: int = 0) -> list[Encoded]:
        """Token ids per text as the model sees them (truncated unless the Embedder says otherwise).

        InputError names the first bad item, numbered from ``offset``."""
        return self.tokenizer.encode(texts, truncate=self.truncate, offset=offset)

    @overload
    def count_tokens(self, texts: str) -> int: ...
    @overload
    def count_tokens(self, texts: Sequence[str]) -> list[int]: ...

    def count_tokens(self, texts: str | Sequence[str]) -> int | list[int]:
        """Tokens per text after truncation, special tokens included (one count for one str)."""
        if isinstance(texts, str):
            return self.count_tokens([texts])[0]
        counts: list[int] = []
        for _, encoded in self._chunks(as_sequence(texts), self.tokenize):
            counts += [len(e) for e in encoded]
        return counts

    @overload
    def embed(self, texts: str, *, show_progress: bool = ..., dtype: str = ...) -> np.ndarray: ...
    @overload
    def embed(self, texts: Sequence[str], *, show_progress: bool = ..., dtype: str = ...) -> np.ndarray: ...

    def embed(self, texts: str | Sequence[str], *, show_progress: bool = False, dtype: str = "float32") -> np.ndarray:
        """float32 [n, dim] for a list of texts, [dim] for one str.

        ``dtype`` gives compact vectors (``edge_bge.quantize``): "float16", "int8" / "uint8" ([n, dim],
        by the per-dimension ranges the export recorded), "binary" (int8) / "ubinary" (uint8): packed
        bits, [n, ceil(dim / 8)]. Texts are tokenized a chunk at a time as the model goes: memory is
        bounded by the chunk and the output, not by the input."""
        from .quantize import quantizer

        convert = quantizer(dtype, self.manifest.quantization_ranges, bundle=f"bundle {self.manifest.name!r}")
        if isinstance(texts, str):
            return self.embed([texts], show_progress=show_progress, dtype=dtype)[0]
        texts = as_sequence(texts)
        check_texts(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        bar = progress_bar(len(texts), show_progress and len(texts) > 0)
        try:
            for start, encoded in self._chunks(texts, self.tokenize):
                for index, vectors in self._dense(encoded):
                    out[start + index] = vectors
                    if bar is not None:
                        bar.update(len(index))
        finally:
            if bar is not None:
                bar.close()
        return out if dtype == "float32" else convert(out)

    def embed_encoded(self, encoded: Sequence[Encoded]) -> np.ndarray:
        """float32 [n, dim] for inputs already tokenized by ``tokenize``."""
        out = np.empty((len(encoded), self.dim), dtype=np.float32)
        for index, vectors in self._dense(encoded):
            out[index] = vectors
        return out

    def _dense(self, encoded: Sequence[Encoded]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(input positions, their vectors) per batch."""
        for batch in self._batches(encoded):
            yield batch.index, self._run(batch, [self._output])[0]

    def embed_queries(self, texts: str | Sequence[str], **kw: Any) -> np.ndarray:
        """Embed search queries: the manifest's query instruction is prepended to each."""
        prefix = self.manifest.query_instruction
        if isinstance(texts, str):
            return self.embed(prefix + texts, **kw)
        texts = as_sequence(texts)
        check_texts(texts)
        return self.embed([prefix + t for t in texts], **kw)

    def embed_documents(self, texts: str | Sequence[str], **kw: Any) -> np.ndarray:
        """Embed passages as they are (no instruction)."""
        return self.embed(texts, **kw)

    def encode(
        self, texts: str | Sequence[str], *, dense: bool = True, sparse: bool = False, colbert: bool = False
    ) -> M3Output:
        """bge-m3 outputs for each text: dense [n, dim], lexical weights, ColBERT vectors."""
        if not spec(self.manifest.kind).multi_output:
            raise InputError(
                f"encode() needs a bge-m3 bundle; {self.manifest.name} is {self.manifest.kind.value!r}: use embed()"
            )
        if not (dense or sparse or colbert):
            raise InputError("encode() needs at least one of dense, sparse, colbert")
        if isinstance(texts, str):
            texts = [texts]
        texts = as_sequence(texts)
        check_texts(texts)
        dense_out = np.empty((len(texts), self.dim), dtype=np.float32) if dense else None
        sparse_out: list[dict[int, float]] = []
        colbert_out: list[np.ndarray] = []
        for start, encoded in self._chunks(texts, self.tokenize):
            part = self.encode_encoded(encoded, dense=dense, sparse=sparse, colbert=colbert)
            if dense_out is not None and part.dense is not None:
                dense_out[start : start + len(encoded)] = part.dense
            sparse_out += part.sparse or ()
            colbert_out += part.colbert or ()
        return M3Output(dense_out, sparse_out if sparse else None, colbert_out if colbert else None)

    def encode_encoded(
        self, encoded: Sequence[Encoded], *, dense: bool = True, sparse: bool = False, colbert: bool = False
    ) -> M3Output:
        """``encode`` for inputs already tokenized by ``tokenize``."""
        wanted = [name for name, on in (("dense", dense), ("sparse", sparse), ("colbert", colbert)) if on]
        n = len(encoded)
        dense_out = np.empty((n, self.dim), dtype=np.float32) if dense else None
        sparse_out: list[dict[int, float]] = [{} for _ in range(n)]
        colbert_out: list[np.ndarray] = [np.empty((0, self.dim), np.float32) for _ in range(n)]
        skip = frozenset(self.manifest.special_token_ids)
        for batch in self._batches(encoded):
            results = dict(zip(wanted, self._run(batch, wanted), strict=True))
            ids, mask = batch.feeds["input_ids"], batch.feeds["attention_mask"]
            for r, i in enumerate(batch.index.tolist()):
                k = int(mask[r].sum())
                if sparse:
                    sparse_out[i] = lexical_weights(results["sparse"][r], ids[r], k, skip)
                if colbert:
                    colbert_out[i] = np.ascontiguousarray(results["colbert"][r, : k - 1])
            if dense_out is not None:
                dense_out[batch.index] = results["dense"]
        return M3Output(dense_out, sparse_out if sparse else None, colbert_out if colbert else None)

    def compute_score(
        self, pairs: Sequence[tuple[str, str]], *, weights: Sequence[float] = (1.0, 1.0, 1.0)
    ) -> dict[str, np.ndarray]:
        """bge-m3 hybrid relevance of (query, passage) pairs: dense, sparse, colbert and the
        weighted sparse+dense and colbert+sparse+dense, each float32 [n]."""
        check_pairs(pairs)
        q = self.encode([p[0] for p in pairs], dense=True, sparse=True, colbert=True)
        p = self.encode([p[1] for p in pairs], dense=True, sparse=True, colbert=True)
        return hybrid_scores(q, p, weights=weights)

    def embed_stream(self, texts: Iterable[str], *, chunk_size: int = 1024) -> Iterator[np.ndarray]:
        """Yield float32 [<=chunk_size, dim] arrays in input order; memory bounded by the chunk.

        For an iterable that is not a sequence (a file, a generator); ``embed`` bounds its own memory."""
        if chunk_size < 1:
            raise InputError(f"chunk_size must be positive, got {chunk_size}")
        it = iter(texts)
        offset = 0
        while chunk := list(itertools.islice(it, chunk_size)):
            try:
                yield self.embed(chunk)
            except InputError as e:  # renumber the index to the stream's position
                raise InputError(f"{e} (chunk starting at stream item {offset})") from None
            offset += len(chunk)
