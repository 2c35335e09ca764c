"""Tokenization with the Rust ``tokenizers`` library, exactly as the bundle's tokenizer.json says.

Memory is bounded by the batch, not by the input:

* A text far longer than ``max_length`` tokens is cut to a prefix before it is tokenized, so a
  10 MB string costs what a few thousand characters cost. The cut never changes the kept tokens:
  it falls before a run of U+0020 spaces, which every pre-tokenizer we accept (BERT, Whitespace,
  Metaspace, ByteLevel, ...) splits on, behind normalizers that act on characters one by one
  (NFKC, BERT's, lowercase, accents, sentencepiece's charsmap, space-run replacement). The prefix
  must still overflow ``max_length``; if it does not, the cut moves further out. For a tokenizer we
  cannot vouch for, or a text with no space near the cut, the prefix is accepted only when a
  second prefix twice as long gives the same tokens.
* With WordPiece, a word longer than ``max_input_chars_per_word`` is one unknown token however
  long it is, so a run of letters and digits past that length is shortened (still past it)
  before the cut: a 10 MB base64 blob or ``"é" * 10**7`` costs no more than a short text.
* Encodings become ``Encoded`` (int32 ids, type ids only when they are not all zero) as soon as
  they are made; the ``tokenizers`` objects and their overflow are dropped group by group.
"""

from __future__ import annotations

import json
import os
import re
import threading
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from tokenizers import Encoding, Tokenizer

from .errors import InputError, ModelFilesError

__all__ = ["Encoded", "TextTokenizer", "TooLongError", "as_sequence", "check_pairs", "check_texts"]

# Texts tokenized per call into the Rust library: bounds the live ``Encoding`` objects.
GROUP = 256
# A first cut at this many characters per kept token; texts shorter than that are never cut.
CHARS_PER_TOKEN = 8

_SAFE_NORMALIZERS = {"BertNormalizer", "NFC", "NFD", "NFKC", "NFKD", "Lowercase", "StripAccents", "Strip"}
_SAFE_NORMALIZERS |= {"Prepend", "Precompiled"}  # Replace and Sequence are looked into
_SPACE_SPLITTERS = {"BertPreTokenizer", "Whitespace", "WhitespaceSplit", "Metaspace", "ByteLevel"}


def check_texts(texts: Sequence[Any], *, what: str = "texts", offset: int = 0) -> None:
    """Raise InputError naming the first item that is not a str or is not valid Unicode."""
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"{what}[{offset + i}] is {type(text).__name__}, expected str")
        if text.isascii():
            continue
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise InputError(f"{what}[{offset + i}] is not valid Unicode ({e.reason} at position {e.start})") from None


def check_pairs(pairs: Sequence[Any], *, offset: int = 0) -> None:
    """Raise InputError naming the first item that is not a (str, str) pair."""
    for i, pair in enumerate(pairs):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise InputError(f"pairs[{offset + i}] is {type(pair).__name__}, expected a (query, passage) pair")
        check_texts(pair, what=f"pairs[{offset + i}]")


def as_sequence(items: Any, *, what: str = "texts") -> Sequence[Any]:
    """``items`` when it is a sequence (list, tuple, ...) other than one str; InputError otherwise."""
    if not isinstance(items, Sequence) or isinstance(items, (str, bytes)):
        raise InputError(f"{what} must be a sequence, got {type(items).__name__}")
    return items


class TooLongError(InputError):
    """A text has more tokens than the model's max_length and truncation is off."""

    def __init__(self, what: str, index: int, count: str, limit: int, *, hint: str = "allow truncation") -> None:
        super().__init__(
            f"{what}[{index}] has {count} tokens, more than the model's max_length {limit}; shorten it or {hint}"
        )
        self.what, self.index, self.count, self.limit = what, index, count, limit

    def naming(self, what: str, *, hint: str) -> TooLongError:
        """The same error worded for another caller (e.g. a request field)."""
        return TooLongError(what, self.index, self.count, self.limit, hint=hint)


class Encoded:
    """One input's token ids, as the model will see them (truncated, special tokens added)."""

    __slots__ = ("ids", "type_ids")

    def __init__(self, ids: np.ndarray, type_ids: np.ndarray | None = None) -> None:
        self.ids, self.type_ids = ids, type_ids  # type_ids None: all zero

    @classmethod
    def of(cls, encoding: Encoding) -> Encoded:
        ids = np.asarray(encoding.ids, dtype=np.int32)
        types = np.asarray(encoding.type_ids, dtype=np.int32)
        return cls(ids, types if types.any() else None)

    def __len__(self) -> int:
        return len(self.ids)


