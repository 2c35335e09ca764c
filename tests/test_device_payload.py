"""scripts/device_payload.sh on the CPU: packing, SHA256SUMS, parts of at most N MiB, joining, checking,
installing and running the GPU check, with a small fake wheel and a tiny bundle (nothing downloaded)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "device_payload.sh"
MIB = 1 << 20


def fake_wheel(folder: Path) -> Path:
    """A real, installable wheel of 2.5 MiB of random bytes (so that it spans parts of 1 MiB)."""
    folder.mkdir()
    path = folder / "edgefake-0.1-py3-none-any.whl"
    files = {
        "edgefake/__init__.py": b"VALUE = 42\n",
        "edgefake/blob.bin": os.urandom(5 * MIB // 2),
        "edgefake-0.1.dist-info/METADATA": b"Metadata-Version: 2.1\nName: edgefake\nVersion: 0.1\n",
        "edgefake-0.1.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr(
            "edgefake-0.1.dist-info/RECORD", "".join(f"{n},,\n" for n in files) + "edgefake-0.1.dist-info/RECORD,,\n"
        )
    return folder


def script(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PYTHON": sys.executable, **env}
    environ.pop("DOWNLOAD", None)  # the real download is never used here
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=600, env=environ)


@pytest.fixture(scope="module")
def packed(tmp_path_factory, tiny_fp32):
    base = tmp_path_factory.mktemp("payload")
    out = base / "out"
    done = script(str(out), BUNDLES=str(tiny_fp32), WHEELS=str(fake_wheel(base / "wheels")), PART_MIB="1")
    assert done.returncode == 0, done.stderr
    return out, done.stdout


def carry(out: Path, remote: Path, names: list[str]) -> None:
    """What each device call does: one part (the last with parts.sha256) copied into the persistent folder."""
    remote.mkdir(exist_ok=True)
    for name in names:
        shutil.copy(out / name, remote / name)


def test_packing_splits_and_sums(packed):
    out, printed = packed
    parts = sorted(p.name for p in out.glob("part-*"))
    assert len(parts) >= 3 and parts[0] == "part-00" and all((out / p).stat().st_size <= MIB for p in parts)
    assert sorted(p.name for p in out.iterdir()) == [*parts, "parts.sha256"]  # no tar, no staging left
    sums = dict(reversed(line.split()) for line in (out / "parts.sha256").read_text().splitlines())
    assert set(sums) == {*parts, "payload.tar"}
    calls = re.findall(r"^  (\d+)/(\d+): run\(carry=(\[.*?\]), timeout_s=(\d+), command=\"(.*)\"\)$", printed, re.M)
    assert len(calls) == len(parts) and all(int(n) == len(parts) for _, n, *_ in calls)
    for i, (_, _, carried, _, command) in enumerate(calls):
        names = [Path(x).name for x in json.loads(carried)]
        assert names == [parts[i]] + (["parts.sha256"] if i == len(parts) - 1 else [])
        assert command.startswith("mkdir -p /tmp/edge-bge-payload && cp ")
    assert calls[-1][4].endswith("bash scripts/device_payload.sh --on-device /tmp/edge-bge-payload")


def test_on_device_joins_checks_installs_and_runs(packed, tmp_path, tiny_fp32):
    out, _ = packed
    remote = tmp_path / "remote"
    carry(out, remote, sorted(p.name for p in out.iterdir()))
    args = "--providers cpu --budget-s 120 --iters 2 --warmup 1 --check-texts 16 --lengths 16 --batches 2"
    done = script("--on-device", str(remote), GPU_CHECK_ARGS=args, OUT=str(tmp_path / "results"))
    assert done.returncode == 0, done.stderr
    assert re.search(r"device_payload: \d+ files verified", done.stdout)
    payload = remote / "payload"
    assert [p.name for p in (payload / "bundles").iterdir()] == [tiny_fp32.name]
    listed = {line.split()[1] for line in (payload / "SHA256SUMS").read_text().splitlines()}
    assert any(x.endswith("/model.onnx") for x in listed) and "./wheels/edgefake-0.1-py3-none-any.whl" in listed
    site = remote / "site"
    probe = [sys.executable, "-c", "import edgefake; print(edgefake.VALUE)"]
    assert (
        subprocess.run(probe, env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True, text=True).stdout
        == "42\n"
    )
    rows = [json.loads(x) for x in (tmp_path / "results" / "gpu_check.jsonl").read_text().splitlines()]
    assert [(r["provider"], r["status"], r["rows"], r["tokens"]) for r in rows] == [("cpu", "ok", 2, 16)]


def test_a_damaged_part_is_caught_before_anything_installs(packed, tmp_path):
    out, _ = packed
    remote = tmp_path / "remote"
    carry(out, remote, sorted(p.name for p in out.iterdir()))
    data = bytearray((remote / "part-01").read_bytes())
    data[1000] ^= 0xFF
    (remote / "part-01").write_bytes(bytes(data))
    done = script("--on-device", str(remote))
    assert done.returncode == 1 and "a part does not match parts.sha256" in done.stderr
    assert "part-01: FAILED" in done.stdout + done.stderr
    assert not (remote / "site").exists() and not (remote / "payload").exists()
    (remote / "part-01").unlink()
    done = script("--unpack", str(remote))
    assert done.returncode == 1 and "part-01 is missing" in done.stderr


def test_no_wheels_no_download(tmp_path, tiny_fp32):
    done = script(str(tmp_path / "out"), BUNDLES=str(tiny_fp32))
    assert done.returncode == 1 and "set DOWNLOAD=1" in done.stderr
    assert script(str(tmp_path / "o2"), BUNDLES=str(tiny_fp32), WHEELS=str(tmp_path), PART_MIB="0").returncode == 1
