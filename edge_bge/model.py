"""``Model``: the base of Embedder and Reranker (bundle, tokenizer, session, batched runs); ``load``: the
right class for a bundle's kind; ``progress_bar``: the one progress bar of long runs."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import numpy as np

from . import batching
from . import providers as _providers
from .bundle import Bundle
from .errors import InferenceError, InputError
from .kinds import Kind, spec
from .manifest import Manifest
from .tokenize import GROUP, Encoded, TextTokenizer

__all__ = ["Model", "load", "progress_bar"]

log = logging.getLogger("edge_bge")


def load(path: str | os.PathLike[str], **options: Any) -> Any:
    """An ``Embedder`` (embedding and m3 bundles) or a ``Reranker`` (reranker bundles) for the bundle at
    ``path``; ``options`` are theirs (providers, threads, max_batch_tokens, verify, ...)."""
    return Model.classes[spec(Manifest.load(path).kind).model](path, **options)


class Model:
    """What Embedder and Reranker share: bundle, tokenizer, session, batched runs.

    Subclasses name the kinds they take (``_kinds``); ``load`` picks the class by the bundle's kind."""

    _kinds: tuple[Kind, ...] = ()
    # the subclasses by name, as edge_bge.kinds names them (KindSpec.model): how load() finds its class
    classes: ClassVar[dict[str, type[Model]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Model.classes[cls.__name__] = cls

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        providers: str | Sequence[Any] = "auto",
        threads: int | None = None,
        max_batch_tokens: int | None = None,
        strict: bool = True,
        truncate: bool = True,
        verify: bool = True,
        spin: bool = True,
    ) -> None:
        budget_given = max_batch_tokens is not None
        if max_batch_tokens is None:
            gpu = _providers.wants_gpu(providers)
            max_batch_tokens = batching.default_budget(gpu=gpu)
        if max_batch_tokens < 1:
            raise InputError(f"max_batch_tokens must be positive, got {max_batch_tokens}")
        self.bundle = Bundle(path, verify=verify)
        self.manifest: Manifest = self.bundle.manifest
        if self.manifest.kind not in self._kinds:
            raise InputError(
                f"{path} is a {self.manifest.kind.value!r} bundle; {type(self).__name__} takes "
                f"{' or '.join(repr(k.value) for k in self._kinds)}"
            )
        self.max_batch_tokens = max_batch_tokens
        self.truncate = truncate
        self.tokenizer = TextTokenizer(self.bundle.tokenizer_path, max_length=self.manifest.max_length)
        opened = _providers.open_session(
            self.bundle.model_path,
            manifest=self.manifest,
            providers=providers,
            threads=threads,
            strict=strict,
            max_batch_tokens=max_batch_tokens,
            spin=spin,  # ONNX Runtime's threads spin-wait for work (faster on idle cores); False: they sleep
        )
        self.session = opened.session
        self.manifest.check_session(self.session)  # names, types and dims against the loaded graph
        # the providers the session got; .requested: the chain asked for; .options: what each was given
        self.providers: _providers.SessionProviders = opened.providers
        self._device_run = opened.run  # IO binding on CUDA / TensorRT; None on the CPU
        if not budget_given and not self.on_gpu:
            # onnxruntime-gpu lists its GPU providers on hosts without a GPU too; when the session fell
            # back to the CPU, the CPU's budget (a 16x larger GPU budget would cost memory and latency)
            self.max_batch_tokens = batching.default_budget(gpu=False)

    @property
    def on_gpu(self) -> bool:
        """Whether the session's first provider runs on an accelerator (TensorRT, CUDA)."""
        return bool(self.providers) and _providers.lookup(self.providers[0]).on_device

    @property
    def max_length(self) -> int:
        return self.manifest.max_length

    def _run(self, batch: batching.Batch, outputs: Sequence[str]) -> list[np.ndarray]:
        try:
            if self._device_run is not None:
                return self._device_run(outputs, batch.feeds)
            return self.session.run(list(outputs), batch.feeds)
        except Exception as e:  # onnxruntime raises its own, unrelated exception classes
            raise InferenceError(f"ONNX Runtime failed on a batch of {len(batch.index)} texts: {e}") from e

    @property
    def chunk_size(self) -> int:
        """Texts tokenized ahead of the model: memory holds one chunk's token ids, never the whole input."""
        return max(GROUP, min(4096, 2**20 // self.max_length))

    def _chunks(self, items: Sequence[Any], tokenize: Any) -> Iterator[tuple[int, list[Encoded]]]:
        """(offset, encodings) of consecutive chunks of ``items``."""
        step = self.chunk_size
        for start in range(0, len(items), step):
            yield start, tokenize(items[start : start + step], offset=start)

    def _batches(self, encodings: Sequence[Encoded]) -> Iterator[batching.Batch]:
        return batching.batches(
            encodings,
            inputs=self.manifest.inputs,
            pad_id=self.tokenizer.pad_id,
            max_batch_tokens=self.max_batch_tokens,
            max_rows=self.providers.max_rows,  # TensorRT's shape profile holds no more rows
        )

    def __repr__(self) -> str:
        m = self.manifest
        return f"{type(self).__name__}({m.name!r}, {m.precision.value}, {m.target.value}, providers={self.providers})"


def progress_bar(total: int, enabled: bool, *, unit: str = "text", **options: Any) -> Any:
    """A tqdm bar, or None when not enabled or tqdm is missing (then said once in the log)."""
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        log.warning("a progress bar needs tqdm: pip install tqdm")
        return None
    return tqdm(total=total, unit=unit, desc="embedding", **options)
