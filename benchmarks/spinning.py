"""ONNX Runtime thread spinning on and off, in one run (issue 11, item 4: servers that fit containers).

    python benchmarks/spinning.py [--quick] [--bundle DIR] [--threads N] [--rounds 2] [--blocks 6]

ONNX Runtime's intra-op threads spin-wait for the next parallel section after each one
(session option ``session.intra_op.allow_spinning``, on by default): the next operator starts a
little sooner, and the waiting burns CPU. `edge-bge serve --spin/--no-spin` and
`Embedder(..., spin=True/False)` choose. On one bundle (default: all-MiniLM-L6-v2 int8) and the
same threads, this measures for each setting:

* server idle: `edge-bge serve BUNDLE --spin` and `--no-spin` side by side, after warm-up and 16
  requests, then no traffic for --idle seconds: CPU seconds of each server process (utime + stime
  of all its threads, /proc/PID/stat), over the same window;
* server, light traffic: one client sending one request of 4 texts every 100 ms: server CPU per
  request and the median latency;
* server, full load: 8 concurrent clients (asyncio + httpx, one connection each, in this process:
  they share the cores with the servers) sending --requests requests of 4 texts from
  benchmarks/corpus.jsonl: requests/s, latency and server CPU per request;
* in-process: one fresh process holding both Embedders: `Embedder.embed` of the whole corpus
  (twice each, best counts), and the request stream one request at a time.

With --busy N, N processes spinning a core each run beside it all: a shared host, noisy neighbours,
or a container throttled by its quota. Traffic alternates between the two settings in --blocks blocks (on/off, then off/on), so that other
load on the machine falls on both alike; the figures are medians over --rounds rounds.
Writes benchmarks/results/spinning.json and spinning.md (spinning-busyN.* with --busy N). Compare
numbers only within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from serve import free_port, pct, wait_ready  # benchmarks/serve.py

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CORPUS = HERE / "corpus.jsonl"
DEFAULT_BUNDLE = RESULTS / "bundles" / "minilm-int8"
SEED = 11
CLIENTS = 8
TEXTS_PER_REQUEST = 4
LIGHT_INTERVAL_S = 0.1
TICK = os.sysconf("SC_CLK_TCK")


def corpus() -> list[str]:
    return [json.loads(line)["text"] for line in CORPUS.read_text().splitlines() if line.strip()]


def make_requests(n: int) -> list[list[str]]:
    texts = corpus()
    rng = random.Random(SEED)
    return [[rng.choice(texts) for _ in range(TEXTS_PER_REQUEST)] for _ in range(n)]


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of process ``pid`` so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rpartition(")")[2].split()  # after "pid (comm)": field 3 is fields[0]
    return (int(fields[11]) + int(fields[12])) / TICK  # fields 14 and 15: utime, stime


def _cli() -> list[str]:
    exe = Path(sys.executable).with_name("edge-bge")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "edge_bge"]


# ---- the server ---------------------------------------------------------------------------------
async def _post(client, texts: list[str]) -> float:
    t = time.perf_counter()
    r = await client.post("/v1/embeddings", json={"input": texts, "encoding_format": "base64"})
    r.raise_for_status()
    return time.perf_counter() - t


async def _light(url: str, requests: list[list[str]], seconds: float) -> list[float]:
    import httpx

    lat: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=60.0) as c:
        t0 = time.perf_counter()
        i = 0
        while time.perf_counter() - t0 < seconds:
            lat.append(await _post(c, requests[i % len(requests)]))
            i += 1
            next_at = t0 + i * LIGHT_INTERVAL_S
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    return lat


async def _load(url: str, requests: list[list[str]], clients: int) -> tuple[list[float], float]:
    import httpx

    conns = [
        httpx.AsyncClient(base_url=url, timeout=120.0, limits=httpx.Limits(max_connections=1)) for _ in range(clients)
    ]
    it = iter(requests)
    lat: list[float] = []

    async def worker(c) -> None:
        for texts in it:
            lat.append(await _post(c, texts))

    try:
        await asyncio.gather(*(_post(c, requests[0]) for c in conns))  # connections open
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in conns))
        wall = time.perf_counter() - t0
    finally:
        await asyncio.gather(*(c.aclose() for c in conns))
    return lat, wall


class Server:
    """`edge-bge serve BUNDLE --spin|--no-spin` in a process of its own."""

    def __init__(self, bundle: Path, threads: int, spin: bool) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [*_cli(), "serve", str(bundle), "--port", str(self.port), "--threads", str(threads)]
        cmd += ["--providers", "cpu", "--spin" if spin else "--no-spin"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        if self.proc.returncode not in (0, -15) and err:
            print(err[-2000:], file=sys.stderr)


def server_runs(bundle: Path, threads: int, requests: list[list[str]], idle: float, blocks: int) -> dict:
    """Both servers at once; idle measured over the same window, traffic in alternating blocks."""
    servers = {"on": Server(bundle, threads, True), "off": Server(bundle, threads, False)}
    out: dict[str, dict] = {
        k: {"light_lat": [], "light_cpu": 0.0, "load_lat": [], "load_wall": 0.0, "load_cpu": 0.0} for k in servers
    }
    try:
        for s in servers.values():
            wait_ready(s.url, s.proc)
            asyncio.run(_load(s.url, requests[:16], 1))  # a few requests after the warm-up
        time.sleep(2.0)
        c0 = {k: s.cpu() for k, s in servers.items()}
        time.sleep(idle)
        for k, s in servers.items():
            out[k]["idle_cpu"] = s.cpu() - c0[k]
        chunk = max(1, len(requests) // blocks)
        for b in range(blocks):
            for k in ("on", "off") if b % 2 == 0 else ("off", "on"):
                s, o = servers[k], out[k]
                c = s.cpu()
                o["light_lat"] += asyncio.run(_light(s.url, requests, idle / blocks))
                o["light_cpu"] += s.cpu() - c
                c = s.cpu()
                lat, wall = asyncio.run(_load(s.url, requests[b * chunk : (b + 1) * chunk], CLIENTS))
                o["load_cpu"] += s.cpu() - c
                o["load_lat"] += lat
                o["load_wall"] += wall
    finally:
        for s in servers.values():
            s.stop()
    n_texts = TEXTS_PER_REQUEST
    result = {}
    for k, o in out.items():
        light, load = o["light_lat"], o["load_lat"]
        result[k] = {
            "idle_cpu_s": round(o["idle_cpu"], 3),
            "idle_cores": round(o["idle_cpu"] / idle, 4),
            "light_requests": len(light),
            "light_cpu_ms_per_request": round(o["light_cpu"] / len(light) * 1e3, 2),
            "light_p50_ms": round(pct(light, 0.5) * 1e3, 2),
            "load_requests_per_s": round(len(load) / o["load_wall"], 2),
            "load_texts_per_s": round(len(load) * n_texts / o["load_wall"], 1),
            "load_p50_ms": round(pct(load, 0.5) * 1e3, 2),
            "load_cpu_ms_per_request": round(o["load_cpu"] / len(load) * 1e3, 2),
        }
    return result


# ---- in-process ---------------------------------------------------------------------------------
def child(bundle: str, threads: int, n_requests: int, blocks: int) -> dict:
    """Runs in a fresh process holding both Embedders; work alternates between them in blocks.

    Embedder.embed of the corpus (twice each, on-off-off-on), then the request stream one request
    at a time, in blocks."""
    from edge_bge import Embedder

    models = {k: Embedder(bundle, providers="cpu", threads=threads, spin=k == "on") for k in ("on", "off")}
    texts = corpus()
    requests = make_requests(n_requests)
    for m in models.values():
        m.embed(texts[:64])  # warm-up
    acc = {k: {"corpus": [], "serial_lat": [], "serial_wall": 0.0, "serial_cpu": 0.0} for k in models}
    for k in ("on", "off", "off", "on"):
        time.sleep(0.1)
        c, t = time.process_time(), time.perf_counter()
        models[k].embed(texts)
        acc[k]["corpus"].append((time.perf_counter() - t, time.process_time() - c))
    chunk = max(1, len(requests) // blocks)
    for b in range(blocks):
        for k in ("on", "off") if b % 2 == 0 else ("off", "on"):
            time.sleep(0.1)
            c, t = time.process_time(), time.perf_counter()
            for r in requests[b * chunk : (b + 1) * chunk]:
                t1 = time.perf_counter()
                models[k].embed(r)
                acc[k]["serial_lat"].append(time.perf_counter() - t1)
            acc[k]["serial_wall"] += time.perf_counter() - t
            acc[k]["serial_cpu"] += time.process_time() - c
    out = {}
    for k, a in acc.items():
        wall, cpu = min(a["corpus"])
        n = len(a["serial_lat"])
        out[k] = {
            "corpus_texts_per_s": round(len(texts) / wall, 1),
            "corpus_cpu_s_per_1k_texts": round(cpu / len(texts) * 1e3, 3),
            "serial_texts_per_s": round(n * TEXTS_PER_REQUEST / a["serial_wall"], 1),
            "serial_p50_ms": round(pct(a["serial_lat"], 0.5) * 1e3, 2),
            "serial_cpu_ms_per_request": round(a["serial_cpu"] / n * 1e3, 2),
        }
    return out


def in_process_runs(bundle: Path, threads: int, n_requests: int, blocks: int) -> dict:
    cmd = [sys.executable, __file__, "--child", "--bundle", str(bundle), "--threads", str(threads)]
    cmd += ["--requests", str(n_requests), "--blocks", str(blocks)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# ---- report -------------------------------------------------------------------------------------
def median_of(runs: list[dict]) -> dict:
    return {k: round(statistics.median(r[k] for r in runs), 4) for k in runs[0]}


ROWS = [
    ("server", "idle_cpu_s", "server idle: CPU seconds over {idle:g} s with no traffic"),
    ("server", "idle_cores", "server idle: cores used"),
    ("server", "light_cpu_ms_per_request", "server, 1 request / 100 ms: CPU ms per request"),
    ("server", "light_p50_ms", "server, 1 request / 100 ms: p50 latency ms"),
    ("server", "load_requests_per_s", "server, 8 clients: requests/s"),
    ("server", "load_texts_per_s", "server, 8 clients: texts/s"),
    ("server", "load_p50_ms", "server, 8 clients: p50 latency ms"),
    ("server", "load_cpu_ms_per_request", "server, 8 clients: server CPU ms per request"),
    ("in_process", "corpus_texts_per_s", "in-process embed(corpus): texts/s"),
    ("in_process", "corpus_cpu_s_per_1k_texts", "in-process embed(corpus): CPU s per 1000 texts"),
    ("in_process", "serial_texts_per_s", "in-process, one request of 4 texts at a time: texts/s"),
    ("in_process", "serial_p50_ms", "in-process, one request of 4 texts at a time: p50 ms"),
    ("in_process", "serial_cpu_ms_per_request", "in-process, one request of 4 texts at a time: CPU ms per request"),
]


def write_md(res: dict, path: Path) -> None:
    lines = [
        "# ONNX Runtime thread spinning: on vs off",
        "",
        f"CPU: {res['cpu']} ({res['cores']} cores)"
        + (f", with {res['busy']} processes spinning a core each beside it" if res.get("busy") else "")
        + f"; bundle `{res['bundle']}`; {res['threads']} intra-op threads; "
        f"{res['rounds']} rounds of {res['blocks']} alternating blocks, medians of the rounds; {res['requests']} requests of "
        f"{TEXTS_PER_REQUEST} texts (seed {SEED}); corpus {res['corpus_texts']} texts; run {res['run_at']}.",
        "",
        f"Command: `{res['command']}`",
        "",
        "Server: `edge-bge serve --spin` and `edge-bge serve --no-spin` run side by side, idle over the same "
        "window, traffic (`POST /v1/embeddings`) in alternating blocks; the clients run in the benchmark process "
        "on the same cores. CPU: utime + stime of the server process (all threads) from /proc/PID/stat. "
        "In-process: one fresh process holding `Embedder(..., spin=True)` and `Embedder(..., spin=False)`, "
        "work alternating between them.",
        "",
        "| measure | spinning on | spinning off |",
        "|---|---:|---:|",
    ]
    for part, key, label in ROWS:
        on, off = res["median"]["on"][part][key], res["median"]["off"][part][key]
        lines.append(f"| {label.format(idle=res['idle_s'])} | {on:g} | {off:g} |")
    loads = ", ".join(f"{x:.2f}" for x in res["loadavg"])
    lines += ["", f"1-minute load average at the start of each round and at the end: {loads}.", ""]
    path.write_text("\n".join(lines))


def main() -> int:
    from edge_bge.bench import cpu_model

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short phases, one round (debugging)")
    ap.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--rounds", type=int, help="rounds (default 2, --quick 1)")
    ap.add_argument("--blocks", type=int, help="alternating blocks per phase (default 6, --quick 2)")
    ap.add_argument("--idle", type=float, help="seconds of the idle and light phases (default 10, --quick 3)")
    ap.add_argument("--requests", type=int, help="requests of the load phase (default 384, --quick 48)")
    ap.add_argument("--busy", type=int, default=0, help="processes spinning a core each beside the benchmark (0)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help="JSON output (default results/spinning.json; .md beside it)")
    args = ap.parse_args()
    n = args.requests or (48 if args.quick else 384)
    blocks = args.blocks or (2 if args.quick else 6)
    if args.child:
        print(json.dumps(child(str(args.bundle), args.threads, n, blocks)))
        return 0
    rounds = args.rounds or (1 if args.quick else 2)
    idle = args.idle or (3.0 if args.quick else 10.0)
    requests = make_requests(n)
    name = f"spinning-busy{args.busy}" if args.busy else "spinning"
    out_json = args.out or (
        Path(os.environ.get("TMPDIR", "/tmp")) / f"{name}-quick.json" if args.quick else RESULTS / f"{name}.json"
    )
    res: dict = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "bundle": str(args.bundle.relative_to(HERE.parent) if args.bundle.is_relative_to(HERE.parent) else args.bundle),
        "threads": args.threads,
        "rounds": rounds,
        "blocks": blocks,
        "idle_s": idle,
        "busy": args.busy,
        "requests": n,
        "corpus_texts": len(corpus()),
        "command": "python benchmarks/spinning.py" + "".join(" " + shlex.quote(a) for a in sys.argv[1:]),
        "run_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "loadavg": [],
        "runs": {"on": [], "off": []},
    }
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        rounds_of(args, res, requests, rounds, blocks, idle, n)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    res["loadavg"].append(os.getloadavg()[0])
    res["median"] = {
        s: {part: median_of([run[part] for run in res["runs"][s]]) for part in ("server", "in_process")}
        for s in ("on", "off")
    }
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(res, indent=2) + "\n")
    write_md(res, out_json.with_suffix(".md"))
    print(out_json.with_suffix(".md").read_text())
    return 0


def rounds_of(
    args: argparse.Namespace, res: dict, requests: list[list[str]], rounds: int, blocks: int, idle: float, n: int
) -> None:
    for r in range(rounds):
        res["loadavg"].append(os.getloadavg()[0])
        print(f"round {r + 1}: servers ...", flush=True)
        server = server_runs(args.bundle, args.threads, requests, idle, blocks)
        print(f"  {server}", flush=True)
        print(f"round {r + 1}: in-process ...", flush=True)
        inproc = in_process_runs(args.bundle, args.threads, n, blocks)
        print(f"  {inproc}", flush=True)
        for k in ("on", "off"):
            res["runs"][k].append({"server": server[k], "in_process": inproc[k]})


if __name__ == "__main__":
    raise SystemExit(main())
