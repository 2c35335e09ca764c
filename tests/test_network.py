"""No network at runtime, watched under strace: embed, rerank and ``edge-bge serve`` open no socket
but loopback ones, resolve no name, and leave ONNX Runtime's telemetry store unwritten.

ONNX Runtime 1.32's telemetry writes ~/.cache/Microsoft/DeveloperTools/.onnxruntime/onnxruntime.db at
import and, 9 s after import, resolves mobile.events.data.microsoft.com (a DNS query even on a machine
without a route out). So each probe lives past that moment, and a positive control with telemetry
allowed shows that this check sees both. ONNX Runtime keeps quiet by itself under CI markers (CI=true,
...), so the probes run in a minimal environment, as on a user's machine.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HOLD_S = 11  # how long the server lives after it is ready: past telemetry's first upload (9 s after import)
_PROBE_ENV = ("PATH", "LANG", "LC_ALL", "TMPDIR", "TOKENIZERS_PARALLELISM")

# Run in the traced process: embed and rerank in-process, then `edge-bge serve` both bundles as a child
# process and POST one /embed and one /rerank over loopback.
PROBE = textwrap.dedent(
    """
    import http.client, json, subprocess, sys, time
    embedder, reranker, port, hold = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    import edge_bge
    assert edge_bge.Embedder(embedder).embed(["hello world"]).shape[0] == 1
    assert len(edge_bge.Reranker(reranker).rerank("a query", ["a document", "another one"])) == 2
    cmd = [sys.executable, "-m", "edge_bge", "serve", embedder, reranker, "--port", str(port), "--no-warmup"]
    server = subprocess.Popen(cmd)

    def call(method, path, body=None):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request(method, path, None if body is None else json.dumps(body), {"Content-Type": "application/json"})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if call("GET", "/ready")[0] == 200:
                    break
            except OSError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        ready = time.monotonic()
        status, body = call("POST", "/embed", {"inputs": ["hello world"]})
        assert status == 200 and len(json.loads(body)) == 1, body
        status, body = call("POST", "/rerank", {"query": "a query", "texts": ["a document", "another one"]})
        assert status == 200 and len(json.loads(body)) == 2, body
        time.sleep(max(0.0, hold - (time.monotonic() - ready)))
    finally:
        server.terminate()
        server.wait(30)
    print("PROBE-OK", flush=True)
    """
)

_SOCKADDR = re.compile(
    r'sa_family=AF_INET6?, sin6?_port=htons\((\d+)\).*?(?:inet_addr\("([^"]+)"\)|inet_pton\(AF_INET6, "([^"]+)")'
)
_INET_FD = re.compile(r"<(?:TCP|UDP|UDPLITE)(?:v6)?:\[(.*?)\]>")
_INODE = re.compile(r"<(?:TCP|UDP|UDPLITE)(?:v6)?:\[(\d+)\]>")
_RESOLVER_FILES = ("/etc/resolv.conf", "/etc/nsswitch.conf", "/etc/hosts", "/etc/gai.conf", "/var/run/nscd/")


def _loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def _endpoints(annotation: str) -> list[tuple[str, str]]:
    """(host, port) of each end of a strace -yy socket annotation: '127.0.0.1:80->127.0.0.1:5555'."""
    ends = []
    for end in annotation.split("->"):
        host, _, port = end.rpartition(":")
        ends.append((host, port))
    return ends


@dataclass
class Finding:
    kind: str  # "socket", "address", "dns", "resolver", "telemetry file"
    line: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.line[:300]}"


def findings(trace_dir: Path) -> list[Finding]:
    """Everything in an strace -ff -yy log that is not loopback networking or is ONNX Runtime telemetry."""
    found: list[Finding] = []
    created: dict[str, str] = {}  # inode of each AF_INET/AF_INET6 socket -> the line that made it
    used: set[str] = set()  # inodes bound or connected to a loopback address
    for path in sorted(trace_dir.iterdir()):
        for line in path.read_text(errors="replace").splitlines():
            call = line.split("(", 1)[0]
            if "DeveloperTools" in line or "onnxruntime.db" in line:
                found.append(Finding("telemetry file", line))
            if any(f'"{name}' in line for name in _RESOLVER_FILES):
                found.append(Finding("resolver", line))
            if call == "socket" and re.match(r"socket\(AF_INET6?,", line):
                inode = _INODE.search(line.split("=", 1)[-1])
                created[inode.group(1) if inode else line] = line
            for port, ip4, ip6 in _SOCKADDR.findall(line):
                host = ip4 or ip6
                if port == "53":
                    found.append(Finding("dns", line))
                elif not _loopback(host) and call in ("connect", "bind", "sendto", "sendmsg", "sendmmsg"):
                    found.append(Finding("address", line))
                elif _loopback(host) and call in ("connect", "bind"):
                    inode = _INODE.search(line)
                    if inode:
                        used.add(inode.group(1))
            for annotation in _INET_FD.findall(line):
                if annotation.isdigit():
                    continue
                for host, port in _endpoints(annotation):
                    if port == "53":
                        found.append(Finding("dns", line))
                    elif not _loopback(host):
                        found.append(Finding("address", line))
    found += [Finding("socket", line) for inode, line in created.items() if inode not in used]
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _strace() -> str:
    path = shutil.which("strace")
    if path is None:
        pytest.fail("strace is not installed: scripts/setup.sh installs it (apt-get install -y strace)")
    return path


@dataclass
class Probe:
    proc: subprocess.Popen[str]
    trace: Path
    home: Path

    def finish(self) -> tuple[list[Finding], bool]:
        """Wait for the probe; its findings, and whether ONNX Runtime's telemetry store exists."""
        try:
            out, _ = self.proc.communicate(timeout=180)
        finally:
            if self.proc.poll() is None:  # strace, the probe and its server: one process group
                os.killpg(self.proc.pid, signal.SIGKILL)
        assert self.proc.returncode == 0 and "PROBE-OK" in out, out[-4000:]
        assert any(self.trace.iterdir()), "strace wrote no trace"
        return findings(self.trace), any(self.home.rglob("onnxruntime.db"))


