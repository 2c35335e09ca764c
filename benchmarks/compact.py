"""What compact vectors cost in retrieval: each ``Embedder.embed(dtype=...)`` type against float32.

    python benchmarks/compact.py [--bundle benchmarks/results/bundles/minilm-fp32]

Documents: the whole project corpus (benchmarks/corpus.jsonl, 2200 texts). Queries: the first
sentence of each passage that has more than one (the passage is then the one right answer).
Each type scores the queries against the documents as a vector database storing that type would:

- float32, float16: dot product (the vectors are normalised: cosine);
- int8: dot product of the int8 vectors, queries quantized with the same ranges;
- uint8: dot product of the raw uint8 values (what a store with a uint8 type computes);
- binary / ubinary: Hamming similarity of the packed bits (the two are the same bits);
- binary + rescore: the Hamming top 40, re-ordered by the float32 query against float32 documents.

Reported per type: overlap of its top 10 with float32's top 10, the right passage at rank 1 and
in the top 10, and bytes per vector. The int8/uint8 ranges are the bundle's manifest's (an older
bundle without them gets them computed exactly as the export does). Writes
benchmarks/results/compact.json and compact.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CORPUS = HERE / "corpus.jsonl"
TOP = 10
RESCORE_CANDIDATES = 40


def load_corpus() -> tuple[list[str], list[str], np.ndarray]:
    """(documents, queries, index of each query's passage in documents)."""
    rows = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    docs = [r["text"] for r in rows]
    queries, answers = [], []
    for i, r in enumerate(rows):
        head = r["text"].split(". ")[0]
        if r["kind"] == "passage" and len(head) < len(r["text"]) - 20 and len(head.split()) >= 4:
            queries.append(head)
            answers.append(i)
    return docs, queries, np.array(answers)


def bundle_ranges(bundle: Path) -> np.ndarray:
    from edge_bge.manifest import Manifest
    from edge_bge.quantize import ranges_array

    m = Manifest.load(bundle)
    if m.quantization_ranges is not None:
        return ranges_array(m.quantization_ranges)
    from edge_bge.tokenize import TextTokenizer
    from edge_bge_export.pipeline import quantization_ranges

    print(f"{bundle} has no ranges: computing them as the export does", flush=True)
    tokenizer = TextTokenizer(bundle / "tokenizer.json", max_length=m.max_length)
    return ranges_array(quantization_ranges(bundle, tokenizer))


def bits(packed: np.ndarray, dim: int) -> np.ndarray:
    """0/1 float32 [n, dim] from ubinary (uint8) or binary (int8: the same bytes minus 128)."""
    raw = (packed.astype(np.int16) + 128).astype(np.uint8) if packed.dtype == np.int8 else packed
    return np.unpackbits(raw, axis=-1)[:, :dim].astype(np.float32)


def scores(dtype: str, q: np.ndarray, d: np.ndarray, dim: int) -> np.ndarray:
    if dtype.endswith("binary"):
        bq, bd = bits(q, dim), bits(d, dim)
        return bq @ bd.T + (1 - bq) @ (1 - bd).T  # matching bits: dim - Hamming distance
    return q.astype(np.float64) @ d.astype(np.float64).T


def top(s: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


def measure(bundle: Path) -> dict:
    from edge_bge import Embedder
    from edge_bge.quantize import DTYPES, quantize

    model = Embedder(bundle)
    docs, queries, answers = load_corpus()
    print(f"embedding {len(docs)} documents and {len(queries)} queries with {bundle}", flush=True)
    d32, q32 = model.embed_documents(docs), model.embed_queries(queries)
    ranges = bundle_ranges(bundle)
    base = scores("float32", q32, d32, model.dim)
    base_top = top(base, TOP)
    rows = {}

    def record(name: str, s: np.ndarray, nbytes: int, order: np.ndarray | None = None) -> None:
        order = top(s, TOP) if order is None else order
        overlap = np.mean([len(set(a) & set(b)) / TOP for a, b in zip(order, base_top, strict=True)])
        rows[name] = {
            "overlap@10_vs_float32": round(float(overlap), 4),
            "hit@1": round(float(np.mean(order[:, 0] == answers)), 4),
            "recall@10": round(float(np.mean([a in o for a, o in zip(answers, order, strict=True)])), 4),
            "bytes_per_vector": nbytes,
        }
        print(name, rows[name], flush=True)

    for dtype in DTYPES:
        q, d = quantize(q32, dtype, ranges=ranges), quantize(d32, dtype, ranges=ranges)
        record(dtype, scores(dtype, q, d, model.dim), d[0].nbytes)
    q, d = quantize(q32, "ubinary"), quantize(d32, "ubinary")
    hamming = scores("ubinary", q, d, model.dim)
    candidates = top(hamming, RESCORE_CANDIDATES)
    rescored = np.take_along_axis(base, candidates, axis=1)
    order = np.take_along_axis(candidates, top(rescored, TOP), axis=1)
    record(f"binary, top {RESCORE_CANDIDATES} rescored by float32 (kept on disk)", hamming, d[0].nbytes, order)
    return {
        "bundle": str(bundle),
        "model": model.manifest.name,
        "precision": model.manifest.precision.value,
        "documents": len(docs),
        "queries": len(queries),
        "results": rows,
    }


def markdown(result: dict) -> str:
    lines = [
        f"Compact vectors, {result['model']} ({result['precision']} bundle): {result['queries']} queries "
        f"(first sentences of corpus passages) against {result['documents']} corpus texts.",
        "",
        "| dtype | top-10 overlap with float32 | right passage @1 | right passage in top 10 | bytes/vector |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in result["results"].items():
        lines.append(
            f"| {name} | {r['overlap@10_vs_float32']:.3f} | {r['hit@1']:.3f} | {r['recall@10']:.3f} | "
            f"{r['bytes_per_vector']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=RESULTS / "bundles" / "minilm-fp32")
    args = parser.parse_args()
    if not (args.bundle / "edge_bge.json").exists():
        exe = Path(sys.executable).with_name("edge-bge")
        cli = [str(exe)] if exe.exists() else [sys.executable, "-m", "edge_bge"]
        subprocess.run(
            [*cli, "export", "all-minilm-l6-v2", "--precision", "fp32", "--out", str(args.bundle)], check=True
        )
    result = measure(args.bundle)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "compact.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (RESULTS / "compact.md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))


if __name__ == "__main__":
    main()
