"""Evaluation data: a BEIR-format folder or a pairs ``.jsonl`` file, checked before any model runs.

BEIR folder: ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl`` (``_id``, ``text``),
``qrels/<split>.tsv`` (header ``query-id corpus-id score``; the score is the relevance grade).
A document's text is its title and text joined by a space, as BEIR's dense search does.

Pairs file: one object per line with ``query`` and ``positive`` (a str or a list of str) and optional
``negatives`` (a list of str). Each positive is relevant (grade 1) to its query; the corpus is every
positive and negative, deduplicated. Lines with the same query text make one query.

Only queries with at least one relevant document are evaluated (trec_eval leaves the others out);
how many were left out is reported. Ids in the qrels that the corpus or the queries do not have
are an error, never dropped silently.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError

__all__ = ["Dataset", "EvalInputError", "load_data"]

_SHOW = 5  # unknown ids named in an error message; the rest are counted


class EvalInputError(InputError):
    """Evaluation input that cannot be used as given (data, bundles, options)."""


@dataclass
class Dataset:
    """Documents, the queries to evaluate, and their relevance grades."""

    path: str
    format: str  # "beir" or "pairs"
    doc_ids: list[str]
    docs: list[str]
    query_ids: list[str]
    queries: list[str]
    qrels: dict[str, dict[str, int]]  # query id -> {doc id: grade}, only evaluated queries
    left_out: list[str] = field(default_factory=list)  # queries with no relevant document

    @property
    def counts(self) -> dict[str, int]:
        return {"queries": len(self.query_ids), "documents": len(self.doc_ids), "queries_left_out": len(self.left_out)}


def _unknown(what: str, ids: list[str], where: str) -> EvalInputError:
    shown = ", ".join(repr(i) for i in ids[:_SHOW])
    more = f" and {len(ids) - _SHOW} more" if len(ids) > _SHOW else ""
    return EvalInputError(f"{len(ids)} {what} in the qrels are not in {where}: {shown}{more}")


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise EvalInputError(f"{path}:{number}: not JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise EvalInputError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            yield number, row


def _field(path: Path, number: int, row: dict[str, Any], name: str, *, required: bool = True) -> str:
    value = row.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise EvalInputError(f"{path}:{number}: field {name!r} missing or not a string")
    return str(value)


def _read_texts(path: Path, *, titled: bool) -> dict[str, str]:
    if not path.is_file():
        raise EvalInputError(f"no {path.name} in {path.parent} (a BEIR folder has corpus.jsonl, queries.jsonl, qrels/)")
    out: dict[str, str] = {}
    for number, row in _jsonl(path):
        key = _field(path, number, row, "_id")
        text = _field(path, number, row, "text")
        title = _field(path, number, row, "title", required=False) if titled else ""
        if key in out:
            raise EvalInputError(f"{path}:{number}: duplicate _id {key!r}")
        out[key] = f"{title} {text}".strip() if title else text
    return out


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    if not path.is_file():
        raise EvalInputError(f"no qrels file {path} (a BEIR folder has qrels/<split>.tsv; see --split)")
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8", newline="") as f:
        rows = csv.reader(f, delimiter="\t")
        header = next(rows, None)
        if header is None or [h.strip() for h in header[:3]] != ["query-id", "corpus-id", "score"]:
            raise EvalInputError(f"{path}: the first line must be the header 'query-id<TAB>corpus-id<TAB>score'")
        for number, row in enumerate(rows, start=2):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 3:
                raise EvalInputError(f"{path}:{number}: expected query-id, corpus-id, score separated by tabs")
            try:
                grade = int(float(row[2]))
            except ValueError:
                raise EvalInputError(f"{path}:{number}: score {row[2]!r} is not a number") from None
            qrels.setdefault(row[0].strip(), {})[row[1].strip()] = grade
    return qrels


def _finish(path: str, fmt: str, corpus: dict[str, str], queries: dict[str, str], qrels: dict[str, dict[str, int]]):
    missing_q = [q for q in qrels if q not in queries]
    if missing_q:
        raise _unknown("query ids", missing_q, "queries.jsonl")
    missing_d = list(dict.fromkeys(d for rels in qrels.values() for d in rels if d not in corpus))
    if missing_d:
        raise _unknown("corpus ids", missing_d, "the corpus")
    kept = {q: rels for q, rels in qrels.items() if any(g >= 1 for g in rels.values())}
    left_out = [q for q in qrels if q not in kept]
    if not kept:
        raise EvalInputError(f"{path}: no query has a relevant document (grade >= 1): nothing to evaluate")
    if not corpus:
        raise EvalInputError(f"{path}: the corpus is empty")
    return Dataset(
        path=path,
        format=fmt,
        doc_ids=list(corpus),
        docs=list(corpus.values()),
        query_ids=list(kept),
        queries=[queries[q] for q in kept],
        qrels=kept,
        left_out=left_out,
    )


def _load_beir(root: Path, split: str) -> Dataset:
    corpus = _read_texts(root / "corpus.jsonl", titled=True)
    queries = _read_texts(root / "queries.jsonl", titled=False)
    qrels = _read_qrels(root / "qrels" / f"{split}.tsv")
    return _finish(str(root), "beir", corpus, queries, qrels)


def _texts(path: Path, number: int, value: Any, name: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(t, str) and t.strip() for t in items):
        raise EvalInputError(f"{path}:{number}: {name!r} must be a non-empty string or a list of them")
    return items


def _load_pairs(path: Path) -> Dataset:
    corpus: dict[str, str] = {}
    ids: dict[str, str] = {}  # text -> doc id
    queries: dict[str, str] = {}
    qids: dict[str, str] = {}  # text -> query id
    qrels: dict[str, dict[str, int]] = {}

    def doc_id(text: str) -> str:
        if text not in ids:
            ids[text] = f"d{len(ids)}"
            corpus[ids[text]] = text
        return ids[text]

    for number, row in _jsonl(path):
        query = _texts(path, number, row.get("query"), "query")
        if len(query) != 1:
            raise EvalInputError(f"{path}:{number}: 'query' must be one string")
        positives = _texts(path, number, row.get("positive"), "positive")
        negatives = _texts(path, number, row["negatives"], "negatives") if row.get("negatives") else []
        qid = qids.setdefault(query[0], f"q{len(qids)}")
        queries[qid] = query[0]
        rels = qrels.setdefault(qid, {})
        for text in positives:
            rels[doc_id(text)] = 1
        for text in negatives:
            doc_id(text)
    if not queries:
        raise EvalInputError(f"{path}: no pairs (each line: {{'query': ..., 'positive': ...}})")
    return _finish(str(path), "pairs", corpus, queries, qrels)


def load_data(path: str | os.PathLike[str], *, split: str = "test") -> Dataset:
    """A BEIR folder or a pairs ``.jsonl`` file; ``EvalInputError`` says what is wrong with it."""
    p = Path(path)
    if p.is_dir():
        return _load_beir(p, split)
    if p.is_file():
        if p.suffix != ".jsonl":
            raise EvalInputError(f"{p}: expected a BEIR folder or a pairs .jsonl file")
        return _load_pairs(p)
    raise EvalInputError(f"no such data: {p} (a BEIR folder or a pairs .jsonl file)")
