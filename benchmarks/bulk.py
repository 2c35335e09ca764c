"""Bulk embedding against in-process ``Embedder.embed``, in one run (issue: bulk and Ray Data).

    python benchmarks/bulk.py [--rows 20000] [--threads 2]

The MiniLM int8 bundle (built under benchmarks/results/bundles when missing) embeds the project's
corpus, repeated to ``--rows`` texts, four ways, each in a fresh process:
- ``Embedder.embed`` over the whole list (the baseline);
- ``edge_bge.bulk.embed_files`` on one machine (a .jsonl in, Parquet parts out);
- the same on a local Ray: 1 actor x 2 threads, and 2 actors x 1 thread.
Rows/s counts the whole job (reading, tokenizing, inference, writing; Ray's start included) and
peak RSS sums every process of the job (the driver and, on Ray, its workers and daemons), sampled.
Writes benchmarks/results/bulk.json and bulk.md. Compare numbers only within one run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from int8 import BUNDLES, CORPUS, RESULTS, export  # noqa: E402

from edge_bge.bench import cpu_flags, cpu_model  # noqa: E402

JOB = """
import json, sys, time
mode, bundle, data, out, threads = sys.argv[1:6]
threads = int(threads)
t0 = time.perf_counter()
if mode == "embed":
    import edge_bge
    texts = [json.loads(line)["text"] for line in open(data, encoding="utf-8")]
    edge_bge.Embedder(bundle, threads=threads).embed(texts)
    rows = len(texts)
else:
    from edge_bge.bulk import embed_files
    if mode.startswith("bulk"):
        r = embed_files(bundle, [data], out, threads=threads, progress=False, overlap=mode == "bulk")
    else:
        actors = int(mode.split(":")[1])
        import ray
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        r = embed_files(bundle, [data], out, ray=True, actors=actors, threads=threads, progress=False)
    rows = r.rows
print(json.dumps({"rows": rows, "seconds": time.perf_counter() - t0}))
"""


def _tree_rss(root: psutil.Process) -> float:
    """MB held by a process, its descendants and any Ray process (Ray's workers are not our children)."""
    procs = {root.pid: root}
    try:
        procs |= {p.pid: p for p in root.children(recursive=True)}
    except psutil.Error:
        pass
    for p in psutil.process_iter(["cmdline"]):
        line = " ".join(p.info["cmdline"] or [])
        if "ray::" in line or "/ray/" in line or "raylet" in line or "gcs_server" in line:
            procs[p.pid] = p
    total = 0
    for p in procs.values():
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


def measure(mode: str, bundle: Path, data: Path, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [sys.executable, "-c", JOB, mode, str(bundle), str(data), str(Path(tmp) / "out"), str(threads)],
            stdout=subprocess.PIPE,
            text=True,
        )
        root, peak, stop = psutil.Process(proc.pid), [0.0], threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], _tree_rss(root))
                time.sleep(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        out, _ = proc.communicate()
        stop.set()
        sampler.join()
        if proc.returncode != 0:
            raise SystemExit(f"{mode} failed ({proc.returncode})")
    result = json.loads(out.strip().splitlines()[-1])
    result["rows_per_s"] = result["rows"] / result["seconds"]
    result["peak_rss_mb"] = peak[0]
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=20_000)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    bundle, _ = export("all-minilm-l6-v2", "int8", BUNDLES / "minilm-int8")
    corpus = [json.loads(line)["text"] for line in CORPUS.open(encoding="utf-8")]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "corpus.jsonl"
        with data.open("w", encoding="utf-8") as f:
            for i in range(args.rows):
                f.write(json.dumps({"id": i, "text": corpus[i % len(corpus)]}) + "\n")
        setups = {
            "Embedder.embed (baseline)": ("embed", args.threads),
            "bulk, one machine": ("bulk", args.threads),
            "bulk, one machine, tokenizing in turn (no overlap)": ("bulk-serial", args.threads),
            "Ray local, 1 actor x 2 threads": ("ray:1", 2),
            "Ray local, 2 actors x 1 thread": ("ray:2", 1),
        }
        results = {}
        for name, (mode, threads) in setups.items():
            print(f"{name} ...", flush=True)
            results[name] = measure(mode, bundle, data, threads)
            print(f"  {results[name]['rows_per_s']:.1f} rows/s, peak {results[name]['peak_rss_mb']:.0f} MB", flush=True)
    base = results["Embedder.embed (baseline)"]["rows_per_s"]
    for r in results.values():
        r["ratio"] = r["rows_per_s"] / base
    report = {"cpu": cpu_model(), "flags": cpu_flags(), "cores": psutil.cpu_count(), "rows": args.rows}
    report["results"] = results
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bulk.json").write_text(json.dumps(report, indent=1))
    lines = [
        f"MiniLM int8, {args.rows} corpus texts, {report['cpu']} ({report['flags']}), {report['cores']} cores",
        "",
        "| setup | rows/s | ratio to Embedder.embed | peak RSS (all processes) |",
        "|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(f"| {name} | {r['rows_per_s']:.1f} | {r['ratio']:.2f} | {r['peak_rss_mb']:.0f} MB |")
    (RESULTS / "bulk.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
