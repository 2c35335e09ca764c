"""What the server tests share: a server in a thread on a free port, probes of /ready and /metrics, and a
model whose runs wait for a gate (queueing made observable without relying on timing)."""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np

from edge_bge import Embedder
from edge_bge.server import Registry, Served, ServerConfig, Service
from edge_bge.server.run import build_server

from ..helpers import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(models: list[Any], **config: Any) -> Iterator[SimpleNamespace]:
    """The server ``edge-bge serve`` runs (build_server), on a free loopback port, in a thread, for the block."""
    cfg = ServerConfig(port=free_port(), **config)
    server = build_server(Service(Registry([m if isinstance(m, Served) else Served(m) for m in models]), cfg))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    url = f"http://127.0.0.1:{cfg.port}"
    try:
        client = httpx.Client(base_url=url)
        yield SimpleNamespace(
            url=url, port=cfg.port, service=server.service, server=server, thread=thread, client=client
        )
    finally:
        server.should_exit = True
        thread.join(60)


def wait_ready(url: str, timeout: float = 60, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url + "/ready", headers=headers).status_code == 200:
                return
        time.sleep(0.05)
    raise AssertionError("server never became ready")


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one series in Prometheus text (0 when absent)."""
    for line in text.splitlines():
        m = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    return 0.0


def wait_metric(url: str, name: str, value: float, timeout: float = 20, **labels: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metric(httpx.get(url + "/metrics").text, name, **labels) == value:
            return
        time.sleep(0.02)
    raise AssertionError(f"{name}{labels} never reached {value}")


def cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


class Gated:
    """An Embedder whose runs wait for ``gate``: makes queueing observable without relying on timing."""

    def __init__(self, model: Embedder) -> None:
        self._model = model
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.calls: list[list[str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def embed_encoded(self, encoded: Any) -> np.ndarray:
        """The server's way in (inputs tokenized once per request); ``calls`` records them as text."""
        decode = self._model.tokenizer.tokenizer.decode
        self.calls.append([decode(e.ids.tolist(), skip_special_tokens=True) for e in encoded])
        self.entered.set()
        assert self.gate.wait(60)
        return self._model.embed_encoded(encoded)


def post_async(url: str, path: str, body: Any, results: list[Any]) -> threading.Thread:
    def go() -> None:
        try:
            results.append(httpx.post(url + path, json=body, timeout=60))
        except Exception as e:  # recorded for the assertion
            results.append(e)

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread


# ``edge-bge serve`` with a soft RLIMIT_NOFILE set first (no preexec_fn: pytest's process has threads)
_SERVE_LIMITED = (
    "import resource, runpy, sys\n"
    "soft = int(sys.argv.pop(1))\n"
    "resource.setrlimit(resource.RLIMIT_NOFILE, (soft, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))\n"
    "runpy.run_module('edge_bge', run_name='__main__')\n"
)


@contextlib.contextmanager
def serve_process(bundle: Path, *args: str, nofile: int | None = None, tmp: Path) -> Iterator[SimpleNamespace]:
    """``edge-bge serve BUNDLE ARGS`` in a process of its own (optionally with a soft RLIMIT_NOFILE)."""
    port = free_port()
    log_path = tmp / f"serve-{port}.log"
    start = (
        [sys.executable, "-m", "edge_bge"] if nofile is None else [sys.executable, "-c", _SERVE_LIMITED, str(nofile)]
    )
    cmd = [*start, "serve", str(bundle), "--port", str(port), *args]
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    s = SimpleNamespace(url=url, port=port, proc=proc, log=lambda: log_path.read_text())
    try:
        wait_ready(url, 90)
        yield s
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
