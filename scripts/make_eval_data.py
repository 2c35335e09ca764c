"""Build benchmarks/eval-data/: a small BEIR-format retrieval task from real text (benchmarks/corpus.jsonl).

The passages of the corpus are paragraphs of the Python standard library's docstrings. Each
passage's first sentence becomes a query and the rest of the passage its one relevant document
("which body does this summary sentence open?"); passages kept as documents without a query are
distractors. The first sentence is removed from the document, so the task needs more than
matching a copied string. Deterministic: passages are taken in file order, no randomness.

    python scripts/make_eval_data.py            # writes benchmarks/eval-data/{corpus,queries}.jsonl, qrels/test.tsv
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "benchmarks" / "corpus.jsonl"
OUT = ROOT / "benchmarks" / "eval-data"
# a sentence ends at . ! or ? followed by space and a capital letter, a quote or a bracket
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"'`])")


def split_passage(text: str) -> tuple[str, str] | None:
    """(first sentence without its final period, the rest), or None when either is too short to use."""
    parts = SENTENCE_END.split(text, maxsplit=1)
    if len(parts) != 2:
        return None
    first, rest = parts[0].rstrip(".").strip(), parts[1].strip()
    if not 4 <= len(first.split()) <= 30 or len(rest) < 120:
        return None
    return first, rest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=250, help="passages that get a query (default 250)")
    ap.add_argument("--distractors", type=int, default=200, help="passages kept as documents only (default 200)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    with SOURCE.open(encoding="utf-8") as f:
        passages = [row["text"] for row in map(json.loads, f) if row["kind"] == "passage"]
    pairs, seen = [], set()
    for text in passages:
        split = split_passage(text)
        if split is None or split[0].lower() in seen or split[1] in seen:
            continue
        seen.update((split[0].lower(), split[1]))
        pairs.append(split)
        if len(pairs) == args.queries + args.distractors:
            break
    if len(pairs) < args.queries + args.distractors:
        raise SystemExit(f"only {len(pairs)} usable passages in {SOURCE}")

    (args.out / "qrels").mkdir(parents=True, exist_ok=True)
    with (args.out / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for n, (_, doc) in enumerate(pairs):
            f.write(json.dumps({"_id": f"d{n}", "title": "", "text": doc}, ensure_ascii=False) + "\n")
    with (args.out / "queries.jsonl").open("w", encoding="utf-8") as f:
        for n, (query, _) in enumerate(pairs[: args.queries]):
            f.write(json.dumps({"_id": f"q{n}", "text": query}, ensure_ascii=False) + "\n")
    with (args.out / "qrels" / "test.tsv").open("w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for n in range(args.queries):
            f.write(f"q{n}\td{n}\t1\n")
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"{args.out}: {args.queries} queries, {len(pairs)} documents, {size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