def _start(root: Path, embedder: Path, reranker: Path, **env: str) -> Probe:
    root.mkdir()
    home, trace = root / "home", root / "trace"
    home.mkdir()
    trace.mkdir()
    script = root / "probe.py"
    script.write_text(PROBE)
    base = {k: os.environ[k] for k in _PROBE_ENV if k in os.environ}
    base.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), **env)
    strace = [_strace(), "-f", "-ff", "-qq", "-yy", "-s", "256", "-e", "trace=%network,%file", "-o", str(trace / "t")]
    cmd = [*strace, sys.executable, str(script), str(embedder), str(reranker), str(_free_port()), str(HOLD_S)]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=base, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    return Probe(proc, trace, home)


@pytest.fixture(scope="module")
def reranker_fp32(bundles, tiny_reranker_dir):
    return bundles.get(tiny_reranker_dir, "fp32")


def test_embed_rerank_and_serve_stay_off_the_network(tiny_fp32, reranker_fp32, tmp_path):
    # both at once: each mostly waits out telemetry's 9 s
    quiet = _start(tmp_path / "default", tiny_fp32, reranker_fp32)
    allowed = _start(tmp_path / "allowed", tiny_fp32, reranker_fp32, EDGE_BGE_ALLOW_TELEMETRY="1")
    try:
        found, db = quiet.finish()
    finally:
        control, control_db = allowed.finish()
    assert not found, "\n".join(map(str, found))
    assert not db
    # the positive control: with telemetry allowed (ONNX Runtime's default), the same check sees it
    kinds = {f.kind for f in control}  # a name lookup: DNS on port 53, or nscd where it runs
    assert "telemetry file" in kinds and kinds & {"dns", "resolver"}, "\n".join(map(str, control))
    assert control_db


def test_findings_classify_strace_lines(tmp_path):
    lines = [
        "socket(AF_INET, SOCK_STREAM|SOCK_CLOEXEC, IPPROTO_TCP) = 3<TCP:[101]>",
        'connect(3<TCP:[101]>, {sa_family=AF_INET, sin_port=htons(8000), sin_addr=inet_addr("127.0.0.1")}, 16) = 0',
        'sendto(3<TCP:[127.0.0.1:4000->127.0.0.1:8000]>, "GET /", 5, 0, NULL, 0) = 5',
        "socket(AF_INET6, SOCK_STREAM, IPPROTO_TCP) = 4<TCPv6:[102]>",
        "bind(4<TCPv6:[102]>, {sa_family=AF_INET6, sin6_port=htons(0), sin6_flowinfo=htonl(0), "
        'inet_pton(AF_INET6, "::1", &sin6_addr), sin6_scope_id=0}, 28) = 0',
        "socket(AF_INET6, SOCK_DGRAM, IPPROTO_IP) = 5<UDPv6:[103]>",
        'connect(6<TCP:[104]>, {sa_family=AF_INET, sin_port=htons(443), sin_addr=inet_addr("20.42.65.92")}, 16) = 0',
        'sendto(7<UDP:[10.0.0.2:3000->127.0.0.53:53]>, "\\1\\2", 2, MSG_NOSIGNAL, NULL, 0) = 2',
        'connect(8<UNIX-STREAM:[105]>, {sa_family=AF_UNIX, sun_path="/var/run/nscd/socket"}, 110) = -1 ENOENT',
        'openat(AT_FDCWD, "/etc/resolv.conf", O_RDONLY|O_CLOEXEC) = 9</etc/resolv.conf>',
        'openat(AT_FDCWD, "/h/.cache/Microsoft/DeveloperTools/.onnxruntime/onnxruntime.db", O_RDWR|O_CREAT) = 10',
    ]
    (tmp_path / "t.1").write_text("\n".join(lines) + "\n")
    got = [(f.kind, lines.index(f.line)) for f in findings(tmp_path)]
    assert sorted(got) == sorted(
        [("socket", 5), ("address", 6), ("dns", 7), ("address", 7), ("resolver", 8), ("resolver", 9)]
        + [("telemetry file", 10)]
    )


_SWITCH = """
import os, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import {first}, {second}
late = any("import edge_bge first" in str(w.message) for w in caught)
print(os.environ.get("ORT_DISABLE_TELEMETRY"), late)
"""


@pytest.mark.parametrize(
    "order,env,want",
    [
        (("edge_bge", "onnxruntime"), {}, "1 False"),  # switched off before ONNX Runtime reads it
        (("edge_bge", "onnxruntime"), {"EDGE_BGE_ALLOW_TELEMETRY": "1"}, "None False"),  # the opt-in
        (("edge_bge", "onnxruntime"), {"ORT_DISABLE_TELEMETRY": "0"}, "0 False"),  # the user's value wins
        (("onnxruntime", "edge_bge"), {}, "1 True"),  # too late: ONNX Runtime read it at import
        (("onnxruntime", "edge_bge"), {"ORT_DISABLE_TELEMETRY": "1"}, "1 False"),
    ],
)
def test_telemetry_switch(tmp_path, order, env, want):
    code = _SWITCH.format(first=order[0], second=order[1])
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), **env}
    out = subprocess.run([sys.executable, "-c", code], env=base, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == want.split()
