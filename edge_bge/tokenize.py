"""Tokenization with the Rust ``tokenizers`` library, exactly as the bundle's tokenizer.json says."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

from tokenizers import Encoding, Tokenizer

from .errors import InputError, ModelFilesError

__all__ = ["TextTokenizer", "check_pairs", "check_texts"]


def check_texts(texts: Sequence[Any], *, what: str = "texts") -> None:
    """Raise InputError naming the first item that is not a str or is not valid Unicode."""
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"{what}[{i}] is {type(text).__name__}, expected str")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise InputError(f"{what}[{i}] is not valid Unicode ({e.reason} at position {e.start})") from None


def check_pairs(pairs: Sequence[Any]) -> None:
    """Raise InputError naming the first item that is not a (str, str) pair."""
    for i, pair in enumerate(pairs):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise InputError(f"pairs[{i}] is {type(pair).__name__}, expected a (query, passage) pair")
        check_texts(pair, what=f"pairs[{i}]")


class TextTokenizer:
    """Truncating tokenizer without fixed padding; batches are padded by the caller."""

    def __init__(self, path: str | os.PathLike[str], *, max_length: int) -> None:
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a plain Exception for bad files
            raise ModelFilesError(f"cannot load tokenizer {path}: {e}") from None
        self.max_length = max_length
        self._tok.no_padding()
        if self._tok.truncation is None or self._tok.truncation["max_length"] != max_length:
            self._tok.enable_truncation(max_length)  # keeps the bundle's strategy when it matches
        self._path = str(path)
        self._full: Tokenizer | None = None
        self._lock = threading.Lock()
        pad = self._tok.padding
        self.pad_id = 0 if pad is None else int(pad["pad_id"])
        for token in ("[PAD]", "<pad>"):
            if pad is None and self._tok.token_to_id(token) is not None:
                self.pad_id = int(self._tok.token_to_id(token))
                break

    @property
    def tokenizer(self) -> Tokenizer:
        return self._tok

    def _untruncated(self) -> Tokenizer:
        with self._lock:
            if self._full is None:
                full = Tokenizer.from_file(self._path)
                full.no_padding()
                full.no_truncation()
                self._full = full
            return self._full

    def encode_pairs(self, pairs: Sequence[Any], *, query_max_length: int) -> list[Encoding]:
        """(query, passage) pairs as FlagReranker builds them: the query cut to query_max_length
        tokens, then the passage cut so the whole pair fits max_length."""
        check_pairs(pairs)
        full = self._untruncated()
        queries = full.encode_batch([p[0] for p in pairs], add_special_tokens=False)
        passages = full.encode_batch([p[1] for p in pairs], add_special_tokens=False)
        out = []
        for q, p in zip(queries, passages, strict=True):
            q.truncate(query_max_length)
            p.truncate(self.max_length)
            out.append(self._tok.post_process(q, p, add_special_tokens=True))
        return out

    def encode(self, texts: Sequence[Any], *, truncate: bool = True) -> list[Encoding]:
        """Encode str items; InputError naming the first bad item."""
        tok = self._tok if truncate else self._untruncated()
        try:
            encodings = tok.encode_batch(texts)
        except TypeError:
            check_texts(texts)
            raise InputError("the tokenizer refused the input") from None
        if not truncate:
            for i, enc in enumerate(encodings):
                if len(enc.ids) > self.max_length:
                    raise InputError(
                        f"texts[{i}] has {len(enc.ids)} tokens, more than the model's max_length "
                        f"{self.max_length}; shorten it or allow truncation"
                    )
        return encodings
