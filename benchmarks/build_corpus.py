"""Build benchmarks/corpus.jsonl: real English text from the Python standard library's docstrings.

Deterministic for a given CPython source tree (files sorted, no randomness but a seeded shuffle).
The committed corpus was built on CPython 3.11.7; rebuilding is only needed to change its shape.
Each line: {"kind": "query"|"passage", "text": ...}. Passages hold 100-250 MiniLM tokens.

    python benchmarks/build_corpus.py --tokenizer path/to/tokenizer.json
"""

from __future__ import annotations

import argparse
import ast
import json
import random
import re
import sysconfig
from pathlib import Path

from tokenizers import Tokenizer

OUT = Path(__file__).with_name("corpus.jsonl")
# Export-time calibration texts (int8 sensitivity search, static QDQ): disjoint from the corpus.
CALIBRATION = Path(__file__).parents[1] / "export" / "edge_bge_export" / "data" / "calibration" / "en.jsonl"


def docstrings(root: Path):
    for path in sorted(root.rglob("*.py")):
        if any(part in ("test", "tests", "idlelib", "lib2to3", "site-packages") for part in path.parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    yield doc


def paragraphs(doc: str):
    for para in re.split(r"\n\s*\n", doc):
        text = " ".join(para.split())
        # prose only: skip doctest, tables, signatures
        if len(text) > 40 and ">>>" not in text and text.count("  ") == 0 and text[0].isalpha():
            yield text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--passages", type=int, default=1200)
    args = ap.parse_args()
    tok = Tokenizer.from_file(args.tokenizer)
    tok.no_truncation()
    tok.no_padding()
    root = Path(sysconfig.get_paths()["stdlib"])
    queries: list[str] = []
    passages: list[str] = []
    seen: set[str] = set()
    current: list[str] = []
    for doc in docstrings(root):
        for para in paragraphs(doc):
            if para in seen:
                continue
            seen.add(para)
            first = re.split(r"(?<=[.?!])\s", para)[0].rstrip(".")
            if 3 <= len(first.split()) <= 14 and first not in seen:
                seen.add(first)
                queries.append(first)
            current.append(para)
            n = len(tok.encode(" ".join(current)).ids)
            if n > 250:
                current = [para] if len(tok.encode(para).ids) <= 250 else []
            elif n >= 100:
                passages.append(" ".join(current))
                current = []
    rng = random.Random(20261127)
    q_pick = rng.sample(queries, args.queries + 150)
    p_pick = rng.sample(passages, args.passages + 150)
    items = [{"kind": "query", "text": q} for q in q_pick[: args.queries]]
    items += [{"kind": "passage", "text": p} for p in p_pick[: args.passages]]
    rng.shuffle(items)
    calibration = [{"kind": "query", "text": q} for q in q_pick[args.queries :]]
    calibration += [{"kind": "passage", "text": p} for p in p_pick[args.passages :]]
    rng.shuffle(calibration)
    CALIBRATION.parent.mkdir(parents=True, exist_ok=True)
    with CALIBRATION.open("w", encoding="utf-8") as f:
        for item in calibration:
            f.write(json.dumps(item, ensure_ascii=False) + "\n")
    with OUT.open("w", encoding="utf-8") as f:
        for item in items:
            f.write(json.dumps(item, ensure_ascii=False) + "\n")
    print(f"{OUT}: {args.queries} queries, {args.passages} passages (of {len(queries)}, {len(passages)})")


if __name__ == "__main__":
    main()
