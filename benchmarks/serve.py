"""Serving benchmark (issue 5): `edge-bge serve` on loopback vs the in-process Embedder, same run.

    python benchmarks/serve.py [--quick] [--threads 2] [--bundle DIR] [--requests N]

One deterministic request stream (N requests of 4-16 texts drawn from benchmarks/corpus.jsonl
with a fixed seed) is embedded
  * in-process: `Embedder(bundle, providers="cpu", threads=T).embed(texts)` once per request,
    serially, in this process (before and after the server phases; the faster pass is the
    baseline, so the ratio is conservative), and
  * by `edge-bge serve BUNDLE --threads T` started as a subprocess on 127.0.0.1, with 1, 8 and
    32 concurrent clients sending the same requests to `POST /v1/embeddings`
    (`encoding_format: base64`). Each client is an asyncio task with its own
    httpx.AsyncClient holding one persistent connection; clients take the next request of the
    stream until it is exhausted.
The load generator shares the machine's cores with the server, so its CPU time is recorded and
reported. Writes benchmarks/results/serve.json and serve.md. Compare numbers only within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import shlex
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from edge_bge.bench import cpu_model

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CORPUS = HERE / "corpus.jsonl"
DEFAULT_BUNDLE = RESULTS / "bundles" / "minilm-int8"
CONCURRENCY = [1, 8, 32]
SEED = 5


def make_requests(n: int) -> list[list[str]]:
    texts = [json.loads(line)["text"] for line in CORPUS.read_text().splitlines() if line.strip()]
    rng = random.Random(SEED)
    return [[rng.choice(texts) for _ in range(rng.randint(4, 16))] for _ in range(n)]


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summarize(lat: list[float], wall: float, n_texts: int, cpu_s: float | None = None) -> dict:
    out = {
        "requests": len(lat),
        "texts": n_texts,
        "wall_s": round(wall, 3),
        "texts_per_s": round(n_texts / wall, 1),
        "requests_per_s": round(len(lat) / wall, 2),
        "p50_ms": round(pct(lat, 0.50) * 1e3, 2),
        "p99_ms": round(pct(lat, 0.99) * 1e3, 2),
        "mean_ms": round(statistics.fmean(lat) * 1e3, 2),
    }
    if cpu_s is not None:
        out["client_cpu_s"] = round(cpu_s, 3)
        out["client_cpu_share"] = round(cpu_s / wall, 3)  # cores used by the load generator
    return out


def in_process(embedder, requests: list[list[str]], warmup: int) -> dict:
    for texts in requests[:warmup]:
        embedder.embed(texts)
    lat = []
    t0 = time.perf_counter()
    for texts in requests:
        t = time.perf_counter()
        embedder.embed(texts)
        lat.append(time.perf_counter() - t)
    wall = time.perf_counter() - t0
    return summarize(lat, wall, sum(map(len, requests)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> float:
    import httpx

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/ready", timeout=2.0).status_code == 200:
                return time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server not ready in time")


def decode(body: dict) -> np.ndarray:
    rows = sorted(body["data"], key=lambda d: d["index"])
    return np.stack([np.frombuffer(base64.b64decode(r["embedding"]), dtype="<f4") for r in rows])


async def load(url: str, model: str, requests: list[list[str]], clients: int, warmup: int) -> dict:
    import httpx

    async def one(client: httpx.AsyncClient, texts: list[str]) -> dict:
        r = await client.post("/v1/embeddings", json={"input": texts, "model": model, "encoding_format": "base64"})
        r.raise_for_status()
        return r.json()

    conns = [
        httpx.AsyncClient(
            base_url=url,
            timeout=120.0,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )
        for _ in range(clients)
    ]
    try:
        # warm-up: every client opens its connection and sends a few requests
        await asyncio.gather(*(one(c, requests[i % len(requests)]) for i, c in enumerate(conns)))
        for i in range(warmup):
            await one(conns[0], requests[i])

        it = iter(range(len(requests)))
        lat: list[float] = []

        async def worker(c: httpx.AsyncClient) -> None:
            for i in it:
                t = time.perf_counter()
                await one(c, requests[i])
                lat.append(time.perf_counter() - t)

        cpu0 = time.process_time()
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in conns))
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    finally:
        await asyncio.gather(*(c.aclose() for c in conns))
    return summarize(lat, wall, sum(map(len, requests)), cpu)


async def check_vectors(url: str, model: str, embedder, texts: list[str]) -> float:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=60.0) as c:
        r = await c.post("/v1/embeddings", json={"input": texts, "model": model, "encoding_format": "base64"})
        r.raise_for_status()
        got = decode(r.json())
    ref = np.asarray(embedder.embed(texts), dtype=np.float32)
    cos = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
    return float(cos.min())


def write_md(res: dict, path: Path) -> None:
    base = res["in_process"]["baseline"]
    lines = [
        "# Serving benchmark: `edge-bge serve` vs in-process Embedder",
        "",
        f"CPU: {res['cpu']} ({res['cores']} cores); bundle `{res['bundle']}` (model `{res['model']}`); "
        f"{res['threads']} ONNX Runtime threads for both the server and the in-process Embedder; "
        f"{res['requests']} requests of 4-16 texts ({res['texts']} texts) drawn from "
        f"benchmarks/corpus.jsonl with seed {SEED}; run {res['run_at']}.",
        "",
        f"Command: `{res['command']}`",
        "",
        "Server: `POST /v1/embeddings` (`encoding_format: base64`) on 127.0.0.1, micro-batching defaults. "
        "Clients: asyncio tasks, each with its own httpx.AsyncClient and one persistent connection, "
        "taking the next request of the same stream. In-process: `Embedder.embed` once per request, "
        "serially, before and after the server phases; the faster pass is the baseline. "
        "**The load generator runs on the same cores as the server** (its CPU use is the "
        "`client CPU` column, in cores), so the server numbers include that handicap.",
        "",
        "| setup | texts/s | req/s | p50 ms | p99 ms | client CPU | server / in-process |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ("before", "after"):
        r = res["in_process"][name]
        mark = " (baseline)" if r is base else ""
        lines.append(
            f"| in-process ({name}){mark} | {r['texts_per_s']} | {r['requests_per_s']} | {r['p50_ms']} | "
            f"{r['p99_ms']} | - | - |"
        )
    for c in res["concurrency"]:
        r = res["server"][str(c)]
        lines.append(
            f"| server, {c} client{'s' if c > 1 else ''} | {r['texts_per_s']} | {r['requests_per_s']} | "
            f"{r['p50_ms']} | {r['p99_ms']} | {r['client_cpu_share']:.2f} | {r['ratio']:.2f} |"
        )
    t = res["target"]
    lines += [
        "",
        f"Target (issue 5): at {t['clients']} clients, server throughput >= {t['min_ratio']:.0%} of in-process: "
        f"**{'met' if t['met'] else 'NOT met'}** (ratio {t['ratio']:.2f}).",
        "",
        f"Server ready {res['server_ready_s']:.2f} s after start; server vectors vs in-process: "
        f"min cosine {res['cos_min']:.6f}. Load average at start: {res['loadavg_start']}, at end: {res['loadavg_end']} "
        "(other jobs on the machine skew absolute numbers; compare within one run).",
        "",
    ]
    path.write_text("\n".join(lines))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="few requests (debugging)")
    ap.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--requests", type=int, help="requests in the stream (default 128, --quick 24)")
    ap.add_argument("--out", type=Path, help="JSON output (default results/serve.json; .md beside it)")
    args = ap.parse_args()

    n = args.requests or (24 if args.quick else 128)
    warmup = 4 if args.quick else 10
    requests = make_requests(n)
    out_json = args.out or RESULTS / ("serve-quick.json" if args.quick else "serve.json")
    if args.quick and not args.out:
        out_json = Path(os.environ.get("TMPDIR", "/tmp")) / "serve-quick.json"

    from edge_bge import Embedder

    manifest = json.loads((args.bundle / "edge_bge.json").read_text())
    model = manifest.get("name", "")
    res: dict = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "bundle": str(args.bundle.relative_to(HERE.parent) if args.bundle.is_relative_to(HERE.parent) else args.bundle),
        "model": model,
        "threads": args.threads,
        "requests": n,
        "texts": sum(map(len, requests)),
        "concurrency": CONCURRENCY,
        "seed": SEED,
        "command": "python benchmarks/serve.py" + "".join(" " + shlex.quote(a) for a in sys.argv[1:]),
        "client": "asyncio + httpx.AsyncClient, one persistent connection per client, same process; "
        "shares the cores with the server",
        "run_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }

    embedder = Embedder(str(args.bundle), providers="cpu", threads=args.threads)
    print(f"{n} requests, {res['texts']} texts; in-process (before) ...", flush=True)
    before = in_process(embedder, requests, warmup)
    print(f"  {before['texts_per_s']} texts/s", flush=True)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    exe = Path(sys.executable).with_name("edge-bge")
    cmd = [
        str(exe) if exe.exists() else "edge-bge",
        "serve",
        str(args.bundle),
        "--port",
        str(port),
        "--threads",
        str(args.threads),
        "--providers",
        "cpu",
    ]
    res["server_command"] = " ".join(shlex.quote(c) for c in cmd)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    server: dict = {}
    try:
        res["server_ready_s"] = round(wait_ready(url, proc), 2)
        res["cos_min"] = round(asyncio.run(check_vectors(url, model, embedder, requests[0])), 6)
        for c in CONCURRENCY:
            print(f"server, {c} clients ...", flush=True)
            server[str(c)] = asyncio.run(load(url, model, requests, c, warmup))
            print(
                f"  {server[str(c)]['texts_per_s']} texts/s, p50 {server[str(c)]['p50_ms']} ms, "
                f"p99 {server[str(c)]['p99_ms']} ms",
                flush=True,
            )
    finally:
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        if proc.returncode not in (0, -15) and err:
            print(err[-2000:], file=sys.stderr)

    print("in-process (after) ...", flush=True)
    after = in_process(embedder, requests, warmup)
    print(f"  {after['texts_per_s']} texts/s", flush=True)
    base = before if before["texts_per_s"] >= after["texts_per_s"] else after
    res["in_process"] = {"before": before, "after": after, "baseline": base}
    for r in server.values():
        r["ratio"] = round(r["texts_per_s"] / base["texts_per_s"], 3)
    res["server"] = server
    top = str(CONCURRENCY[-1])
    res["target"] = {
        "clients": CONCURRENCY[-1],
        "min_ratio": 0.8,
        "ratio": server[top]["ratio"],
        "met": server[top]["ratio"] >= 0.8,
    }
    res["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())

    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(res, indent=2) + "\n")
    write_md(res, out_json.with_suffix(".md"))
    print(out_json.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