def _space_cut_is_exact(config: dict[str, Any]) -> bool:
    """Whether cutting a text before a run of U+0020 leaves the tokens before the cut unchanged."""

    def normalizer_ok(n: dict[str, Any] | None) -> bool:
        if n is None:
            return True
        kind = n.get("type")
        if kind == "Sequence":
            return all(normalizer_ok(m) for m in n.get("normalizers", []))
        if kind == "Replace":  # only space-run replacements (" {2,}" -> " "): they cannot reach across the cut
            pattern = n.get("pattern") or {}
            text = next(iter(pattern.values()), "") if isinstance(pattern, dict) else ""
            return bool(text) and set(text) <= set(" {},0123456789+")
        return kind in _SAFE_NORMALIZERS

    def splits_on_space(p: dict[str, Any] | None) -> bool:
        if p is None:
            return False
        kind = p.get("type")
        if kind == "Sequence":
            return any(splits_on_space(q) for q in p.get("pretokenizers", []))
        if kind == "Metaspace":
            return p.get("split", True) is not False
        if kind == "ByteLevel":
            return p.get("use_regex", True) is not False
        if kind == "CharDelimiterSplit":
            return p.get("delimiter") == " "
        return kind in _SPACE_SPLITTERS

    truncation = config.get("truncation") or {}
    return (
        normalizer_ok(config.get("normalizer"))
        and splits_on_space(config.get("pre_tokenizer"))
        and str(truncation.get("direction", "Right")).lower() == "right"
    )


def _word_characters() -> str:
    """A regex class of letters and digits that no normalizer we accept turns into anything but
    letters, digits and marks (so never a split), and never into nothing: alphabetic scripts and
    Hangul, not CJK ideographs (BERT splits those one by one)."""
    word = {"Lu", "Ll", "Lt", "Lm", "Lo", "Nd"}
    keep = []
    for code in [*range(0x30, 0x2000), *range(0xAC00, 0xD7A4)]:
        c = chr(code)
        if unicodedata.category(c) not in word:
            continue
        forms = unicodedata.normalize("NFD", c) + unicodedata.normalize("NFD", c.lower())
        if unicodedata.category(forms[0]) in word and all(unicodedata.category(f)[0] in "LMN" for f in forms):
            keep.append(code)
    ranges, start = [], keep[0]
    for prev, code in zip(keep, [*keep[1:], -1], strict=True):
        if code != prev + 1:
            ranges.append(f"\\u{start:04x}-\\u{prev:04x}" if prev > start else f"\\u{start:04x}")
            start = code
    return "[" + "".join(ranges) + "]"


def _unknown_word_run(config: dict[str, Any]) -> int | None:
    """The length past which a run of word characters is one unknown WordPiece token however long it is.

    A run of more than ``2 * max_input_chars_per_word`` such characters sits inside one word (the
    accepted pre-tokenizers split only at spaces, punctuation and CJK), whose normalized length only
    grows with it; kept at that length the word is still too long, so it is still one unknown token.
    """
    model = config.get("model") or {}
    pre = config.get("pre_tokenizer") or {}
    if model.get("type") != "WordPiece" or pre.get("type") not in ("BertPreTokenizer", "Whitespace"):
        return None
    return 2 * int(model.get("max_input_chars_per_word", 100)) + 1


def _space_prefix(text: str, chars: int) -> str | None:
    """The text up to the run of spaces that starts nearest after ``chars``; None when there is none nearby."""
    i = text.find(" ", chars, 2 * chars + 1)
    if i < 0:
        return None
    while i > 0 and text[i - 1] == " ":
        i -= 1
    return text[:i] if i > 0 else None


