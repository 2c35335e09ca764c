"""Long texts are cut before tokenization without changing a single kept token, and bad input is
refused before the tokenizer sees it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from edge_bge import Embedder, InputError
from edge_bge.tokenize import TextTokenizer, TooLongError

from .helpers import corpus_texts, xlmr_tokenizer


def _long_texts() -> list[str]:
    prose = " ".join(corpus_texts(200))  # real mixed English, ~50k characters
    cjk = "".join(chr(0x4E00 + (i * 37) % 3000) for i in range(20_000))
    return [
        prose,
        prose.replace(" ", "   "),  # runs of spaces at every cut
        prose.replace(" ", "\n"),  # no U+0020 at all: only the checked cut applies
        prose.replace(" ", ""),  # one endless word
        cjk,
        "x" * 300 + " " + prose,  # an over-long word first
        ("supercalifragilistic" * 8 + " ") * 2000,  # every word past WordPiece's 100-character limit
        "a" * 50_000,  # no token boundary anywhere
        "b" * 100_000 + " then " + prose,  # one unknown word, then what the model keeps
        "é" * 30_000 + "a1" * 20_000 + ". " + prose,
        "Привет" * 20_000 + " b c " + prose,
        "e\u0301" * 20_000 + " " + prose,  # marks between the letters: no shortening
        "short text",
        "",
    ]


def _tokenizer_files(tmp_path: Path, minilm_dir: Path) -> list[Path]:
    """MiniLM's BERT tokenizer, an XLM-R style one, and variants the cut cannot vouch for."""
    xlmr = tmp_path / "xlmr"
    xlmr_tokenizer(xlmr, max_length=512)
    bert = json.loads((minilm_dir / "tokenizer.json").read_text(encoding="utf-8"))
    files = [minilm_dir / "tokenizer.json", xlmr / "tokenizer.json"]
    variants = {
        # no pre-tokenizer: WordPiece sees the whole text as one word
        "bare": {**bert, "pre_tokenizer": None},
        # splitting on "e" only: a space is not a boundary
        "split": {
            **bert,
            "pre_tokenizer": {"type": "Split", "pattern": {"String": "e"}, "behavior": "Isolated", "invert": False},
        },
    }
    for name, config in variants.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(config), encoding="utf-8")
        files.append(path)
    return files


@pytest.mark.parametrize("max_length", [16, 512])
def test_cut_texts_give_the_tokens_of_the_whole_text(tmp_path, minilm_dir, max_length):
    texts = _long_texts()
    for path in _tokenizer_files(tmp_path, minilm_dir):
        tok = TextTokenizer(path, max_length=max_length)
        reference = Tokenizer.from_file(str(path))
        reference.no_padding()
        reference.enable_truncation(max_length)
        got = tok.encode(texts)
        for text, enc in zip(texts, got, strict=True):
            want = reference.encode(text)
            assert enc.ids.tolist() == want.ids, (path.name, text[:40])
            assert len(enc) == len(want.ids) <= max_length


def test_cut_pairs_give_the_tokens_of_the_whole_pair(tmp_path, minilm_dir):
    texts = _long_texts()
    pairs = [(q, p) for q in texts[:3] + texts[-2:] for p in texts[::2]]
    for path in _tokenizer_files(tmp_path, minilm_dir)[:2]:
        tok = TextTokenizer(path, max_length=64)
        full = Tokenizer.from_file(str(path))
        full.no_padding()
        full.no_truncation()
        for (query, passage), enc in zip(pairs, tok.encode_pairs(pairs, query_max_length=48), strict=True):
            q = full.encode(query, add_special_tokens=False)
            p = full.encode(passage, add_special_tokens=False)
            q.truncate(48)
            p.truncate(64)
            want = tok.tokenizer.post_process(q, p, add_special_tokens=True)
            assert enc.ids.tolist() == want.ids
            assert enc.type_ids is None or enc.type_ids.tolist() == want.type_ids


def test_too_long_without_truncation_names_the_text(tmp_path, minilm_dir):
    tok = TextTokenizer(minilm_dir / "tokenizer.json", max_length=32)
    with pytest.raises(TooLongError, match=r"texts\[6\] has \d+ tokens, more than the model's max_length 32") as e:
        tok.encode(["fine"] * 2 + ["word " * 40], truncate=False, offset=4)
    assert e.value.index == 6
    with pytest.raises(TooLongError, match=r"texts\[0\] has more than tokens"):
        tok.encode(["word " * 100_000], truncate=False)
    assert [len(e) for e in tok.encode(["word " * 30], truncate=False)] == [32]
    pairs = [("a question", "word " * 10), ("a question", "word " * 30)]
    with pytest.raises(TooLongError, match=r"pairs\[1\] has 35 tokens, more than the model's max_length 32"):
        tok.encode_pairs(pairs, query_max_length=24, truncate=False)
    assert [len(e) for e in tok.encode_pairs(pairs, query_max_length=24)] == [15, 32]


def test_only_sequences_of_str_reach_the_tokenizer(tiny_fp32):
    model = Embedder(tiny_fp32)
    with pytest.raises(InputError, match=r"texts\[1\] is tuple, expected str"):
        model.embed(["a", ("a", "b")])  # the tokenizer would take it as a text pair
    with pytest.raises(InputError, match=r"texts\[2\] is int"):
        model.count_tokens(["a", "b", 3])
    with pytest.raises(InputError, match="must be a sequence, got generator"):
        model.embed(t for t in ["a"])
    with pytest.raises(InputError, match=r"texts\[0\] is not valid Unicode"):
        model.embed(["\ud800"])
    assert model.count_tokens("hello") == 3  # one str: one count, not one per character
    assert model.count_tokens(["hello", "hello world"]) == [3, 4]
    np.testing.assert_array_equal(model.embed(("a", "b")), model.embed(["a", "b"]))


def test_the_cut_is_trusted_only_where_spaces_split(minilm_dir, tmp_path):
    from edge_bge.tokenize import _space_cut_is_exact

    bert = json.loads((minilm_dir / "tokenizer.json").read_text(encoding="utf-8"))
    xlmr = xlmr_tokenizer(tmp_path, max_length=512).backend_tokenizer.to_str()
    m3_like = json.loads(xlmr)
    m3_like["normalizer"] = {
        "type": "Sequence",
        "normalizers": [m3_like["normalizer"], {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}],
    }
    assert _space_cut_is_exact(bert) and _space_cut_is_exact(json.loads(xlmr)) and _space_cut_is_exact(m3_like)
    untrusted = [
        {**bert, "pre_tokenizer": None},
        {**bert, "pre_tokenizer": {"type": "Split", "pattern": {"String": "e"}, "behavior": "Isolated"}},
        {**bert, "normalizer": {"type": "Replace", "pattern": {"String": "a b"}, "content": "c"}},
        {**bert, "truncation": {**bert["truncation"], "direction": "Left"}},
        {**m3_like, "pre_tokenizer": {**m3_like["pre_tokenizer"], "split": False}},
    ]
    assert not any(_space_cut_is_exact(c) for c in untrusted)