class TextTokenizer:
    """Truncating tokenizer without fixed padding; batches are padded by the caller."""

    def __init__(self, path: str | os.PathLike[str], *, max_length: int) -> None:
        try:
            self._tok = Tokenizer.from_file(str(path))
            with open(path, encoding="utf-8") as f:
                config = json.load(f)
        except Exception as e:  # tokenizers raises a plain Exception for bad files
            raise ModelFilesError(f"cannot load tokenizer {path}: {e}") from None
        self.max_length = max_length
        self._tok.no_padding()
        if self._tok.truncation is None or self._tok.truncation["max_length"] != max_length:
            self._tok.enable_truncation(max_length)  # keeps the bundle's strategy when it matches
        self._exact_cut = _space_cut_is_exact(config)
        run = _unknown_word_run(config) if self._exact_cut else None
        self._unknown_run = None if run is None else re.compile(f"{_word_characters()}{{{run + 1},}}")
        self._unknown_run_keep = run or 0
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

    def _capped(
        self,
        tok: Tokenizer,
        texts: Sequence[str],
        *,
        limit: int,
        over: Callable[[Encoding], bool],
        shorten: bool = True,
        **kw: Any,
    ) -> list[Encoding]:
        """Encodings of ``texts`` whose first ``limit`` tokens are those of the whole text, from prefixes.

        ``over(encoding)`` says whether an encoding went past ``limit`` tokens; a prefix that does
        not is replaced by a longer one until one does or the whole text is taken.
        """
        chars = CHARS_PER_TOKEN * limit + 64
        work = list(texts)
        shortened = [not shorten] * len(work)
        out: list[Encoding | None] = [None] * len(work)
        todo = list(range(len(work)))
        while todo:
            inputs: list[str] = []
            plans: list[tuple[int, bool]] = []  # (text index, needs a check against a longer prefix)
            for i in todo:
                text = work[i]
                prefix = _space_prefix(text, chars) if self._exact_cut and len(text) > chars else None
                if prefix is None and len(text) > chars and not shortened[i]:  # no space near: look for long runs
                    text = work[i] = self._shorten_runs(text)
                    shortened[i] = True
                    prefix = _space_prefix(text, chars) if self._exact_cut and len(text) > chars else None
                if len(text) <= chars or prefix is not None:
                    inputs.append(prefix or text)
                    plans.append((i, False))
                else:
                    inputs += [text[:chars], text[: 2 * chars]]
                    plans.append((i, True))
            encodings = tok.encode_batch(inputs, **kw)
            todo, k = [], 0
            for i, checked in plans:
                enc, last = encodings[k], encodings[k + checked]
                whole = len(inputs[k + checked]) == len(work[i])
                k += 1 + checked
                if whole:
                    out[i] = last
                elif over(enc) and (not checked or enc.ids == last.ids):
                    out[i] = enc
                else:
                    todo.append(i)
            chars *= 4
        return out  # type: ignore[return-value]

    def _shorten_runs(self, text: str) -> str:
        if self._unknown_run is None:
            return text
        keep = self._unknown_run_keep
        return self._unknown_run.sub(lambda m: m.group()[:keep], text)

    def encode_pairs(
        self, pairs: Sequence[Any], *, query_max_length: int, truncate: bool = True, offset: int = 0
    ) -> list[Encoded]:
        """(query, passage) pairs as FlagReranker builds them: the query cut to query_max_length
        tokens, then the passage cut so the whole pair fits max_length.

        With ``truncate=False`` a pair longer than max_length raises ``TooLongError``."""
        check_pairs(as_sequence(pairs, what="pairs"), offset=offset)
        full = self._untruncated()
        specials = self._tok.num_special_tokens_to_add(is_pair=True)
        out: list[Encoded] = []
        for start in range(0, len(pairs), GROUP):
            group = pairs[start : start + GROUP]
            queries = self._capped(
                full,
                [p[0] for p in group],
                limit=query_max_length,
                over=lambda e: len(e.ids) > query_max_length,
                add_special_tokens=False,
            )
            passages = self._capped(
                full,
                [p[1] for p in group],
                limit=self.max_length,
                over=lambda e: len(e.ids) > self.max_length,
                add_special_tokens=False,
            )
            for i, (q, p) in enumerate(zip(queries, passages, strict=True)):
                if not truncate and len(q.ids) + len(p.ids) + specials > self.max_length:
                    cut = len(q.ids) > query_max_length or len(p.ids) > self.max_length
                    count = "more than" if cut else str(len(q.ids) + len(p.ids) + specials)
                    raise TooLongError("pairs", offset + start + i, count, self.max_length)
                q.truncate(query_max_length)
                p.truncate(self.max_length)
                out.append(Encoded.of(self._tok.post_process(q, p, add_special_tokens=True)))
        return out

    def encodings(self, texts: Sequence[Any], *, add_special_tokens: bool = True) -> list[Encoding]:
        """The truncated ``tokenizers`` encodings (tokens, offsets, masks) of a few texts, e.g. to show them.

        Offsets index the text as given (so over-long words are not shortened here). Prefer ``encode``
        for many texts: these objects are large."""
        check_texts(as_sequence(texts))
        return self._capped(
            self._tok,
            texts,
            limit=self.max_length,
            over=lambda e: bool(e.overflowing),
            shorten=False,
            add_special_tokens=add_special_tokens,
        )

    def encode(self, texts: Sequence[Any], *, truncate: bool = True, offset: int = 0) -> list[Encoded]:
        """Encode str items; InputError naming the first bad item (numbered from ``offset``).

        With ``truncate=False`` a text longer than max_length raises ``TooLongError``.
        """
        check_texts(as_sequence(texts), offset=offset)
        out: list[Encoded] = []
        for start in range(0, len(texts), GROUP):
            group = texts[start : start + GROUP]
            encodings = self._capped(self._tok, group, limit=self.max_length, over=lambda e: bool(e.overflowing))
            for i, enc in enumerate(encodings):
                if not truncate and enc.overflowing:
                    self._too_long(group[i], offset + start + i)
                out.append(Encoded.of(enc))
        return out

    def _too_long(self, text: str, index: int) -> None:
        if len(text) <= CHARS_PER_TOKEN * self.max_length + 64:  # short enough to count every token
            count = str(len(self._untruncated().encode(text).ids))
        else:
            count = "more than"
        raise TooLongError("texts", index, count, self.max_length)
